"""The loss-term table: which terms a config switches on, what they need, and a new term in one registration."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.engine import DistillConfig
from attnkit.engine import terms as terms_module
from attnkit.engine.objective import Objective
from attnkit.engine.terms import TERMS, Term, plan_terms, register_term
from helpers import run_cli, toy_cnn


def test_plan_follows_the_weights():
    assert plan_terms(DistillConfig()).terms == () and not plan_terms(DistillConfig()).needs_teacher
    plan = plan_terms(DistillConfig(kd_alpha=0.9, at_beta=1000.0, flip_beta=1.0))
    assert [t.name for t in plan.terms] == ["kd", "at", "flip"] and plan.ce_weight == pytest.approx(0.1)
    assert plan.needs_teacher and plan.uses_features and plan.flipped_batch and not plan.teacher_input_gradient
    assert plan.step_kind == "double_backprop"
    flip_only = plan_terms(DistillConfig(flip_beta=1.0))
    assert not flip_only.needs_teacher and flip_only.student_input_gradient  # flip symmetry needs no teacher
    grad = plan_terms(DistillConfig(grad_at_beta=1.0))
    assert grad.teacher_input_gradient and not grad.uses_features and grad.ce_weight == 1.0


def test_a_new_loss_is_one_registration(monkeypatch):
    class LabeledLogitMSE(nn.Module):  # a loss module as attnkit.losses holds them
        def forward(self, student_logits, teacher_logits, labels):
            return F.mse_loss(student_logits, teacher_logits) + 0.0 * labels.sum()

    monkeypatch.setattr(terms_module, "TERMS", {k: v for k, v in terms_module.TERMS.items() if k != "kd"})
    register_term(Term("mse", "kd_alpha", "labeled_logits", lambda config, pairs: LabeledLogitMSE(), scaled=True))
    with pytest.raises(ValueError, match="already registered"):
        register_term(Term("mse", "at_p", "logits", lambda config, pairs: LabeledLogitMSE()))
    torch.manual_seed(0)
    student, teacher = toy_cnn(), toy_cnn().eval()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    result = Objective(plan_terms(DistillConfig(kd_alpha=0.5)), student, teacher)(student, teacher, x, y)
    logits = student(x)
    assert result.terms["mse"].item() == pytest.approx(0.5 * F.mse_loss(logits, teacher(x)).item(), rel=1e-6)
    assert result.terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_learnable_parameters_and_checkpoint_state_of_the_objective():
    from attnkit.features import LayerPair

    student, teacher = toy_cnn(widths=(4, 8)), toy_cnn(widths=(8, 16)).eval()
    pairs = [LayerPair("1", "1", (4, 8, 8), (8, 8, 8))]
    objective = Objective(plan_terms(DistillConfig(fact_beta=1.0, at_beta=1.0)), student, teacher, pairs)
    assert [tuple(p.shape) for p in objective.parameters()] == [(8, 4, 1, 1)]  # F-ActT's adapter, not the models'
    assert list(objective.state_dict()) == ["losses.fact.adapters.0.weight"]
    old = {"adapters.0.weight": torch.ones(8, 4, 1, 1)}  # a checkpoint written before the objective was a module
    objective.load_state_dict(Objective.upgrade_state(old))
    assert torch.equal(objective.losses["fact"].adapters[0].weight, torch.ones(8, 4, 1, 1))
    with pytest.raises(ValueError, match="need a teacher"):
        Objective(plan_terms(DistillConfig(kd_alpha=0.9)), student)


def test_distill_help_and_its_no_term_error_list_the_term_table():
    help_text = " ".join(run_cli("distill", "--help").stdout.split())
    assert all(f"{t.name} ({t.weight})" in help_text for t in TERMS.values())
    done = run_cli("distill")
    assert done.returncode == 2 and all(key in done.stderr for t in TERMS.values() for key in t.weights)
