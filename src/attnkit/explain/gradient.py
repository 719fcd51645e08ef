"""Gradient-based attention (Zagoruyko & Komodakis, ICLR 2017, section 3.2): J = dL/dx, the gradient of the
cross-entropy loss of the target class with respect to the input image.

J has the input's shape (B, C, H, W); its colour channels are reduced with
:func:`attnkit.functional.attention_map` (without normalisation). The default, ``p=1, reduction="sum"``, is
sum_c |J_c|, the L1 magnitude of each pixel's gradient; ``p=2`` gives sum_c J_c^2 (squared L2, sharper peaks),
``reduction="max"`` max_c |J_c|^p. Compare :class:`attnkit.explain.Saliency` (Simonyan 2013), which
differentiates the class *score* rather than the loss and takes the maximum over channels.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..functional import attention_map, input_gradient
from ..functional.attention import check_reduction
from ..functional.checks import check_positive
from ._base import AttentionMethod

__all__ = ["GradientAttention"]



class GradientAttention(AttentionMethod):
    """The paper's gradient attention map: reduce_c |dL/dx_c|^p at input resolution.

    Args:
        model: any classifier returning (B, K) logits.
        p: exponent of |J| before the channel reduction (default 1).
        reduction: ``"sum"`` (default), ``"mean"`` or ``"max"`` over the colour channels.

    >>> import torch
    >>> from attnkit.models import create_model
    >>> model = create_model("wrn", depth=10, width=1)
    >>> GradientAttention(model).attribute(torch.randn(2, 3, 16, 16), target=3).shape
    torch.Size([2, 16, 16])
    """

    name = "gradient"
    scores_own_forward = True  # input_gradient reads the classes (and checks them) from its own forward pass

    def __init__(self, model: nn.Module, p: float = 1.0, reduction: str = "sum") -> None:
        super().__init__(model)
        check_positive("p", p)
        check_reduction(reduction)
        self.p, self.reduction = float(p), reduction

    def _attribute(self, images: Tensor, target: Tensor | None) -> Tensor:
        grad = input_gradient(self.model, images, self._class_target(target))  # (B, C, H, W)
        return attention_map(grad, p=self.p, reduction=self.reduction, normalize=False)  # -> (B, H, W)
