"""Saving image grids as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pegasus.checkpoint import atomic_write


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Images in [0, 1] (clamped), (N, C, H, W), as one PNG grid, written atomically."""
    from torchvision.utils import save_image

    path = Path(path)
    nrow = nrow or max(1, math.isqrt(len(images) - 1) + 1)
    grid = images.detach().float().clamp(0, 1).cpu()
    atomic_write(path, lambda f: save_image(grid, f, format="PNG", nrow=nrow, padding=padding))
    return path
