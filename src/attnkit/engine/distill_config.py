"""The ``distill`` section of a run's config: the teacher, and each loss term's weight, hyperparameters, layer
pairs and weight schedule.

Which terms are on, and what a training step computes for them, is decided by the term table,
:mod:`attnkit.engine.terms` (``plan_terms(config.distill)``), which reads these fields; this module sits below it
(the table and the config validation both import it). A new term adds its fields here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..functional.attention import Reduction
from ..functional.cam import CAMMethodName
from ..functional.transfer import Mode
from .optim import WeightSchedule

__all__ = ["DistillConfig"]


@dataclass
class DistillConfig:
    """The loss terms added to cross-entropy (``attnkit.engine.terms``); each is on when its weight is > 0.

    Every term ``<name>`` also has ``<name>_schedule`` (a :class:`~attnkit.engine.optim.WeightSchedule`, constant
    by default), the multiplier of its weight over training: ``distill.at_schedule: {kind: step, milestones:
    [60, 120, 160], gamma: 0.2}``; ``distill.dkd_schedule: {warmup_epochs: 20, per: epoch}``.
    """

    teacher: str | None = None  # teacher run directory, .safetensors file or PyTorch .pt/.pth state dict
    teacher_model: str | None = None  # teacher architecture (as model.name) for a `teacher` file without attnkit metadata
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # builder arguments of teacher_model, e.g. {depth: 16}
    layers: list[str] | None = None  # "student:teacher" module path pairs of AT, F-ActT, NST; None = by resolution
    ce_weight: float | None = None  # weight of CE with the labels; None = 1 - kd_alpha (Hinton's mixture); LS-KD: 0.1
    at_beta: float = 0.0  # activation attention transfer weight (paper: 1000); 0 = off
    at_p: float = 2.0  # exponent of the attention function F_sum^p
    at_mode: Mode = "code"  # code: beta * mean squared difference (official code) | paper: eq. 2, beta/2 * p-norm / (h*w), batch mean
    at_reduction: Reduction = "mean"  # mean/sum = F_sum^p, max = F_max^p
    kd_alpha: float = 0.0  # knowledge distillation weight alpha in (1-alpha)*CE + alpha*KD (paper: 0.9); 0 = off
    kd_temperature: float = 4.0  # KD softmax temperature T
    kd_standardize: bool = False  # z-score the logits of KD and DKD first (logit standardisation, Sun et al. 2024)
    fact_beta: float = 0.0  # full activation transfer (F-ActT) weight; 0 = off
    grad_at_beta: float = 0.0  # gradient-based attention transfer weight (double backprop); 0 = off
    flip_beta: float = 0.0  # flip-invariance of the input gradient (L_sym); 0 = off; needs no teacher
    sp_beta: float = 0.0  # similarity-preserving KD weight (Tung & Mori 2019: 3000); 0 = off
    sp_layers: list[str] | None = None  # SP's pairs; None = the deepest pair by resolution (RepDistiller's feat[-2])
    nst_beta: float = 0.0  # neuron selectivity transfer weight (RepDistiller, mdistiller: 50) on distill.layers; 0 = off
    dkd_alpha: float = 0.0  # decoupled KD: weight of TCKD (Zhao et al. 2022: 1); DKD is on when dkd_alpha or dkd_beta > 0
    dkd_beta: float = 0.0  # decoupled KD: weight of NCKD (paper: 8; 1 to 8 per teacher-student pair)
    dkd_temperature: float = 4.0  # DKD softmax temperature T
    hint_beta: float = 0.0  # FitNets hint weight (RepDistiller, mdistiller: 100); 0 = off
    hint_layers: list[str] | None = None  # hint pairs; None = the middle resolution group of each network
    hint_relu: bool = True  # end the hint regressor with a ReLU (RepDistiller's ConvReg); false for signed features
    cam_beta: float = 0.0  # CAM transfer weight: the student matches the teacher's Grad-CAM of the true class; 0 = off
    cam_layers: list[str] | None = None  # CAM pairs; None = forward_features' layer (else the last group); no BN after a student layer
    cam_method: CAMMethodName = "gradcam"  # gradcam (channel weights) | hirescam (element-wise weights)
    kd_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # multiplier of kd_alpha over training
    at_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of at_beta (AT+KD: decayed with the lr)
    fact_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of fact_beta
    grad_at_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of grad_at_beta
    flip_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of flip_beta
    sp_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of sp_beta
    nst_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of nst_beta
    dkd_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of DKD (paper: warm-up over 20 epochs)
    hint_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of hint_beta
    cam_schedule: WeightSchedule = field(default_factory=WeightSchedule)  # of cam_beta
