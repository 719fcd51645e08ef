"""The loss terms a run adds to cross-entropy, declared once: the only place that decides which are on.

    L = w_CE * CE(student logits, labels) + sum of the terms that are on, each times its schedule's factor
    w_CE = distill.ce_weight, or else 1 - (sum of the weights of terms that mix with CE)
           (Hinton's KD: (1 - alpha) * CE + alpha * KD)

Each :class:`Term` names its weight fields in :class:`~attnkit.engine.config.DistillConfig` (the term is on when
one of them is > 0), its schedule field ``<name>_schedule``, builds its loss module from :mod:`attnkit.losses`,
and says what it consumes, which fixes how the objective calls it and what a training step must compute:

=========================== ============================================================ ==================================
consumes                    the loss module is called as                                 the step then needs
=========================== ============================================================ ==================================
``logits``                  ``loss(student_logits, teacher_logits)``                     the teacher's forward
``labeled_logits``          ``loss(student_logits, teacher_logits, labels)``             the teacher's forward
``features``                ``loss(student_features, teacher_features)``                 the teacher, paired layers, hooks
``class_maps``              ``loss(s_features, s_logits, t_features, t_logits, labels)`` the teacher's graph from its
                                                                                         layers on, double backprop
``input_gradients``         ``loss(student_input_grad, teacher_input_grad)``             double backprop, teacher backward
``flipped_input_gradients`` ``loss(input_grad(x), input_grad(flip(x)))``                 double backprop, no teacher
=========================== ============================================================ ==================================

A term on features or maps names the config field holding its ``"student:teacher"`` layer pairs (``layers``)
and the rule that picks them when the field is null (``default_layers``, see
:func:`attnkit.features.default_pairs`).

Adding a distillation loss is a module in :mod:`attnkit.losses`, its weight, hyperparameters and
``<name>_schedule`` in :class:`~attnkit.engine.distill_config.DistillConfig`, and one :func:`register_term` call at
the end of this file; config validation, the CLI's help and the method labels read the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..features import LayerPair, PairRule
from ..losses import (
    ActivationTransferLoss,
    ATLoss,
    CAMTransferLoss,
    DKDLoss,
    FlipSymmetryLoss,
    GradATLoss,
    HintLoss,
    KDLoss,
    NSTLoss,
    SPLoss,
)
from ..validation import choices
from .distill_config import DistillConfig

__all__ = ["CONSUMES", "TERMS", "Consumes", "Term", "TermPlan", "plan_terms", "register_term"]

Consumes = Literal["logits", "labeled_logits", "features", "class_maps", "input_gradients", "flipped_input_gradients"]
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
    also_on: tuple[str, ...] = ()  # further weight fields that switch the term on (DKD: dkd_alpha besides dkd_beta)
    layers: str | None = None  # the DistillConfig field with its "student:teacher" pairs (features, class_maps)
    default_layers: PairRule = "groups"  # the pairs when that field is null

    @property
    def needs_teacher(self) -> bool:
        return self.consumes != "flipped_input_gradients"

    @property
    def double_backprop(self) -> bool:
        """Its loss holds a gradient of the student (input gradients, class maps): the step backpropagates twice."""
        return self.consumes in ("input_gradients", "flipped_input_gradients", "class_maps")

    @property
    def weights(self) -> tuple[str, ...]:
        """Every weight field of the term (> 0 in any turns it on)."""
        return (self.weight, *self.also_on)

    @property
    def schedule(self) -> str:
        """The DistillConfig field holding the schedule of its weight (a term without one keeps its weight)."""
        return f"{self.name}_schedule"

    @property
    def uses_layers(self) -> bool:
        return self.consumes in ("features", "class_maps")

    def is_on(self, config: DistillConfig) -> bool:
        return any(getattr(config, key) > 0 for key in self.weights)


TERMS: dict[str, Term] = {}  # name -> term, in the order the terms are summed (and logged)


def register_term(term: Term) -> Term:
    """Add ``term`` to the table; its name and weight fields must be new."""
    if term.name in TERMS or term.name == "ce":
        raise ValueError(f"a loss term named {term.name!r} is already registered")
    taken = {key for t in TERMS.values() for key in t.weights}
    if taken & set(term.weights):
        raise ValueError(f"the weight field(s) {sorted(taken & set(term.weights))} already switch another term")
    if term.consumes not in CONSUMES:
        raise ValueError(f"term {term.name!r}: consumes must be one of {CONSUMES}, got {term.consumes!r}")
    if term.uses_layers and term.layers is None:
        raise ValueError(f"term {term.name!r} consumes {term.consumes}: name the config field of its layer pairs (layers=)")
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
        """Some term compares student and teacher layers (features or class maps, through forward hooks)."""
        return any(t.uses_layers for t in self.terms)

    @property
    def student_input_gradient(self) -> bool:
        """The step trains through the student's input gradient."""
        return any(t.consumes in ("input_gradients", "flipped_input_gradients") for t in self.terms)

    @property
    def teacher_input_gradient(self) -> bool:
        """The teacher's forward keeps autograd for its input gradient (no inference mode)."""
        return any(t.consumes == "input_gradients" for t in self.terms)

    @property
    def teacher_graph(self) -> bool:
        """The teacher's forward records a graph from its CAM layers to its logits (for dS/dA)."""
        return any(t.consumes == "class_maps" for t in self.terms)

    @property
    def double_backprop(self) -> bool:
        """The student's loss contains a gradient of its own (input gradients, class maps): no torch.compile."""
        return any(t.double_backprop for t in self.terms)

    @property
    def flipped_batch(self) -> bool:
        """The student also sees the mirrored batch flip(x), in a forward pass of its own."""
        return any(t.consumes == "flipped_input_gradients" for t in self.terms)

    @property
    def step_kind(self) -> str:
        """``"double_backprop"`` or ``"plain"``: the kind of step whose speed decides the memory format."""
        return "double_backprop" if self.double_backprop else "plain"

    def factors(self, epoch: float, epochs: float, step: float = 0.0) -> dict[str, float]:
        """Each term's schedule factor at fractional ``epoch`` (see :class:`attnkit.engine.optim.WeightSchedule`)."""
        schedules = {t.name: getattr(self.config, t.schedule, None) for t in self.terms}  # None: no schedule field
        return {name: 1.0 if s is None else s.factor(epoch, epochs, step) for name, s in schedules.items()}

    def ce_weight_at(self, factors: dict[str, float]) -> float:
        """The cross-entropy weight when the terms' weights carry ``factors``."""
        if self.config.ce_weight is not None:
            return self.config.ce_weight
        mixed = [getattr(self.config, t.weight) * factors[t.name] for t in self.terms if t.mixes_with_ce]
        return 1 - sum(mixed) if mixed else 1.0


def plan_terms(config: DistillConfig) -> TermPlan:
    """The terms with a weight > 0 in ``config``, and the cross-entropy weight they leave (at full weight)."""
    terms = tuple(t for t in TERMS.values() if t.is_on(config))
    plan = TermPlan(config, terms, 1.0)
    return TermPlan(config, terms, plan.ce_weight_at({t.name: 1.0 for t in terms}))


def _channels(pairs: Sequence[LayerPair]) -> tuple[list[int], list[int]]:
    return [p.student_shape[0] for p in pairs], [p.teacher_shape[0] for p in pairs]


def _shapes(pairs: Sequence[LayerPair]) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    return [p.student_shape for p in pairs], [p.teacher_shape for p in pairs]


# -- the table ---------------------------------------------------------------------------------------------

register_term(Term("kd", "kd_alpha", "logits", lambda c, pairs: KDLoss(c.kd_temperature, standardize=c.kd_standardize),
                   scaled=True, mixes_with_ce=True))
# The run checks its total loss for NaN already, so AT skips its own (synchronising) check.
register_term(Term("at", "at_beta", "features",
                   lambda c, pairs: ATLoss(c.at_p, c.at_beta, c.at_mode, reduction=c.at_reduction, check_finite=False),
                   layers="layers"))
register_term(Term("fact", "fact_beta", "features", lambda c, pairs: ActivationTransferLoss(*_channels(pairs), c.fact_beta),
                   autocast=True, layers="layers"))
register_term(Term("grad_at", "grad_at_beta", "input_gradients", lambda c, pairs: GradATLoss(c.grad_at_beta)))
register_term(Term("flip", "flip_beta", "flipped_input_gradients", lambda c, pairs: FlipSymmetryLoss(c.flip_beta)))
register_term(Term("sp", "sp_beta", "features", lambda c, pairs: SPLoss(c.sp_beta), layers="sp_layers", default_layers="last"))
register_term(Term("nst", "nst_beta", "features", lambda c, pairs: NSTLoss(c.nst_beta), layers="layers"))
register_term(Term("dkd", "dkd_beta", "labeled_logits",
                   lambda c, pairs: DKDLoss(c.dkd_alpha, c.dkd_beta, c.dkd_temperature, standardize=c.kd_standardize),
                   also_on=("dkd_alpha",)))
register_term(Term("hint", "hint_beta", "features", lambda c, pairs: HintLoss(*_shapes(pairs), c.hint_beta, relu=c.hint_relu),
                   autocast=True, layers="hint_layers", default_layers="middle"))
register_term(Term("cam", "cam_beta", "class_maps", lambda c, pairs: CAMTransferLoss(c.cam_beta, c.cam_method),
                   layers="cam_layers", default_layers="output"))
