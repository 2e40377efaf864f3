"""Pictures and masks a user gives: files or `sample:SEED` (a sample of the run itself), read
as the run's training images are (centre-cropped square, resized to its resolution), each odd
case converted with a one-line note or refused in one line.

Masks are 1 where pixels are regenerated ("white = regenerate" in a PNG) and 0 where the given
image is kept.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from pegasus.errors import FieldError, PegasusWarning, UserError
from pegasus.run.job import SamplingJob

BUILTIN_MASKS = ("right-half", "left-half", "top", "bottom", "centre", "box:x0,y0,x1,y1")
_BOX = re.compile(r"^box:(\d+),(\d+),(\d+),(\d+)$")
MIN_SIDE = 8  # pixels: anything smaller holds no picture to keep or blend


def check_mask(mask: torch.Tensor) -> None:
    regenerate = float(mask.mean())
    if regenerate == 0:
        raise UserError("the mask is empty (all black): there is nothing to regenerate; paint "
                        "white where new pixels should go")
    if regenerate == 1:
        raise UserError("the mask covers the whole image (all white): nothing is kept; that is "
                        "plain sampling (pegasus sample)")


def builtin_mask(name: str, res: int) -> torch.Tensor:
    """(1, res, res) in {0, 1}: right-half, left-half, top, bottom (halves), centre (the middle
    half in each direction), or box:x0,y0,x1,y1 in pixels of the run's resolution, end excluded."""
    mask = torch.zeros(1, res, res)
    half, quarter = res // 2, res // 4
    if name == "right-half":
        mask[..., half:] = 1
    elif name == "left-half":
        mask[..., :half] = 1
    elif name == "top":
        mask[:, :half] = 1
    elif name == "bottom":
        mask[:, half:] = 1
    elif name == "centre":
        mask[:, quarter:res - quarter, quarter:res - quarter] = 1
    elif m := _BOX.match(name):
        x0, y0, x1, y1 = map(int, m.groups())
        if not (0 <= x0 < x1 <= res and 0 <= y0 < y1 <= res):
            raise FieldError("mask", f"box {x0},{y0},{x1},{y1} is not inside the {res} x {res} "
                             f"image with x0 < x1 and y0 < y1")
        mask[:, y0:y1, x0:x1] = 1
    else:
        raise FieldError("mask", f"{name!r} is neither a file nor one of "
                                 f"{', '.join(BUILTIN_MASKS)}")
    return mask


def _open(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError:
        raise UserError(f"{what} {path} has more pixels than Pillow opens safely "
                        f"({Image.MAX_IMAGE_PIXELS * 2:,}); shrink it first") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise UserError(f"{what} {path} is {width} x {height} px; give one at least {MIN_SIDE} px "
                        f"on each side")
    return image


WIDE_GREY = ("I;16", "I;16B", "I;16L", "I", "F")  # PIL's modes of grey wider than 8 bits


def _wide_grey(image) -> np.ndarray:
    """(H, W) uint8 of a grey image wider than 8 bits, scaled (PIL's own conversion clips such
    values at 255, which turns most 16-bit pictures white): 16-bit by 65535, others by their
    range (255, or 65535 when they exceed it; floats by 1 or their maximum)."""
    grey = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = max(float(grey.max()), 1.0)
    else:
        top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
    return np.clip(np.round(grey / top * 255), 0, 255).astype(np.uint8)


def _rgb_pixels(image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of any PIL image: wide grey scaled to 8 bits, alpha dropped, grey and
    palettes expanded; each conversion is said in one note."""
    mode = image.mode
    if mode in WIDE_GREY:
        _note(f"{path} is a {mode} grey image: scaled to 8 bits, repeated to three channels")
        return np.repeat(_wide_grey(image)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        _note(f"{path} has an alpha channel: dropped (the colours are kept as they are)")
    elif mode in ("L", "1"):
        _note(f"{path} is a grey image: repeated to three channels")
    elif mode not in ("RGB", "P"):
        _note(f"{path} is a {mode} image: converted to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _note(message: str) -> None:
    warnings.warn(message, PegasusWarning, stacklevel=4)


def read_image(path: Path, res: int) -> torch.Tensor:
    """An image file as (3, res, res) in [0, 1]: centre-cropped square and resized, as training
    data is (with a note when it was not already res x res)."""
    from pegasus.data.transforms import resize_square

    with _open(path, "image") as image:
        pixels = _rgb_pixels(image, path)
    height, width = pixels.shape[:2]
    if (width, height) != (res, res):
        _note(f"{path} is {width} x {height} px: centre-cropped and resized to the run's "
              f"{res} x {res}")
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    return resize_square(x[None], res)[0].float() / 255


def read_mask(path: Path, res: int, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A black-and-white mask file as (1, res, res) in {0, 1}. It must be square, or the size of
    the image it goes with (then cropped as that image is); grey pixels are refused."""
    from pegasus.data.transforms import resize_square

    with _open(path, "mask") as image:
        pixels = _wide_grey(image) if image.mode in WIDE_GREY else np.asarray(image.convert("L"))
    grey = torch.from_numpy(pixels.copy())[None]
    size = (grey.shape[2], grey.shape[1])
    if size[0] != size[1] and size != image_size:
        raise UserError(f"mask {path} is {size[0]} x {size[1]}: give a square mask or one the size "
                        f"of the image" + (f" ({image_size[0]} x {image_size[1]})" if image_size else ""))
    if float(((grey > 32) & (grey < 223)).float().mean()) > 0.01:
        raise UserError(f"mask {path} is not black and white (more than 1% of its pixels are "
                        f"grey); paint white where pixels are regenerated and black elsewhere")
    side = min(size)
    top, left = (size[1] - side) // 2, (size[0] - side) // 2
    square = grey[:, top:top + side, left:left + side]
    return (resize_square(square[None], res)[0] > 127).float()


def image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, Image.DecompressionBombError):
        return None


def image_source(spec: str, field: str = "image") -> int | Path:
    """`sample:SEED` as its seed, or an image file's path: checked, nothing read or drawn."""
    if spec.startswith("sample:"):
        seed = spec.removeprefix("sample:")
        if not seed.isdigit():
            raise FieldError(field, f"{spec!r}: sample: takes a seed of 0 or more, e.g. sample:3")
        return int(seed)
    if not Path(spec).is_file():
        raise FieldError(field, f"{spec!r} is neither an image file nor sample:SEED")
    return Path(spec)


def given_image(spec: str, res: int, field: str = "image") -> torch.Tensor | int:
    """Before any sampling: an image file read (as (3, res, res) in [0, 1], its notes said
    once), or the seed of `sample:SEED`, which `resolve_image` draws later."""
    source = image_source(spec, field)
    return source if isinstance(source, int) else read_image(source, res)


def resolve_image(trained, given: torch.Tensor | int | str, field: str = "image") -> torch.Tensor:
    """An image as (3, res, res) on the run's device: one read by `given_image`, a spec still
    to read, or a seed: image 0 that `pegasus sample --seed SEED` draws."""
    if isinstance(given, str):
        given = given_image(given, trained.config.data.res, field)
    if isinstance(given, int):
        return SamplingJob.make(trained, trained.plan(), num=1).images(given)[0]
    return given.to(trained.device)


def resolve_mask(spec: str, res: int, image_spec: str | None = None) -> torch.Tensor:
    """A built-in mask name or a mask file, as (1, res, res)."""
    if Path(spec).is_file():
        size = image_size(Path(image_spec)) if image_spec and Path(image_spec).is_file() else None
        mask = read_mask(Path(spec), res, size)
    else:
        mask = builtin_mask(spec, res)
    check_mask(mask)
    return mask
