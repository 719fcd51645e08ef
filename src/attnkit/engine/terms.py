"""The loss terms a run adds to cross-entropy, declared once: the only place that decides which are on.

    L = w_CE * CE(student logits, labels) + sum of the terms that are on
    w_CE = 1 - (sum of the weights of terms that mix with CE)   (Hinton's KD: (1 - alpha) * CE + alpha * KD)

Each :class:`Term` names its weight field in :class:`~attnkit.engine.config.DistillConfig` (the term is on when
that weight is > 0), builds its loss module from :mod:`attnkit.losses`, and says what it consumes, which fixes
how the objective calls it and what a training step must compute:

=========================  ===================================================  ==================================
consumes                   the loss module is called as                         the step then needs
=========================  ===================================================  ==================================
``logits``                 ``loss(student_logits, teacher_logits)``             the teacher's forward
``labeled_logits``         ``loss(student_logits, teacher_logits, labels)``     the teacher's forward
``features``               ``loss(student_features, teacher_features)``         the teacher, paired layers, hooks
``input_gradients``        ``loss(student_input_grad, teacher_input_grad)``     double backprop, teacher backward
``flipped_input_gradients`` ``loss(input_grad(x), input_grad(flip(x)))``        double backprop, no teacher
=========================  ===================================================  ==================================

Adding a distillation loss is a module in :mod:`attnkit.losses`, its weight (and hyperparameters) in
``DistillConfig``, and one :func:`register_term` call at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import nn

from ..features import LayerPair
from ..losses import ActivationTransferLoss, ATLoss, FlipSymmetryLoss, GradATLoss, KDLoss
from ..validation import choices

if TYPE_CHECKING:
    from .config import DistillConfig

__all__ = ["CONSUMES", "TERMS", "Consumes", "Term", "TermPlan", "plan_terms", "register_term"]

Consumes = Literal["logits", "labeled_logits", "features", "input_gradients", "flipped_input_gradients"]
CONSUMES: tuple[str, ...] = choices(Consumes)


@dataclass(frozen=True)
class Term:
    """One loss term of the objective (see the module docstring)."""

    name: str  # key of the term in the logged metrics (train/<name>) and in the objective's modules
    weight: str  # the DistillConfig field whose value turns the term on (> 0) and weighs it
    consumes: Consumes  # what the loss module is called with
    build: Callable[[DistillConfig, Sequence[LayerPair]], nn.Module]  # the loss module, from the config and pairs
    scaled: bool = False  # multiply the module's output by the weight (for modules without a weight of their own)
    mixes_with_ce: bool = False  # the weight is taken from cross-entropy: w_CE = 1 - weight (Hinton's mixture)
    autocast: bool = False  # compute under the step's autocast (terms with layers of their own, e.g. adapters)

    @property
    def needs_teacher(self) -> bool:
        return self.consumes != "flipped_input_gradients"


TERMS: dict[str, Term] = {}  # name -> term, in the order the terms are summed (and logged)


def register_term(term: Term) -> Term:
    """Add ``term`` to the table; its name and weight field must be new."""
    if term.name in TERMS or term.name == "ce":
        raise ValueError(f"a loss term named {term.name!r} is already registered")
    if any(t.weight == term.weight for t in TERMS.values()):
        raise ValueError(f"the weight field {term.weight!r} already switches another term")
    if term.consumes not in CONSUMES:
        raise ValueError(f"term {term.name!r}: consumes must be one of {CONSUMES}, got {term.consumes!r}")
    TERMS[term.name] = term
    return term


@dataclass(frozen=True)
class TermPlan:
    """The terms that are on for one ``distill`` config and what a training step must compute for them."""

    config: DistillConfig  # the hyperparameters the terms' modules are built from
    terms: tuple[Term, ...]  # the terms that are on, in table order
    ce_weight: float  # weight of the cross-entropy with the labels (1 unless a term mixes with it)

    @property
    def needs_teacher(self) -> bool:
        """Some term learns from the frozen teacher."""
        return any(t.needs_teacher for t in self.terms)

    @property
    def uses_features(self) -> bool:
        """Some term compares student and teacher features at paired layers (forward hooks)."""
        return any(t.consumes == "features" for t in self.terms)

    @property
    def student_input_gradient(self) -> bool:
        """The step trains through the student's input gradient (double backprop; no torch.compile)."""
        return any(t.consumes in ("input_gradients", "flipped_input_gradients") for t in self.terms)

    @property
    def teacher_input_gradient(self) -> bool:
        """The teacher's forward keeps autograd for its input gradient (no inference mode)."""
        return any(t.consumes == "input_gradients" for t in self.terms)

    @property
    def flipped_batch(self) -> bool:
        """The student also sees the mirrored batch: [x, flip(x)] in one forward."""
        return any(t.consumes == "flipped_input_gradients" for t in self.terms)

    @property
    def step_kind(self) -> str:
        """``"double_backprop"`` or ``"plain"``: the kind of step whose speed decides the memory format."""
        return "double_backprop" if self.student_input_gradient else "plain"


def plan_terms(config: DistillConfig) -> TermPlan:
    """The terms whose weight in ``config`` is > 0, and the cross-entropy weight they leave."""
    terms = tuple(t for t in TERMS.values() if getattr(config, t.weight) > 0)
    mixed = [getattr(config, t.weight) for t in terms if t.mixes_with_ce]
    return TermPlan(config, terms, 1 - sum(mixed) if mixed else 1.0)


def _channels(pairs: Sequence[LayerPair]) -> tuple[list[int], list[int]]:
    return [p.student_shape[0] for p in pairs], [p.teacher_shape[0] for p in pairs]


# -- the table ---------------------------------------------------------------------------------------------

register_term(Term("kd", "kd_alpha", "logits", lambda c, pairs: KDLoss(c.kd_temperature), scaled=True, mixes_with_ce=True))
# The run checks its total loss for NaN already, so AT skips its own (synchronising) check.
register_term(Term("at", "at_beta", "features",
                   lambda c, pairs: ATLoss(c.at_p, c.at_beta, c.at_mode, reduction=c.at_reduction, check_finite=False)))
register_term(Term("fact", "fact_beta", "features", lambda c, pairs: ActivationTransferLoss(*_channels(pairs), c.fact_beta),
                   autocast=True))
register_term(Term("grad_at", "grad_at_beta", "input_gradients", lambda c, pairs: GradATLoss(c.grad_at_beta)))
register_term(Term("flip", "flip_beta", "flipped_input_gradients", lambda c, pairs: FlipSymmetryLoss(c.flip_beta)))
