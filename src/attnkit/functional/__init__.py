"""Pure tensor functions: attention maps and every transfer loss (no state, no modules).

Papers: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (attention maps, AT,
gradient AT, flip symmetry, F-ActT); Hinton et al. 2015 (knowledge distillation).
"""

from .attention import AttentionMapFunction, attention_map, normalize_map, resize_map
from .distill import distillation_loss, kd_loss
from .gradient import flip_symmetry_loss, grad_at_loss, input_gradient
from .transfer import activation_transfer_loss, at_loss, attention_pair_maps

__all__ = [
    "AttentionMapFunction",
    "activation_transfer_loss",
    "at_loss",
    "attention_map",
    "attention_pair_maps",
    "distillation_loss",
    "flip_symmetry_loss",
    "grad_at_loss",
    "input_gradient",
    "kd_loss",
    "normalize_map",
    "resize_map",
]
