"""Class activation maps from a layer's activations and gradients: Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM,
Layer-CAM, and the gradient-free Eigen-CAM.

Notation: A (B, C, h, w) is the output of the chosen layer, S the score explained (the target class's logit, or
a target function's value), g = dS/dA (B, C, h, w), one backward pass from S to the layer. Every map is

    map = ReLU(sum_k W_k ⊙ A_k)    (B, h, w), at the layer's resolution

with the method's weights W:

=============  ============================================================  ===================================
method         W_k (per image)                                               paper
=============  ============================================================  ===================================
Grad-CAM       mean_ij g_kij (one weight per channel)                        Selvaraju et al., ICCV 2017
HiResCAM       g_kij (element-wise)                                          Draelos & Carin, 2020
Grad-CAM++     sum_ij alpha_kij ReLU(g_kij),                                 Chattopadhay et al., WACV 2018
               alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3)
XGrad-CAM      sum_ij (A_kij / sum_ab A_kab) g_kij                           Fu et al., BMVC 2020
Layer-CAM      ReLU(g_kij) (element-wise)                                    Jiang et al., IEEE TIP 2021
Eigen-CAM      first principal component of the centred A (no gradient)      Muhammad & Yeasin, IJCNN 2020
=============  ============================================================  ===================================

The gradient g and Grad-CAM's weights come from :mod:`attnkit.functional.cam` (``score_gradients``,
``grad_cam_weights``), which CAM transfer (a distillation loss) shares. Conventions (pytorch-grad-cam's, which its users know): the ReLU comes after the channel reduction; several
layers, ``aug_smooth`` and ``eigen_smooth`` as in :mod:`attnkit.explain._cam_base`. Grad-CAM equals captum's
``LayerGradCam`` (tested). A channel whose activations sum to 0 gets XGrad-CAM weight 0, a position with g = 0
Grad-CAM++ alpha 0 (pytorch-grad-cam adds 1e-7 / 1e-6 to the denominators instead; the maps differ by as much).

**Differentiable maps.** ``attribute(images, target, create_graph=True)`` keeps the maps in the autograd graph
(the gradient g itself is built with ``create_graph``), so a map can be part of a training loss: its backward
reaches the model's parameters (gradcheck-tested in float64). Gradients of the maps are second derivatives of
the score; for ReLU networks they are those of the piecewise-linear pieces (as in Grad-CAM++'s derivation).
Like every map, they are computed **in eval mode**, whatever the model's mode (each module's flag is restored
afterwards): a map used as a training loss sees BatchNorm's running statistics, not the batch's, and dropout
off, and its forward pass does not update the running statistics. (A train-mode forward here would update them
a second time per step, and make each image's map depend on the rest of the batch.)

Papers, formulas and the deviations chosen here (the factor exp(S) of Grad-CAM++, Eigen-CAM's sign):
docs/papers.md, sections 5.1 and 5.2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import functional as AF
from ..features import FeatureCapture
from ._base import Target, bind_target, check_logits, target_scores
from ._cam_base import CAMMethod, first_component

__all__ = ["EigenCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "XGradCAM", "first_component"]


class _GradientCAM(CAMMethod):
    """A CAM whose weights come from g = dS/dA: one forward and one backward (to the layer) per batch."""

    scores_own_forward = True  # the classes are read from the same forward pass: no extra one

    def attribute(
        self,
        images: Tensor,
        target: Target = None,
        *,
        upsample: bool = True,
        batch_size: int | None = None,
        create_graph: bool = False,
    ) -> Tensor:
        """Maps (B, C, H, W) -> (B, H, W); ``create_graph=True`` returns them in the autograd graph (a loss;
        computed in eval mode like every map, see "Differentiable maps" in the module docstring).

        Other arguments as :meth:`attnkit.explain.AttentionMethod.attribute`.
        """
        compute = lambda x, t: self._maps(x, t, create_graph)  # noqa: E731
        return self._run(compute, images, target, upsample, batch_size, keep_graph=create_graph)

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        raise NotImplementedError

    def _weighted_activations(self, images: Tensor, target: Any, repeats: int, create_graph: bool) -> list[Tensor]:
        paths = self._paths(images)
        with torch.enable_grad():  # also when the caller is under no_grad: the method needs dS/dA
            # Differentiable maps need the graph through the whole model; plain maps only from the layer on.
            # copy=True: the forward goes on from a copy of A, so in-place operations after the layer (a BatchNorm's
            # ReLU(inplace=True)) change the copy, not A; graph_root: A requires grad even for a frozen model.
            capture = FeatureCapture(self.model, paths, graph_root=True, copy=True, graph_from_layers=not create_graph)
            with capture:
                logits = check_logits(self.model(images))  # (V B, K)
            activations = capture.ordered()
            for path, a in zip(paths, activations):
                self._check_layer_output(path, a)
            bound = bind_target(target, logits[: images.shape[0] // repeats])  # classes of the unchanged view
            scores = target_scores(logits, bound, repeats)  # (V B,)
            grads = AF.score_gradients(activations, scores, create_graph)  # each (V B, C, h, w)
            if create_graph:  # the maps stay in the graph: a training loss can use them
                return [self._weights(a, g) * a for a, g in zip(activations, grads)]
        with torch.no_grad():
            return [self._weights(a, g) * a for a, g in zip(activations, grads)]


class GradCAM(_GradientCAM):
    """Grad-CAM: ReLU(sum_k mean_ij(dS/dA_k) A_k), (B, h, w) (Selvaraju et al. 2017); equals captum's LayerGradCam.

    Args:
        model: any classifier; without ``forward_features`` pass ``layer``.
        layer: module path, module, or a list of them (fused); None = the module producing ``forward_features``'
            output.
        relu: apply the final ReLU (the paper's map; False keeps negative evidence).
        aug_smooth, eigen_smooth: test-time views / first principal component (module docstring).

    >>> from attnkit.models import create_model
    >>> model = create_model("wrn", depth=10, width=1)
    >>> GradCAM(model).attribute(torch.randn(2, 3, 16, 16), upsample=False).shape
    torch.Size([2, 4, 4])
    >>> GradCAM(model, layer=[model.layer2, "relu"]).attribute(torch.randn(2, 3, 16, 16), upsample=False).shape
    torch.Size([2, 8, 8])
    """

    name = "gradcam"

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        return AF.grad_cam_weights(grads)  # (B, C, 1, 1)


class HiResCAM(_GradientCAM):
    """HiResCAM: ReLU(sum_k dS/dA_k ⊙ A_k), element-wise, (B, h, w) (Draelos & Carin 2020).

    Same arguments as :class:`GradCAM`. Unlike Grad-CAM it does not average the gradient over positions, so a
    position's value is exactly its contribution to the score's first-order expansion.
    """

    name = "hirescam"

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        return grads


class GradCAMPlusPlus(_GradientCAM):
    """Grad-CAM++: ReLU(sum_k w_k A_k), w_k = sum_ij alpha_kij ReLU(g_kij), (B, h, w) (Chattopadhay et al. 2018).

    alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3), g = dS/dA: the paper's closed form (its Eq. 19),
    derived for Y = exp(S) with the higher derivatives of exp(S) written through g (exact for piecewise-linear
    networks). The paper's weights carry the factor exp(S) of dY/dA = exp(S) g; it is the same positive number
    for every position of an image, changes no normalised map and overflows for large scores, so it is dropped
    here as in pytorch-grad-cam. Same arguments as :class:`GradCAM`.
    """

    name = "gradcam++"

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        grads_2 = grads.pow(2)
        denominator = 2 * grads_2 + activations.sum(dim=(2, 3), keepdim=True) * grads_2 * grads
        nonzero = denominator != 0  # g = 0 there (or, on a null set, the sum cancels): alpha = 0
        alpha = torch.where(nonzero, grads_2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
        return (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)


class XGradCAM(_GradientCAM):
    """XGrad-CAM: ReLU(sum_k w_k A_k), w_k = sum_ij (A_kij / sum_ab A_kab) g_kij, (B, h, w) (Fu et al. 2020).

    The gradient averaged with the activations' own weights (the paper's axioms of sensitivity and
    conservation). A channel whose activations sum to 0 gets weight 0. Same arguments as :class:`GradCAM`.
    """

    name = "xgradcam"

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        total = activations.sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        nonzero = total != 0
        weighted = (activations * grads).sum(dim=(2, 3), keepdim=True)
        return torch.where(nonzero, weighted / torch.where(nonzero, total, torch.ones_like(total)), 0.0)


class LayerCAM(_GradientCAM):
    """Layer-CAM: ReLU(sum_k ReLU(g_k) ⊙ A_k), element-wise positive gradients, (B, h, w) (Jiang et al. 2021).

    Reliable at shallow layers too (where Grad-CAM's averaged gradients cancel), which is why the paper fuses
    several: pass ``layer=[...]``. Same arguments as :class:`GradCAM`.
    """

    name = "layercam"

    def _weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        return grads.clamp_min(0)


class EigenCAM(CAMMethod):
    """Eigen-CAM: ReLU(projection of A on its first principal component), (B, h, w) (Muhammad & Yeasin 2020).

    No gradient and no class: per image the h*w positions' C-dimensional activations are centred and projected
    on the first right-singular vector (:func:`attnkit.explain.cam.first_component`, sign chosen to correlate
    with the channel sum). ``target`` is ignored; ``eigen_smooth`` changes nothing. Layers, ``relu`` and
    ``aug_smooth`` as :class:`GradCAM`.

    >>> from attnkit.models import create_model
    >>> EigenCAM(create_model("wrn", depth=10, width=1)).attribute(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    name = "eigencam"
    uses_target = False

    def _weighted_activations(self, images: Tensor, target: Any, repeats: int, create_graph: bool) -> list[Tensor]:
        paths = self._paths(images)
        capture = FeatureCapture(self.model, paths, detach=True, copy=True)  # A as the layer returned it
        with torch.no_grad(), capture:
            self.model(images)
        activations = capture.ordered()
        for path, a in zip(paths, activations):
            self._check_layer_output(path, a)
        return activations

    def _reduce(self, weighted: Tensor) -> Tensor:
        maps = first_component(weighted)
        return maps.clamp_min(0) if self.relu else maps
