"""Pictures of attention maps: overlays on their images, in grids with titles and one colour bar, as PNG.

One layout serves every figure: rows are images, the first column the image itself, then one column per
map set (methods, layers of one method, or models side by side: teacher / student / student with AT, the
attention-transfer paper's Fig. 1 idea). Each panel is a square of ``panel_inches`` placed at fixed
coordinates, so a figure is exactly ``figure_size(rows, columns)`` inches and nothing is stretched: images
keep their aspect ratio (``imshow`` with equal aspect) and maps, resized to their image's size first, are
drawn pixel for pixel over it (``interpolation="nearest"`` for both).

Maps are shown scaled to 0..1 each (their units differ between methods): minimum -> 0, 99th percentile -> 1
(the top 1% saturate, as in captum's visualisation, so that a few extreme pixels do not hide the rest).
Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas): no pyplot, no global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..functional import resize_map

__all__ = ["DISPLAY_PERCENTILE", "GridLayout", "denormalize", "figure_size", "map_grid", "overlay", "save_figure", "scale_to_unit"]


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the data set normalisation for display: (B, C, H, W) -> (B, H, W, C) in [0, 1], (B, H, W) if C = 1.

    ``mean`` and ``std`` are per channel on the 0..1 scale (the data API's ``ImageTensors.mean/std``).

    >>> denormalize(torch.zeros(1, 1, 2, 2), mean=[0.5], std=[0.25]).tolist()
    [[[0.5, 0.5], [0.5, 0.5]]]
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
    channels = images.shape[1]
    mean_t, std_t = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (mean, std))
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {mean_t.numel()} and {std_t.numel()}"
        )
    pixels = images.detach().cpu().double() * std_t[:, None, None] + mean_t[:, None, None]
    pixels = pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)
    return pixels[..., 0] if channels == 1 else pixels


DISPLAY_PERCENTILE = 99.0  # maps are shown from their minimum (0) to this percentile (1), as captum's outlier_perc


def scale_to_unit(attention: Tensor, percentile: float = DISPLAY_PERCENTILE) -> np.ndarray:
    """Scale one (H, W) map to [0, 1] for display: its minimum -> 0, its ``percentile``-th value -> 1, clipped.

    A few extreme pixels (input gradients are heavy-tailed) would otherwise leave the rest of the map near 0;
    smooth maps (CAM, activation maps) hardly change. A constant map becomes all zeros.
    """
    values = attention.detach().cpu().double()
    low, high = values.min(), torch.quantile(values.flatten(), percentile / 100)
    if not high > low:
        high = values.max()  # nearly all values equal: fall back to min-max
    return ((values - low) / (high - low)).clamp(0, 1).numpy() if high > low else np.zeros(tuple(values.shape))


def overlay(
    ax: Axes,
    image: np.ndarray,
    attention: Tensor,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    box: Sequence[int] | None = None,
) -> None:
    """Draw ``image`` ((H, W) grey or (H, W, 3) in [0, 1]) with ``attention`` ((h, w), resized to H x W)
    over it in ``cmap`` at opacity ``alpha``; ``box`` (x0, y0, x1, y1, exclusive ends) is outlined."""
    size = image.shape[:2]
    if tuple(attention.shape) != size:
        attention = resize_map(attention[None].float(), size)[0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if alpha > 0:
        ax.imshow(scale_to_unit(attention), cmap=cmap, vmin=0, vmax=1, alpha=alpha, interpolation="nearest")
    if box is not None:
        _outline(ax, box)
    ax.set_axis_off()


def _outline(ax: Axes, box: Sequence[int]) -> None:
    x0, y0, x1, y1 = (int(v) for v in box)
    # Pixel (x, y) covers [x - 0.5, x + 0.5] in imshow's coordinates; the exclusive end is the next pixel's edge.
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))


@dataclass(frozen=True)
class GridLayout:
    """Geometry of a grid figure, in inches."""

    panel: float = 1.6  # side of one square panel
    gap: float = 0.08  # space between panels
    left: float = 0.15  # left margin (row labels add `label_width`)
    label_width: float = 1.0  # width of the row-label column when there are row labels
    top: float = 0.35  # space for the column titles
    title_height: float = 0.35  # extra space for the figure title when there is one
    bottom: float = 0.15
    colorbar: float = 0.95  # right-hand strip holding the colour bar and its label


def figure_size(
    rows: int, columns: int, *, row_labels: bool = False, title: bool = False, layout: GridLayout = GridLayout()
) -> tuple[float, float]:
    """(width, height) in inches of a grid of ``rows`` x ``columns`` panels (the image column included)."""
    left = layout.left + (layout.label_width if row_labels else 0.0)
    width = left + columns * layout.panel + (columns - 1) * layout.gap + layout.colorbar
    height = layout.bottom + rows * layout.panel + (rows - 1) * layout.gap + layout.top + (layout.title_height if title else 0.0)
    return width, height


def map_grid(
    images: Tensor,
    columns: Mapping[str, Tensor],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    row_labels: Sequence[str] | None = None,
    boxes: Tensor | None = None,
    title: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: int = 100,
    layout: GridLayout = GridLayout(),
) -> Figure:
    """A grid figure: one row per image, the image first, then one overlay column per entry of ``columns``.

    Args:
        images: (B, C, H, W) normalised images (as the model saw them).
        columns: {column title: (B, H, W) maps}, e.g. {"gradcam": ..., "cam": ...} (images x methods),
            {"layer1": ..., "layer2": ...} (images x layers) or {"teacher": ..., "student + AT": ...}.
        mean, std: the normalisation to undo for display, per channel on the 0..1 scale.
        row_labels: one text per image, written left of its row (e.g. "label 3, pred 5").
        boxes: (B, 4) object boxes, outlined on every panel of their row.
        title: figure title.
        cmap, alpha: colour map and opacity of the maps.
        dpi: pixels per inch of the saved PNG; the PNG is ``figure_size(...) * dpi`` pixels.

    Returns:
        The figure (save it with :func:`save_figure`).
    """
    pictures = denormalize(images, mean, std)
    batch = pictures.shape[0]
    for name, maps in columns.items():
        if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.shape[0] != batch:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"column {name!r} must hold (B, H, W) maps for the {batch} images, got {shape}")
    if row_labels is not None and len(row_labels) != batch:
        raise ValueError(f"got {len(row_labels)} row labels for {batch} images; give one per image")
    if boxes is not None and tuple(boxes.shape) != (batch, 4):
        raise ValueError(f"boxes must be ({batch}, 4), one x0, y0, x1, y1 per image, got {tuple(boxes.shape)}")

    n_columns = 1 + len(columns)
    width, height = figure_size(batch, n_columns, row_labels=row_labels is not None, title=title is not None, layout=layout)
    figure = Figure(figsize=(width, height), dpi=dpi)
    left = layout.left + (layout.label_width if row_labels is not None else 0.0)
    titles = ["image", *columns]
    for row in range(batch):
        bottom = height - layout.top - (layout.title_height if title else 0.0) - (row + 1) * layout.panel - row * layout.gap
        box = None if boxes is None else boxes[row].tolist()
        for col, name in enumerate(titles):
            x = left + col * (layout.panel + layout.gap)
            ax = figure.add_axes((x / width, bottom / height, layout.panel / width, layout.panel / height))
            if col == 0:
                overlay(ax, pictures[row], torch.zeros(pictures.shape[1:3]), alpha=0.0, box=box)
            else:
                overlay(ax, pictures[row], columns[name][row], cmap=cmap, alpha=alpha, box=box)
            if row == 0:
                ax.set_title(name, fontsize=9)
        if row_labels is not None:
            figure.text((left - 0.08) / width, (bottom + layout.panel / 2) / height, row_labels[row],
                        ha="right", va="center", fontsize=8)
    if title is not None:
        figure.text(0.5, 1 - 0.5 * layout.title_height / height, title, ha="center", va="center", fontsize=11)
    _colorbar(figure, cmap, width, height, layout, batch, title is not None)
    return figure


def _colorbar(figure: Figure, cmap: str, width: float, height: float, layout: GridLayout, rows: int, title: bool) -> None:
    panels_height = rows * layout.panel + (rows - 1) * layout.gap
    bar_height = min(panels_height, 3.0)
    bottom = layout.bottom + (panels_height - bar_height) / 2
    x = width - layout.colorbar + 0.12
    cax = figure.add_axes((x / width, bottom / height, 0.12 / width, bar_height / height))
    bar = figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), cax=cax, ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=8)
    bar.set_label(f"attention (each map: min -> 0, {DISPLAY_PERCENTILE:g}th percentile -> 1)", fontsize=8)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at its own size and dpi (no tight cropping, so the size is predictable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=figure.dpi)
    return path
