"""The step objective against its definition, computed by hand on BN-free toy CNNs."""

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
