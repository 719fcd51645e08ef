"""What a training step minimises: cross-entropy plus any weighted sum of the transfer terms.

    L = (1 - alpha) * CE + alpha * KD          (alpha = distill.kd_alpha; alpha = 0 gives plain CE)
      + AT(beta = distill.at_beta) + F-ActT(distill.fact_beta)
      + gradient AT(distill.grad_at_beta) + flip symmetry(distill.flip_beta)

The teacher is frozen and in eval mode. Its forward runs under ``torch.inference_mode`` unless gradient-based AT
needs its input gradient. Student and teacher features are captured by forward hooks installed once for the
whole run (:class:`attnkit.features.FeatureCapture`), so the models need no changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as AF
from ..features import FeatureCapture, LayerPair
from ..losses import ActivationTransferLoss
from .config import DistillConfig

__all__ = ["Objective", "StepResult"]


@dataclass
class StepResult:
    loss: Tensor  # the total, to backpropagate
    logits: Tensor  # (B, K) student logits on the (unflipped) batch, for accuracy
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached components, for logging


class Objective:
    """Computes one step's loss for a student (and an optional frozen teacher).

    Args:
        student: the trained network (unwrapped; hooks go on its submodules).
        config: the distillation section of the run config (all weights 0 = plain training).
        teacher: frozen teacher, required when any teacher term has a weight > 0.
        pairs: student/teacher layer pairs for AT and F-ActT.
        autocast: context factory for mixed precision (the teacher runs under it too).
    """

    def __init__(
        self,
        student: nn.Module,
        config: DistillConfig,
        teacher: nn.Module | None = None,
        pairs: Sequence[LayerPair] = (),
        autocast=contextlib.nullcontext,
    ) -> None:
        self.config, self.teacher, self.autocast = config, teacher, autocast
        uses_features = config.at_beta > 0 or config.fact_beta > 0
        if config.needs_teacher and teacher is None:
            raise ValueError("distill: a teacher is needed for at_beta, kd_alpha, fact_beta or grad_at_beta > 0")
        if uses_features and not pairs:
            raise ValueError("distill.layers: no student/teacher layer pairs to transfer attention between")
        self.pairs = list(pairs) if uses_features else []
        self.student_capture = FeatureCapture(student, [p.student for p in self.pairs]) if self.pairs else None
        self.teacher_capture = FeatureCapture(teacher, [p.teacher for p in self.pairs], detach=True) if self.pairs else None
        # F-ActT owns learnable 1x1 adapters: they are parameters of this module, optimised with the student.
        self.fact = (
            ActivationTransferLoss([p.student_shape[0] for p in self.pairs], [p.teacher_shape[0] for p in self.pairs], config.fact_beta)
            if config.fact_beta > 0 else None
        )
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    # Hooks live as long as the objective is in use: `with objective:` around training and evaluation.
    def __enter__(self) -> Objective:
        for capture in (self.student_capture, self.teacher_capture):
            if capture is not None:
                capture.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for capture in (self.student_capture, self.teacher_capture):
            if capture is not None:
                capture.__exit__(*exc_info)

    def clear(self) -> None:
        """Forget the features captured by the last forward passes."""
        for capture in (self.student_capture, self.teacher_capture):
            if capture is not None:
                capture.features.clear()

    @property
    def trainable(self) -> nn.Module | None:
        """The objective's own learnable parameters (F-ActT adapters), trained and checkpointed with the student."""
        return self.fact

    def to(self, device: torch.device) -> Objective:
        if self.fact is not None:
            self.fact.to(device)
        return self

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        """One step's loss; ``model`` is the (possibly DDP- or compile-wrapped) student."""
        c = self.config
        teacher_logits, teacher_feats, teacher_grad = self._teacher(images, labels)
        student_grad = flipped_grad = None
        if c.double_backprop:
            batch = torch.cat([images, images.flip(-1)]) if c.flip_beta > 0 else images
            target = torch.cat([labels, labels]) if c.flip_beta > 0 else labels
            with self.autocast():
                grads, all_logits = AF.input_gradient(model, batch, target, create_graph=True, return_logits=True)
            student_grad, logits = grads[: len(images)], all_logits[: len(images)]
            if c.flip_beta > 0:
                flipped_grad = grads[len(images):]
        else:
            with self.autocast():
                logits = model(images)
        # With flip symmetry the student saw [x, flip(x)]: transfer attention on the unflipped half only.
        student_feats = [f[: len(images)] for f in _pair_features(self.student_capture, [p.student for p in self.pairs])]

        terms: dict[str, Tensor] = {}
        if c.kd_alpha > 0:
            terms["ce"] = (1 - c.kd_alpha) * F.cross_entropy(logits.float(), labels)
            terms["kd"] = c.kd_alpha * AF.kd_loss(logits, teacher_logits, c.kd_temperature)
        else:
            terms["ce"] = F.cross_entropy(logits.float(), labels)
        if c.at_beta > 0:
            # The run already checks its total loss for NaN, so skip at_loss's own (synchronising) check.
            terms["at"] = AF.at_loss(student_feats, teacher_feats, c.at_p, c.at_beta, c.at_mode,
                                     reduction=c.at_reduction, check_finite=False)
        if self.fact is not None:
            with self.autocast():
                terms["fact"] = self.fact(student_feats, teacher_feats)
        if c.grad_at_beta > 0:
            terms["grad_at"] = AF.grad_at_loss(student_grad, teacher_grad, c.grad_at_beta)
        if c.flip_beta > 0:
            terms["flip"] = AF.flip_symmetry_loss(student_grad, flipped_grad, c.flip_beta)
        self.clear()  # drop the captured references so that the activations are freed after backward
        loss = torch.stack(list(terms.values())).sum()
        return StepResult(loss, logits.detach(), {k: v.detach() for k, v in terms.items()})

    def _teacher(self, images: Tensor, labels: Tensor) -> tuple[Tensor | None, list[Tensor], Tensor | None]:
        """Teacher logits, captured features and (for gradient AT) its input gradient, all without gradient."""
        if self.teacher is None:
            return None, [], None
        if self.config.grad_at_beta > 0:
            with self.autocast():  # needs autograd for dL/dx, but no parameter gradients (frozen)
                grad, logits = AF.input_gradient(self.teacher, images, labels, return_logits=True)
            logits, grad = logits.detach(), grad.detach()
        else:
            with torch.inference_mode(), self.autocast():
                logits, grad = self.teacher(images), None
        return logits, _pair_features(self.teacher_capture, [p.teacher for p in self.pairs]), grad


def _pair_features(capture: FeatureCapture | None, paths: Sequence[str]) -> list[Tensor]:
    """One captured output per pair, in pair order (a layer shared by two pairs is captured once, used twice)."""
    if capture is None:
        return []
    capture.ordered()  # raises, naming them, if some layer did not run
    return [capture.features[path] for path in paths]
