"""Localisation: does an attention map find the object's box?

* Pointing game (Zhang et al. 2016): a hit when the map's maximum lies inside the object's box. Where several
  positions tie for the maximum, all of them must lie inside (a flat map earns nothing).
* Energy in the box: the share of the map's positive mass inside the box (negative values are evidence
  against the class and do not count); a map with no positive mass scores 0.

Boxes are (B, 4) int64 ``x0, y0, x1, y1`` in pixels with exclusive ends (the data API's format, e.g.
``load_dataset("cluttered-mnist").boxes``); maps must be at the images' resolution (``upsample=True``).
docs/papers.md, section 5.7.

>>> maps = torch.zeros(2, 4, 4); maps[0, 1, 1] = 1.0; maps[1, 3, 3] = 1.0
>>> boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]])
>>> pointing_game(maps, boxes).tolist(), energy_in_box(maps, boxes).tolist()
([True, False], [1.0, 0.0])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_masks", "check_maps", "energy_in_box", "pointing_game"]


def check_maps(maps: Tensor) -> None:
    """Raise unless ``maps`` is a finite (B, H, W) tensor."""
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a (B, H, W) tensor, got {shape}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps contain NaN or inf; a map must be finite to be scored")


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 4) boxes x0, y0, x1, y1 (exclusive ends) -> (B, H, W) bool masks, True inside the box.

    Boxes reaching past the image are clipped to it.
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a (B, 4) tensor of x0, y0, x1, y1 (exclusive ends), got {shape}")
    if boxes.is_floating_point() or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must hold integer pixel coordinates, got dtype {boxes.dtype}")
    x0, y0, x1, y1 = boxes.long().unbind(1)  # each (B,)
    if bool(((x1 <= x0) | (y1 <= y0)).any()):
        raise ValueError("every box needs x0 < x1 and y0 < y1 (x0, y0, x1, y1 with exclusive ends)")
    height, width = size
    ys = torch.arange(height, device=boxes.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(width, device=boxes.device)[None, None, :]  # (1, 1, W)
    inside_y = (ys >= y0[:, None, None]) & (ys < y1[:, None, None])  # (B, H, 1)
    inside_x = (xs >= x0[:, None, None]) & (xs < x1[:, None, None])  # (B, 1, W)
    return inside_y & inside_x  # (B, H, W)


def _masks_for(maps: Tensor, boxes: Tensor) -> Tensor:
    check_maps(maps)
    if boxes.shape[:1] != maps.shape[:1]:
        raise ValueError(f"got {boxes.shape[0]} boxes for {maps.shape[0]} maps; give one box per map")
    return box_masks(boxes.to(maps.device), (maps.shape[1], maps.shape[2]))


def pointing_game(maps: Tensor, boxes: Tensor) -> Tensor:
    """(B, H, W) maps, (B, 4) boxes -> (B,) bool: is the map's maximum inside the box (every tied maximum)."""
    inside = _masks_for(maps, boxes)
    is_max = maps == maps.flatten(1).amax(dim=1)[:, None, None]  # (B, H, W)
    return ~(is_max & ~inside).flatten(1).any(dim=1)


def energy_in_box(maps: Tensor, boxes: Tensor) -> Tensor:
    """(B, H, W) maps, (B, 4) boxes -> (B,) share of each map's positive mass inside its box, in [0, 1]."""
    inside = _masks_for(maps, boxes)
    positive = maps.clamp_min(0).flatten(1).double()  # (B, H*W)
    total = positive.sum(dim=1)
    in_box = (positive * inside.flatten(1)).sum(dim=1)
    return torch.where(total > 0, in_box / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0).to(maps.dtype)
