"""What a training step minimises: weighted cross-entropy plus the loss terms that are on (:mod:`.terms`).

    L = w_CE * CE + sum over the terms that are on of  factor_term(epoch) * term
    e.g. (1 - alpha) * CE + alpha * KD + AT(beta = distill.at_beta) + F-ActT + SP + NST + DKD + hints + CAM
         + gradient AT(distill.grad_at_beta) + flip symmetry(distill.flip_beta)

``factor_term`` is the term's ``distill.<term>_schedule`` at the step's fractional epoch (1 by default).

:class:`Objective` is an ``nn.Module`` holding one :mod:`attnkit.losses` module per term that is on; its own
learnable parameters (F-ActT's adapters, FitNets' regressors) are ``objective.parameters()``, its checkpoint is
``objective.state_dict()``, and it runs in the student's train/eval mode (the regressors' batch norms). The
student and the teacher are not its submodules: they are passed to each call (possibly wrapped by DDP or
torch.compile), and their layers are captured by forward hooks installed on the unwrapped models for the whole
run (:class:`attnkit.features.FeatureCapture`, ``with objective:``). Each term has its own layer pairs.

The teacher is frozen and in eval mode. Its forward runs under ``torch.no_grad`` (not ``inference_mode``: a term
may save the teacher's logits or features for its backward, as an MSE to them does) unless a term needs its input
gradient or its class maps (CAM transfer: a graph from the CAM layers to the logits, no parameter gradients).

**Flip symmetry and batch norm.** The flipped batch flip(x) runs in a forward pass of its own, before the pass
on x, so that in train mode each batch is normalised by its own statistics: the input gradient at x, the
features and the logits are those of x alone (as with the flip term off), and the gradient at flip(x) is that
of flip(x) alone. One pass over [x, flip(x)] would normalise both with their joint statistics and move the
gradient-AT and flip terms from their definitions (measured at initialisation on a WRN-16-1, batch 16 to
128: the input gradient by 21 to 37%, the terms by up to 0.7%). The flipped pass runs its batch norms on copies
of their running statistics, so those see each training batch once, as with the flip term off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from .. import functional as AF
from ..features import FeatureCapture, LayerPair
from .terms import CONSUMES, Term, TermPlan

__all__ = ["Objective", "StepResult"]

_RUNNING = ("running_mean", "running_var", "num_batches_tracked")  # a batch norm's running statistics


@dataclass
class StepResult:
    loss: Tensor  # the total, to backpropagate
    logits: Tensor  # (B, K) student logits on the (unflipped) batch, for accuracy
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached weighted components, for logging


@dataclass
class _StepTensors:
    """Everything a term may consume in one step (empty or None where no term that is on needs it)."""

    logits: Tensor  # (B, K) student logits
    labels: Tensor  # (B,) class indices
    teacher_logits: Tensor | None  # (B, K); no gradient, except in the graph of the teacher's CAM layers
    student_features: dict[str, Tensor]  # module path -> (B, C, H, W), in the student's graph
    teacher_features: dict[str, Tensor]  # module path -> (B, C', H', W'), detached
    teacher_map_features: dict[str, Tensor]  # module path -> the teacher's CAM-layer output, root of its graph
    student_grad: Tensor | None  # (B, C, H, W) dCE/dx of the student, in the graph (double backprop)
    teacher_grad: Tensor | None  # (B, C, H, W) dCE/dx of the teacher, detached
    flipped_grad: Tensor | None  # (B, C, H, W) the student's input gradient on flip(x)


def _features(s: _StepTensors, pairs: Sequence[LayerPair]) -> tuple[list[Tensor], list[Tensor]]:
    return [s.student_features[p.student] for p in pairs], [s.teacher_features[p.teacher] for p in pairs]


# How a term's loss module is called, by what it consumes (the table in .terms), given the term's layer pairs.
_CALLS: dict[str, Callable[[nn.Module, _StepTensors, Sequence[LayerPair]], Tensor]] = {
    "logits": lambda loss, s, pairs: loss(s.logits, s.teacher_logits),
    "labeled_logits": lambda loss, s, pairs: loss(s.logits, s.teacher_logits, s.labels),
    "features": lambda loss, s, pairs: loss(*_features(s, pairs)),
    "class_maps": lambda loss, s, pairs: loss([s.student_features[p.student] for p in pairs], s.logits,
                                              [s.teacher_map_features[p.teacher] for p in pairs], s.teacher_logits,
                                              s.labels),
    "input_gradients": lambda loss, s, pairs: loss(s.student_grad, s.teacher_grad),
    "flipped_input_gradients": lambda loss, s, pairs: loss(s.student_grad, s.flipped_grad),
}
assert set(_CALLS) == set(CONSUMES), "every kind of term input needs a call"


class Objective(nn.Module):
    """Computes one step's loss for a student (and the frozen teacher, when a term needs it).

    Args:
        plan: the terms that are on (:func:`attnkit.engine.terms.plan_terms`).
        student: the trained network, unwrapped (hooks go on its submodules).
        teacher: the frozen teacher, unwrapped; required when a term that is on learns from it.
        pairs: student/teacher layer pairs: one list for every term on layers, or a mapping from term name to
            that term's pairs (:func:`attnkit.engine.setup.build_run` builds the mapping from the config).
        autocast: context factory for mixed precision (student and teacher run under it).
        epochs: the run's length, for schedules that decay over it (cosine, linear).
    """

    def __init__(
        self,
        plan: TermPlan,
        student: nn.Module,
        teacher: nn.Module | None = None,
        pairs: Sequence[LayerPair] | Mapping[str, Sequence[LayerPair]] = (),
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        epochs: float = 1.0,
    ) -> None:
        super().__init__()
        if plan.needs_teacher and teacher is None:
            raise ValueError(f"the terms {[t.name for t in plan.terms if t.needs_teacher]} need a teacher")
        self.plan, self.autocast, self.epochs = plan, autocast, epochs
        self.term_pairs = {t.name: _term_pairs(t, pairs) for t in plan.terms if t.uses_layers}
        self.losses = nn.ModuleDict({t.name: t.build(plan.config, self.term_pairs.get(t.name, [])) for t in plan.terms})
        on_maps = {t.name for t in plan.terms if t.consumes == "class_maps"}
        student_paths = [p.student for pairs in self.term_pairs.values() for p in pairs]
        feature_paths = [p.teacher for name, pairs in self.term_pairs.items() if name not in on_maps for p in pairs]
        map_paths = [p.teacher for name in on_maps for p in self.term_pairs[name]]
        self.student_capture = FeatureCapture(student, student_paths) if student_paths else None
        self.teacher_capture = FeatureCapture(teacher, feature_paths, detach=True) if feature_paths else None
        self.teacher_map_capture = FeatureCapture(teacher, map_paths, graph_root=True) if map_paths else None
        # The flipped pass must not move the running statistics (a training batch updates them once). Its norm
        # modules are looked up on the model the step calls (see _norms_of), never taken here: SyncBatchNorm
        # conversion and DDP wrapping after set-up replace them.
        self._norms: tuple[nn.Module | None, list[nn.Module]] = (None, [])

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
        captures = (self.student_capture, self.teacher_capture, self.teacher_map_capture)
        return [c for c in captures if c is not None]

    def forward(
        self, student: nn.Module, teacher: nn.Module | None, images: Tensor, labels: Tensor,
        epoch: float = 0.0, step: float = 0.0,
    ) -> StepResult:
        """One step's loss; ``student`` and ``teacher`` as the step calls them (possibly DDP- or compile-wrapped).

        ``epoch`` is the step's fractional epoch and ``step`` one step in epochs, for the weights' schedules
        (:class:`attnkit.engine.optim.WeightSchedule`; the trainer passes the learning-rate scheduler's position).
        """
        plan = self.plan
        if self.training != student.training:
            self.train(student.training)
        teacher_logits, teacher_grad = self._teacher(teacher, images, labels)
        student_grad = flipped_grad = None
        if plan.flipped_batch:  # first, so that the features captured are those of the pass on x
            flipped_grad = self._flipped_gradient(student, images, labels)
        if plan.student_input_gradient:
            with self.autocast():
                student_grad, logits = AF.input_gradient(student, images, labels, create_graph=True, return_logits=True)
        else:
            with self.autocast():
                logits = student(images)
        inputs = _StepTensors(logits, labels, teacher_logits, _captured(self.student_capture),
                              _captured(self.teacher_capture), _captured(self.teacher_map_capture),
                              student_grad, teacher_grad, flipped_grad)

        factors = plan.factors(epoch, self.epochs, step)
        ce = F.cross_entropy(logits.float(), labels)
        ce_weight = plan.ce_weight_at(factors)
        terms: dict[str, Tensor] = {"ce": ce if ce_weight == 1 else ce_weight * ce}
        for term in plan.terms:
            with self.autocast() if term.autocast else contextlib.nullcontext():
                value = _CALLS[term.consumes](self.losses[term.name], inputs, self.term_pairs.get(term.name, []))
            terms[term.name] = _weighted(term, plan, value, factors[term.name])
        self.clear()  # drop the captured references so that the activations are freed after backward
        loss = torch.stack(list(terms.values())).sum()
        return StepResult(loss, logits.detach(), {k: v.detach() for k, v in terms.items()})

    def _teacher(self, teacher: nn.Module | None, images: Tensor, labels: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Teacher logits and (for gradient AT) its input gradient, both without gradient; features go to the hooks.

        With CAM transfer on, the logits stay in the graph that starts at the teacher's CAM layers.
        """
        if teacher is None or not self.plan.needs_teacher:
            return None, None
        grad = None
        if self.plan.teacher_input_gradient:
            with self.autocast():  # needs autograd for dL/dx, but no parameter gradients (frozen)
                grad, logits = AF.input_gradient(teacher, images, labels, return_logits=True)
            if not self.plan.teacher_graph:
                return logits.detach(), grad.detach()
            # dL/dx freed the graph the CAM layers need: one more forward keeps a graph from those layers on.
        with torch.set_grad_enabled(self.plan.teacher_graph), self.autocast():
            return teacher(images), (None if grad is None else grad.detach())

    def _flipped_gradient(self, student: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """The student's input gradient at flip(x), in its graph, from a forward pass of its own (module docstring).

        In train mode the batch norms run on copies of their running statistics, dropped afterwards: the pass on
        x updates the real ones once, and no in-place update reaches a tensor this pass's graph saved.
        """
        originals = [(m, {n: getattr(m, n) for n in _RUNNING if getattr(m, n) is not None}) for m in self._norms_of(student)]
        for module, buffers in originals if student.training else []:
            for name, buffer in buffers.items():
                setattr(module, name, buffer.clone())
        try:
            with self.autocast():
                return AF.input_gradient(student, images.flip(-1), labels, create_graph=True)
        finally:
            for module, buffers in originals:
                for name, buffer in buffers.items():
                    setattr(module, name, buffer)

    def _norms_of(self, model: nn.Module) -> list[nn.Module]:
        """The norm layers with running statistics of ``model`` as the step calls it (wrapped, SyncBN-converted)."""
        if self._norms[0] is not model:
            norms = [m for m in model.modules() if isinstance(m, _NormBase) and m.track_running_stats]
            self._norms = (model, norms)
        return self._norms[1]

    @staticmethod
    def upgrade_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of this module from one of an older checkpoint, where it held F-ActT's state alone."""
        if all(key.startswith("losses.") for key in state):
            return dict(state)
        return {f"losses.fact.{key}": value for key, value in state.items()}


def _term_pairs(term: Term, pairs: Sequence[LayerPair] | Mapping[str, Sequence[LayerPair]]) -> list[LayerPair]:
    chosen = list(pairs.get(term.name, ()) if isinstance(pairs, Mapping) else pairs)
    if not chosen:
        raise ValueError(f"distill.{term.layers}: no student/teacher layer pairs for the {term.name!r} term")
    return chosen


def _weighted(term: Term, plan: TermPlan, value: Tensor, factor: float) -> Tensor:
    """A term's contribution: its module's value times its weight (scaled terms) and schedule factor."""
    if term.scaled:
        weight = getattr(plan.config, term.weight)
        return (weight if factor == 1 else weight * factor) * value
    return value if factor == 1 else factor * value


def _captured(capture: FeatureCapture | None) -> dict[str, Tensor]:
    """The outputs captured in the step, by path; raises, naming them, if some layer did not run."""
    if capture is None:
        return {}
    capture.ordered()
    return dict(capture.features)
