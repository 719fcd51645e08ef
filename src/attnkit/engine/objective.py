"""What a training step minimises: weighted cross-entropy plus the loss terms that are on (:mod:`.terms`).

    L = (1 - alpha) * CE + alpha * KD          (alpha = distill.kd_alpha; alpha = 0 gives plain CE)
      + AT(beta = distill.at_beta) + F-ActT(distill.fact_beta)
      + gradient AT(distill.grad_at_beta) + flip symmetry(distill.flip_beta)

:class:`Objective` is an ``nn.Module`` holding one :mod:`attnkit.losses` module per term that is on; its own
learnable parameters (F-ActT's adapters) are ``objective.parameters()`` and its checkpoint is
``objective.state_dict()``. The student and the teacher are not its submodules: they are passed to each call
(possibly wrapped by DDP or torch.compile), and their features are captured by forward hooks installed on the
unwrapped models for the whole run (:class:`attnkit.features.FeatureCapture`, ``with objective:``).

The teacher is frozen and in eval mode. Its forward runs under ``torch.no_grad`` (not ``inference_mode``: a term
may save the teacher's logits or features for its backward, as an MSE to them does) unless a term needs its input
gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as AF
from ..features import FeatureCapture, LayerPair
from .terms import CONSUMES, TermPlan

__all__ = ["Objective", "StepResult"]


@dataclass
class StepResult:
    loss: Tensor  # the total, to backpropagate
    logits: Tensor  # (B, K) student logits on the (unflipped) batch, for accuracy
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached components, for logging


@dataclass
class _StepTensors:
    """Everything a term may consume in one step (None where no term that is on needs it)."""

    logits: Tensor  # (B, K) student logits
    labels: Tensor  # (B,) class indices
    teacher_logits: Tensor | None  # (B, K), no gradient
    student_features: list[Tensor]  # one (B, C, H, W) per layer pair, in the student's graph
    teacher_features: list[Tensor]  # one (B, C', H', W') per layer pair, detached
    student_grad: Tensor | None  # (B, C, H, W) dCE/dx of the student, in the graph (double backprop)
    teacher_grad: Tensor | None  # (B, C, H, W) dCE/dx of the teacher, detached
    flipped_grad: Tensor | None  # (B, C, H, W) the student's input gradient on flip(x)


# How a term's loss module is called, by what it consumes (the table in .terms).
_CALLS: dict[str, Callable[[nn.Module, _StepTensors], Tensor]] = {
    "logits": lambda loss, s: loss(s.logits, s.teacher_logits),
    "labeled_logits": lambda loss, s: loss(s.logits, s.teacher_logits, s.labels),
    "features": lambda loss, s: loss(s.student_features, s.teacher_features),
    "input_gradients": lambda loss, s: loss(s.student_grad, s.teacher_grad),
    "flipped_input_gradients": lambda loss, s: loss(s.student_grad, s.flipped_grad),
}
assert set(_CALLS) == set(CONSUMES), "every kind of term input needs a call"


class Objective(nn.Module):
    """Computes one step's loss for a student (and the frozen teacher, when a term needs it).

    Args:
        plan: the terms that are on (:func:`attnkit.engine.terms.plan_terms`).
        student: the trained network, unwrapped (hooks go on its submodules).
        teacher: the frozen teacher, unwrapped; required when a term that is on learns from it.
        pairs: student/teacher layer pairs, required when a term compares features.
        autocast: context factory for mixed precision (student and teacher run under it).
    """

    def __init__(
        self,
        plan: TermPlan,
        student: nn.Module,
        teacher: nn.Module | None = None,
        pairs: Sequence[LayerPair] = (),
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        super().__init__()
        if plan.needs_teacher and teacher is None:
            raise ValueError(f"the terms {[t.name for t in plan.terms if t.needs_teacher]} need a teacher")
        if plan.uses_features and not pairs:
            raise ValueError("distill.layers: no student/teacher layer pairs to transfer attention between")
        self.plan, self.autocast = plan, autocast
        self.pairs = list(pairs) if plan.uses_features else []
        self.losses = nn.ModuleDict({t.name: t.build(plan.config, self.pairs) for t in plan.terms})
        self.student_capture = FeatureCapture(student, [p.student for p in self.pairs]) if self.pairs else None
        self.teacher_capture = FeatureCapture(teacher, [p.teacher for p in self.pairs], detach=True) if self.pairs else None

    # Hooks live as long as the objective is in use: `with objective:` around training and evaluation.
    def __enter__(self) -> Objective:
        for capture in self._captures():
            capture.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for capture in self._captures():
            capture.__exit__(*exc_info)

    def clear(self) -> None:
        """Forget the features captured by the last forward passes."""
        for capture in self._captures():
            capture.features.clear()

    def _captures(self) -> list[FeatureCapture]:
        return [c for c in (self.student_capture, self.teacher_capture) if c is not None]

    def forward(self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor) -> StepResult:
        """One step's loss; ``student`` and ``teacher`` as the step calls them (possibly DDP- or compile-wrapped)."""
        plan = self.plan
        teacher_logits, teacher_grad = self._teacher(teacher, images, labels)
        teacher_features = _pair_features(self.teacher_capture, [p.teacher for p in self.pairs])
        student_grad = flipped_grad = None
        if plan.student_input_gradient:
            batch = torch.cat([images, images.flip(-1)]) if plan.flipped_batch else images  # (B or 2B, C, H, W)
            target = torch.cat([labels, labels]) if plan.flipped_batch else labels
            with self.autocast():
                grads, all_logits = AF.input_gradient(student, batch, target, create_graph=True, return_logits=True)
            student_grad, logits = grads[: len(images)], all_logits[: len(images)]
            if plan.flipped_batch:
                flipped_grad = grads[len(images):]
        else:
            with self.autocast():
                logits = student(images)
        # With the flipped batch the student saw [x, flip(x)]: transfer attention on the unflipped half only.
        student_features = [f[: len(images)] for f in _pair_features(self.student_capture, [p.student for p in self.pairs])]
        inputs = _StepTensors(logits, labels, teacher_logits, student_features, teacher_features,
                              student_grad, teacher_grad, flipped_grad)

        ce = F.cross_entropy(logits.float(), labels)
        terms: dict[str, Tensor] = {"ce": ce if plan.ce_weight == 1 else plan.ce_weight * ce}
        for term in plan.terms:
            with self.autocast() if term.autocast else contextlib.nullcontext():
                value = _CALLS[term.consumes](self.losses[term.name], inputs)
            terms[term.name] = getattr(plan.config, term.weight) * value if term.scaled else value
        self.clear()  # drop the captured references so that the activations are freed after backward
        loss = torch.stack(list(terms.values())).sum()
        return StepResult(loss, logits.detach(), {k: v.detach() for k, v in terms.items()})

    def _teacher(self, teacher: nn.Module | None, images: Tensor, labels: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Teacher logits and (for gradient AT) its input gradient, both without gradient; features go to the hooks."""
        if teacher is None or not self.plan.needs_teacher:
            return None, None
        if self.plan.teacher_input_gradient:
            with self.autocast():  # needs autograd for dL/dx, but no parameter gradients (frozen)
                grad, logits = AF.input_gradient(teacher, images, labels, return_logits=True)
            return logits.detach(), grad.detach()
        with torch.no_grad(), self.autocast():
            return teacher(images), None

    @staticmethod
    def upgrade_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of this module from one of an older checkpoint, where it held F-ActT's state alone."""
        if all(key.startswith("losses.") for key in state):
            return dict(state)
        return {f"losses.fact.{key}": value for key, value in state.items()}


def _pair_features(capture: FeatureCapture | None, paths: Sequence[str]) -> list[Tensor]:
    """One captured output per pair, in pair order (a layer shared by two pairs is captured once, used twice)."""
    if capture is None:
        return []
    capture.ordered()  # raises, naming them, if some layer did not run
    return [capture.features[path] for path in paths]
