"""Where an image's object is, and where another's parts would grow on it: the region above the
back of the base image's own silhouette, which a hybrid regenerates (hybrid.py). Masked
composition keeps one class's image and regenerates a region under the other class's guidance;
placing the region from the image itself, rather than a fixed half, puts wings on the back of
each horse wherever it stands.

Every function takes a batch of images (B, C, H, W) in [0, 1] and works per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A pixel is the object's where some channel differs from its row's background by more than
# this (in [0, 1] units): above the anti-aliased edge's half-coverage for a dark object on a
# light background, below the background gradient's change across one row (none).
SILHOUETTE_THRESHOLD = 0.15
# The region above the back: the middle share of the object's width (the torso, not the head
# or the tail at either end), and up to this share of the image's height above the back.
TORSO_SPAN = 0.5
REGION_HEIGHT = 0.45


def background(images: torch.Tensor) -> torch.Tensor:
    """Each row's median colour (B, C, H, 1): the background wherever the object covers less than
    half of a row, as for objects in front of a sky or a gradient (the sprites' backgrounds
    change from row to row only)."""
    return images.median(dim=-1, keepdim=True).values


def silhouette(images: torch.Tensor, behind: torch.Tensor | None = None,
               threshold: float = SILHOUETTE_THRESHOLD) -> torch.Tensor:
    """(B, 1, H, W): 1 where a pixel stands out from the background `behind` (broadcastable to
    the images; by default each row's own, `background`), else 0."""
    behind = background(images) if behind is None else behind
    difference = (images - behind).abs().amax(dim=1, keepdim=True)
    return (difference > threshold).to(images.dtype)


def above_back(shape: torch.Tensor, *, span: float = TORSO_SPAN,
               height: float = REGION_HEIGHT) -> torch.Tensor:
    """The region (B, 1, H, W) above the back of each silhouette `shape` (B, 1, H, W): in the
    middle `span` of the columns it covers, the pixels from the top of the object up to
    `height` x H above it, and the topmost row of the object (where parts join the body),
    widened by a pixel each side. An image with no object gets the top half instead."""
    b, _, h, w = shape.shape
    filled = shape[:, 0] > 0.5  # (B, H, W)
    columns = filled.any(dim=1)  # (B, W): columns the object covers
    rows = torch.arange(h, device=shape.device)
    cols = torch.arange(w, device=shape.device)
    region = torch.zeros(b, h, w, dtype=torch.bool, device=shape.device)
    reach = max(1, round(height * h))
    for i in range(b):
        covered = cols[columns[i]]
        if len(covered) == 0:
            region[i, : h // 2] = True
            continue
        left, right = covered.min().item(), covered.max().item()
        middle = (left + right) / 2
        half = max(0.5, span * (right - left + 1) / 2)
        torso = columns[i] & ((cols - middle).abs() <= half)
        # The top of the object in each torso column (H where the column is empty).
        top = torch.where(filled[i], rows[:, None], h).amin(dim=0)
        inside = (rows[:, None] <= top) & (rows[:, None] >= top - reach) & torso
        region[i] = inside
    widened = F.max_pool2d(region[:, None].float(), kernel_size=(1, 3), stride=1, padding=(0, 1))
    return widened.to(shape.dtype)
