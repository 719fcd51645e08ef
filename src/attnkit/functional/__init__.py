"""Pure tensor functions: attention maps and every transfer loss (no state, no modules).

Papers: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (attention maps, AT,
gradient AT, flip symmetry, F-ActT); Hinton et al. 2015 (knowledge distillation); Sun et al. 2024 (logit
standardisation); Zhao et al. 2022 (decoupled KD); Tung & Mori 2019 (similarity-preserving KD); Huang & Wang
2017 (neuron selectivity transfer); Romero et al. 2015 (FitNets hints); Selvaraju et al. 2017 (Grad-CAM) and
Draelos & Carin 2020 (HiResCAM), with CAM transfer built on them.
"""

from .attention import AttentionMapFunction, attention_map, normalize_map, resize_map
from .cam import cam_transfer_loss, grad_cam, grad_cam_weights, score_gradients
from .distill import dkd_loss, kd_loss, standardize_logits
from .gradient import flip_symmetry_loss, grad_at_loss, input_gradient
from .hints import hint_loss
from .selectivity import nst_loss
from .similarity import similarity_matrix, sp_loss
from .transfer import activation_transfer_loss, at_loss, attention_pair_maps

__all__ = [
    "AttentionMapFunction",
    "activation_transfer_loss",
    "at_loss",
    "attention_map",
    "attention_pair_maps",
    "cam_transfer_loss",
    "dkd_loss",
    "flip_symmetry_loss",
    "grad_at_loss",
    "grad_cam",
    "grad_cam_weights",
    "hint_loss",
    "input_gradient",
    "kd_loss",
    "normalize_map",
    "nst_loss",
    "resize_map",
    "score_gradients",
    "similarity_matrix",
    "sp_loss",
    "standardize_logits",
]
