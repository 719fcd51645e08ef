"""ROAD's noisy linear imputation (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022).

Removing pixels by setting them to a constant leaks the removal mask to the model (the shape of the hole is
itself evidence). ROAD fills removed pixels from their neighbours instead: each removed pixel's value is the
weighted mean of its 8 neighbours inside the image (weight 1/6 for the 4 sharing a side, 1/12 for the 4
diagonal ones), where removed neighbours are themselves unknowns. That is one sparse linear system per image
(solved exactly with SciPy's sparse LU), after which N(0, noise^2) noise is added to the filled pixels, every
channel alike solved separately. pytorch-grad-cam's ``NoisyLinearImputer`` uses the same weights.
The metric built on it, and the choices made: docs/papers.md, section 5.6.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_imputation"]

# (dy, dx) -> weight: the paper's neighbourhood (side neighbours 1/6, diagonal ones 1/12; together 1).
NEIGHBOUR_WEIGHTS = {
    (-1, 0): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (0, 1): 1 / 6,
    (-1, -1): 1 / 12, (-1, 1): 1 / 12, (1, -1): 1 / 12, (1, 1): 1 / 12,
}
_MAX_UNKNOWNS = 1 << 17  # unknowns per sparse solve: several small images at once, a large one alone


def noisy_linear_imputation(
    images: Tensor, removed: Tensor, noise: float = 0.01, generators: list[torch.Generator] | None = None
) -> Tensor:
    """Fill the ``removed`` pixels of ``images`` from their neighbours, plus Gaussian noise.

    Args:
        images: (n, C, H, W) images (normalised, as the model sees them).
        removed: (n, H, W) bool, True where a pixel is removed (all its channels).
        noise: standard deviation of the noise added to the filled pixels (the paper's 0.01, in image units).
        generators: one torch.Generator per image for its noise (None: torch's global generator), so that
            an image's noise does not depend on which others are filled with it.

    Returns:
        (n, C, H, W) images, equal to ``images`` where nothing was removed. An image whose pixels are all
        removed has no neighbour to read: it is refused.

    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    >>> noisy_linear_imputation(x, torch.tensor([[[False, False], [False, True]]]), noise=0.0)[0, 0, 1, 1]
    tensor(2.2000)
    """
    if images.dim() != 4 or removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"need (n, C, H, W) images and (n, H, W) masks, got {tuple(images.shape)} and {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("a ROAD step removes every pixel of an image; use percentiles below 100")
    filled = images.detach().clone()
    counts = removed.flatten(1).sum(dim=1).tolist()
    start = 0
    while start < len(counts):  # groups of images with at most _MAX_UNKNOWNS unknowns (at least one image)
        stop, total = start + 1, counts[start]
        while stop < len(counts) and total + counts[stop] <= _MAX_UNKNOWNS:
            total, stop = total + counts[stop], stop + 1
        filled[start:stop] = _impute(filled[start:stop], removed[start:stop])
        start = stop
    if noise > 0:
        for i in range(images.shape[0]):
            mask = removed[i]
            generator = None if generators is None else generators[i]
            draws = torch.randn(images.shape[1], int(mask.sum()), generator=generator, dtype=torch.float64)
            filled[i][:, mask] += (noise * draws).to(filled.dtype).to(filled.device)
    return filled


def _impute(images: Tensor, removed: Tensor) -> Tensor:
    """One sparse solve for a group of images: sum_q w_q (v_p - v_q) = 0 for every removed pixel p."""
    count, channels, height, width = images.shape
    holes = removed.cpu().numpy()
    values = images.detach().cpu().double().numpy()  # (n, C, H, W)
    image, ys, xs = np.nonzero(holes)  # the unknowns, in order
    unknowns = image.size
    if unknowns == 0:
        return images
    index = np.full(holes.shape, -1, dtype=np.int64)
    index[image, ys, xs] = np.arange(unknowns)
    diagonal = np.zeros(unknowns)
    rows, cols, weights = [], [], []
    rhs = np.zeros((unknowns, channels))
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        p, b, qy, qx = np.nonzero(inside)[0], image[inside], ny[inside], nx[inside]
        diagonal[p] += weight  # neighbours outside the image do not count
        unknown = holes[b, qy, qx]
        rows.append(p[unknown])
        cols.append(index[b[unknown], qy[unknown], qx[unknown]])
        weights.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown
        rhs[p[known]] += weight * values[b[known], :, qy[known], qx[known]]  # (m, C); each p once per offset
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(unknowns, unknowns)
    ) + scipy.sparse.diags(diagonal, format="csc")
    solution = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(unknowns, channels)
    values[image, :, ys, xs] = solution
    return torch.from_numpy(values).to(images.dtype).to(images.device)
