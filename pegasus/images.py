"""Writing images: grids of samples as PNG, JPEG or WebP, chosen by the file's suffix."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pegasus.atomic import atomic_write, check_writable
from pegasus.errors import WriteError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: Path) -> str:
    """The PIL format for `path`, checked before any slow work: an unknown suffix, a folder or
    a place that cannot be written is refused in one line rather than after a whole chain."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give an image file name such as {path / 'out.png'}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise WriteError(f"cannot write {path}: the suffix {path.suffix or '(none)'!r} is not an "
                         f"image format pegasus writes; use one of {', '.join(FORMATS)}")
    check_writable(path)
    return fmt


def save_image_atomic(image, path: Path) -> Path:
    """A PIL image, written atomically in the format its suffix names."""
    fmt = image_format(path)
    atomic_write(Path(path), lambda f: image.save(f, format=fmt, **({"quality": 95} if fmt != "PNG" else {})))
    return Path(path)


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Images in [0, 1] (clamped), (N, C, H, W), as one grid, written atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    nrow = nrow or max(1, math.isqrt(len(images) - 1) + 1)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return save_image_atomic(Image.fromarray(pixels), path)


def save_folder(batches, folder: Path, progress=None) -> Path:
    """Each image of each batch as <folder>/<index, 6 digits>.png, as batches arrive; `progress`
    hears the number of images written so far."""
    from PIL import Image

    folder = Path(folder)
    done = 0
    for batch in batches:
        pixels = batch.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        for image in pixels.numpy():
            save_image_atomic(Image.fromarray(image), folder / f"{done:06d}.png")
            done += 1
        if progress is not None:
            progress(done)
    return folder


def save_npz(batches, path: Path, progress=None) -> Path:
    """All images as one uint8 array (N, H, W, C) under the key `arr_0` of an .npz file, the
    layout FID tools read."""
    import io

    import numpy as np

    parts, done = [], 0
    for batch in batches:
        parts.append(batch.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
        done += len(batch)
        if progress is not None:
            progress(done)
    buffer = io.BytesIO()
    np.savez(buffer, torch.cat(parts).numpy())
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
    return Path(path)


def check_folder(folder: Path) -> None:
    """A folder of samples: new, or an existing empty folder (nothing already there is lost)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise WriteError(f"{folder} already exists and is not an empty folder; give a new folder "
                         f"for the samples")
    check_writable(folder / "000000.png")
