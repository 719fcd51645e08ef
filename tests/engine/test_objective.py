"""The step objective against its definition, computed by hand (BN-free toy CNNs; WRNs where batch norm matters)."""

import pytest
import torch
import torch.nn.functional as F

from attnkit import functional as AF
from attnkit.engine import DistillConfig
from attnkit.engine.objective import Objective
from attnkit.engine.terms import plan_terms
from attnkit.features import FeatureCapture, LayerPair
from helpers import toy_cnn

PAIRS = [LayerPair("1", "1", (4, 8, 8), (8, 8, 8)), LayerPair("4", "4", (8, 4, 4), (16, 4, 4))]


def models():
    torch.manual_seed(0)
    return toy_cnn(widths=(4, 8)), toy_cnn(widths=(8, 16)).eval()


def test_total_is_the_weighted_sum_of_its_terms():
    student, teacher = models()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    config = DistillConfig(at_beta=1000.0, kd_alpha=0.9, kd_temperature=4.0)
    with Objective(plan_terms(config), student, teacher, PAIRS) as objective:
        result = objective(student, teacher, x, y)
    with FeatureCapture(student, ["1", "4"]) as s_feats:
        logits = student(x)
    with torch.no_grad(), FeatureCapture(teacher, ["1", "4"]) as t_feats:
        t_logits = teacher(x)
    ce = 0.1 * F.cross_entropy(logits, y)
    kd = 0.9 * AF.kd_loss(logits, t_logits, 4.0)
    at = AF.at_loss([s_feats["1"], s_feats["4"]], [t_feats["1"], t_feats["4"]], beta=1000.0)
    assert result.terms["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert result.terms["kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert result.terms["at"].item() == pytest.approx(at.item(), rel=1e-5)
    assert result.loss.item() == pytest.approx((ce + kd + at).item(), rel=1e-5)
    assert not objective.student_capture.features  # references dropped after the step


def test_flip_symmetry_transfers_attention_on_the_unflipped_half():
    student, teacher = models()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    config = DistillConfig(at_beta=1000.0, flip_beta=2.0)
    with Objective(plan_terms(config), student, teacher, PAIRS) as objective:
        result = objective(student, teacher, x, y)
    # No batch norm: the student's features of x are the same whether or not flip(x) rides in the batch.
    with FeatureCapture(student, ["1", "4"]) as s_feats, torch.no_grad():
        student(x)
    with FeatureCapture(teacher, ["1", "4"]) as t_feats, torch.no_grad():
        teacher(x)
    at = AF.at_loss([s_feats["1"], s_feats["4"]], [t_feats["1"], t_feats["4"]], beta=1000.0)
    assert result.terms["at"].item() == pytest.approx(at.item(), rel=1e-5)
    grads = AF.input_gradient(student, torch.cat([x, x.flip(-1)]), torch.cat([y, y]))
    flip = AF.flip_symmetry_loss(grads[:4], grads[4:], beta=2.0)
    assert result.terms["flip"].item() == pytest.approx(flip.item(), rel=1e-5)


def test_a_teacher_layer_may_serve_two_pairs():
    student, teacher = models()
    pairs = [LayerPair("1", "4", (4, 8, 8), (16, 4, 4)), LayerPair("4", "4", (8, 4, 4), (16, 4, 4))]
    with Objective(plan_terms(DistillConfig(at_beta=1000.0)), student, teacher, pairs) as objective:
        assert objective(student, teacher, torch.randn(2, 3, 8, 8), torch.tensor([0, 1])).terms["at"] > 0


def test_with_batch_norm_each_gradient_term_matches_its_definition_and_stats_move_once():
    """x and flip(x) run in passes of their own: each normalised by its own batch statistics, as defined."""
    from attnkit.models import create_model

    torch.manual_seed(0)
    student, teacher = create_model("wrn", depth=10, width=0.5, num_classes=5), create_model("wrn", depth=10, num_classes=5).eval()
    reference = create_model("wrn", depth=10, width=0.5, num_classes=5)
    reference.load_state_dict(student.state_dict())
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    config = DistillConfig(flip_beta=2.0, grad_at_beta=3.0)
    with Objective(plan_terms(config), student.train(), teacher) as objective:
        result = objective(student, teacher, x, y)
    g_x = AF.input_gradient(reference.train(), x, y)  # train mode, the batch x alone
    g_flip = AF.input_gradient(reference.train(), x.flip(-1), y)
    assert torch.equal(result.terms["flip"], AF.flip_symmetry_loss(g_x, g_flip, beta=2.0))
    assert torch.equal(result.terms["grad_at"], AF.grad_at_loss(g_x, AF.input_gradient(teacher, x, y), beta=3.0))
    joint = AF.input_gradient(reference, torch.cat([x, x.flip(-1)]), torch.cat([y, y]))  # the old single pass
    assert not torch.allclose(joint[:8], g_x, rtol=1e-3)  # which the batch statistics moved


def twin_wrns_and_a_batch():
    """Two WRN-10-0.5 with equal weights (one to distil, one to run x alone) and a batch (x, y)."""
    from attnkit.models import create_model

    torch.manual_seed(0)
    student = create_model("wrn", depth=10, width=0.5, num_classes=5)
    reference = create_model("wrn", depth=10, width=0.5, num_classes=5)
    reference.load_state_dict(student.state_dict())
    return student, reference, torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))


def assert_equal_states(model, reference):
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_running_statistics_see_each_training_batch_once():
    student, reference, x, y = twin_wrns_and_a_batch()
    Objective(plan_terms(DistillConfig(flip_beta=1.0)), student.train())(student, None, x, y)
    reference.train()(x)
    assert_equal_states(student, reference)


def test_schedule_factors_weigh_every_term_and_the_ce_mixture():
    student, teacher = models()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    config = DistillConfig(at_beta=1000.0, kd_alpha=0.9)
    config.at_schedule.kind, config.at_schedule.milestones, config.at_schedule.gamma = "step", [2.0], 0.2
    config.kd_schedule.warmup_epochs = 10.0  # factor (epoch + step) / 10
    with Objective(plan_terms(config), student, teacher, PAIRS, epochs=4) as objective:
        early = objective(student, teacher, x, y, epoch=0.5, step=0.5)  # kd factor 0.1, at factor 1
        late = objective(student, teacher, x, y, epoch=3.0, step=0.5)  # kd factor 0.35, at factor 0.2
    full = plan_terms(DistillConfig(at_beta=1000.0, kd_alpha=0.9))
    with Objective(full, student, teacher, PAIRS) as objective:
        plain = objective(student, teacher, x, y)
    ce = F.cross_entropy(student(x), y)
    assert early.terms["at"].item() == pytest.approx(plain.terms["at"].item(), rel=1e-6)
    assert late.terms["at"].item() == pytest.approx(0.2 * plain.terms["at"].item(), rel=1e-6)
    assert early.terms["kd"].item() == pytest.approx(0.1 * plain.terms["kd"].item(), rel=1e-6)
    assert late.terms["kd"].item() == pytest.approx(0.35 * plain.terms["kd"].item(), rel=1e-6)
    assert early.terms["ce"].item() == pytest.approx((1 - 0.09) * ce.item(), rel=1e-6)  # w_CE = 1 - alpha * factor
    assert late.terms["ce"].item() == pytest.approx((1 - 0.9 * 0.35) * ce.item(), rel=1e-6)


def test_flipped_pass_leaves_the_running_statistics_of_a_sync_bn_converted_model_alone():
    """sync_bn converts the student after the objective is built: the flipped pass must use the new norm layers."""
    student, reference, x, y = twin_wrns_and_a_batch()
    objective = Objective(plan_terms(DistillConfig(flip_beta=1.0)), student.train())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)  # new modules (no process group: plain BN)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    objective(converted, None, x, y)
    reference.train()(x)
    assert_equal_states(converted, reference)  # running statistics moved once, by x alone
