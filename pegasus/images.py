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


SHOWN = 64  # pixels: what an upscaled grid enlarges each image to, at least


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, padding: int = 2,
              upscale: bool = False) -> Path:
    """Images in [0, 1] (clamped), (N, C, H, W), as one grid, written atomically; with
    `upscale`, each image enlarged by nearest neighbour (whole pixels, nothing invented) to at
    least SHOWN pixels, so that 16 px samples can be seen."""
    from PIL import Image

    factor = max(1, SHOWN // images.shape[-1]) if upscale else 1
    if factor > 1:
        images = images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    nrow = nrow or max(1, math.isqrt(len(images) - 1) + 1)
    grid = tile(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding)
    return save_image_atomic(Image.fromarray(to_uint8(grid[None])[0].numpy()), path)


def tile(images: torch.Tensor, nrow: int = 8, padding: int = 2,
         pad_value: float = 0.0) -> torch.Tensor:
    """Images (N, C, H, W) as one (3 or C, H', W') picture, `nrow` to a row, each framed by
    `padding` pixels of `pad_value`; one image is returned unframed, grey images as RGB. The
    layout of torchvision's make_grid, written here because importing torchvision costs a CLI
    call 2.7 s (it imports torch's compiler), more than the rest of a small job."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if len(images) == 1:
        return images[0]
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding),
                           pad_value)
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = image
    return grid


def to_uint8(batch: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], (N, C, H, W), as uint8 pixels (N, H, W, C) on the CPU, rounded."""
    return batch.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def check_npz(path: Path) -> None:
    """Before any slow work: an .npz file that can be written where `path` says."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give a file name such as {path / 'samples.npz'}")
    check_writable(path)


def save_npz(batches, path: Path, num: int, progress=None) -> Path:
    """`num` images, arriving batch by batch, as one uint8 array (N, H, W, C) under the key
    `arr_0` of an .npz file, the layout FID tools read. Each batch goes to the file as it
    arrives (the .npy header states the whole shape up front), so memory holds one batch, not
    the job (50,000 images at 64 px are 614 MB); the file appears under its name only when
    complete."""
    import zipfile

    import numpy as np

    def write(f) -> None:
        done = 0
        # np.savez's layout: an uncompressed zip holding arr_0.npy; zip64 for files past 2 GB.
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive, \
                archive.open("arr_0.npy", "w", force_zip64=True) as entry:
            for batch in batches:
                pixels = to_uint8(batch).numpy()
                if done == 0:
                    np.lib.format.write_array_header_1_0(entry, {
                        "descr": np.lib.format.dtype_to_descr(pixels.dtype),
                        "fortran_order": False, "shape": (num, *pixels.shape[1:])})
                entry.write(np.ascontiguousarray(pixels).tobytes())
                done += len(pixels)
                if progress is not None:
                    progress(done)
        if done != num:
            raise ValueError(f"save_npz was promised {num} images and given {done}")

    atomic_write(Path(path), write)
    return Path(path)
