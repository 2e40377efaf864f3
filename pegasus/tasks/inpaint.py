"""Inpainting: keep the pixels a mask marks as known, regenerate the rest (NCSN, Song & Ermon
2019, and the reference code's inpainting sampler), with any of the samplers.

The reference re-noises the known pixels from the given image y at every level, y + sigma_i z,
and lets Langevin fill in the others. Here the score does the re-noising: on known pixels it is
the exact score of that perturbation, -(x - y) / sigma^2, and on unknown ones the model's. A
sampler then carries the known pixels as y + sigma z by its own rule (Technique 4 chooses eps so
that Langevin keeps a Gaussian's variance at each level; consistent annealed sampling and the
probability-flow ODE are exact for it), and the unknown pixels see at each level the known ones
at that level's noise, as in the reference. The last step (Tweedie) lands the known pixels on
y; they are pasted back exactly all the same.

Conditioning this way is an approximation (also in the reference, and in Song et al. 2021's
imputation): the unknown pixels adapt to the known ones by Langevin mixing, at levels where the
known ones are still noisy. It needs Langevin steps: annealed Langevin (als) or the
predictor-corrector (pc). A deterministic ODE (heun) or one ancestral step per level (cas) has
none, and leaves the regenerated pixels close to unconditional samples; they are refused.

Masks are 1 where pixels are regenerated ("white = regenerate" in a PNG) and 0 where the given
image is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from pegasus.errors import FieldError, UserError
from pegasus.fastpath.graphs import chain_graphs
from pegasus.noise.streams import ImageStreams
from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, ScoreFn

INPAINT_SAMPLERS = ("als", "pc")
BUILTIN_MASKS = ("right-half", "left-half", "top", "bottom", "centre", "box:x0,y0,x1,y1")
_BOX = re.compile(r"^box:(\d+),(\d+),(\d+),(\d+)$")


def masked_score(score_fn: ScoreFn, image: torch.Tensor, mask: torch.Tensor) -> ScoreFn:
    """The model's score where `mask` is 1, the exact score of y + sigma z where it is 0."""

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        known = (image - x) / s.square()
        return torch.lerp(known, score_fn(x, sigma), mask)

    return score


def paste(x: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The known pixels exactly as given, the regenerated ones as sampled."""
    return torch.where(mask > 0.5, x, image.expand_as(x))


def inpaint(score_fn: ScoreFn, image: torch.Tensor, mask: torch.Tensor, plan: SamplerPlan, *,
            num: int, seed: int, callback: Callback | None = None,
            centre: float | torch.Tensor = 0.5) -> torch.Tensor:
    """`num` completions (num, C, H, W) of `image` (C, H, W) where `mask` (1 or C, H, W) is 1,
    each image from its own seeded stream, as `sample_images` draws them (from `centre` for a
    sampler that starts at the noisiest level)."""
    check_mask(mask)
    if plan.name not in INPAINT_SAMPLERS:
        raise FieldError("sampler", f"{plan.name} takes no Langevin steps, which is how the "
                                    f"regenerated pixels adapt to the kept ones; inpaint with "
                                    f"{' or '.join(INPAINT_SAMPLERS)}")
    device, shape = image.device, tuple(image.shape)
    streams = ImageStreams(seed, 0, num, device)
    start = plan.start_point(streams.prior(shape), streams.normal(shape), centre)
    # A few completions are a small batch, where launching kernels one by one would bound the
    # GPU: the chain replays a CUDA graph there (graphs.py).
    score, capture = chain_graphs(plan, masked_score(score_fn, image, mask), device)
    out = plan.run(score, start, noise_sampler=streams.noise_sampler(shape), callback=callback,
                   capture=capture)
    return paste(out.clamp_(0, 1), image, mask)


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


def _read_pixels(path: Path, mode: str, what: str) -> torch.Tensor:
    """An image file's pixels as uint8 (channels, H, W) in PIL `mode` ("RGB" or "L")."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            pixels = torch.frombuffer(bytearray(im.convert(mode).tobytes()), dtype=torch.uint8)
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    return pixels.view(height, width, len(mode)).permute(2, 0, 1)


def read_image(path: Path, res: int) -> torch.Tensor:
    """An image file as (3, res, res) in [0, 1]: centre-cropped square and resized, as training
    data is."""
    from pegasus.data.transforms import resize_square

    return resize_square(_read_pixels(path, "RGB", "image")[None], res)[0].float() / 255


def read_mask(path: Path, res: int, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A black-and-white mask file as (1, res, res) in {0, 1}. It must be square, or the size of
    the image it goes with (then cropped as that image is); grey pixels are refused."""
    from pegasus.data.transforms import resize_square

    grey = _read_pixels(path, "L", "mask")
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
    except OSError:
        return None


def image_source(spec: str) -> int | Path:
    """`sample:SEED` as its seed, or an image file's path: checked, nothing read or drawn."""
    if spec.startswith("sample:"):
        seed = spec.removeprefix("sample:")
        if not seed.lstrip("-").isdigit():
            raise FieldError("image", f"{spec!r}: sample: takes an integer seed, e.g. sample:3")
        return int(seed)
    if not Path(spec).is_file():
        raise FieldError("image", f"{spec!r} is neither an image file nor sample:SEED")
    return Path(spec)


def resolve_image(run, spec: str) -> torch.Tensor:
    """`sample:SEED` (a sample of the run itself) or an image file, as (3, res, res)."""
    source = image_source(spec)
    if isinstance(source, int):
        return run.sample(1, source)[0]
    return read_image(source, run.config.data.res).to(run.device)


def check_inpaint_inputs(run, image: str, mask: str) -> None:
    """The image and mask of an inpainting, checked (a file read, a sample not drawn) before
    any sampling starts."""
    if isinstance(source := image_source(image), Path):
        read_image(source, run.config.data.res)
    resolve_mask(mask, run.config.data.res, image)


def resolve_mask(spec: str, res: int, image_spec: str | None = None) -> torch.Tensor:
    """A built-in mask name or a mask file, as (1, res, res)."""
    if Path(spec).is_file():
        size = image_size(Path(image_spec)) if image_spec and Path(image_spec).is_file() else None
        mask = read_mask(Path(spec), res, size)
    else:
        mask = builtin_mask(spec, res)
    check_mask(mask)
    return mask


def inpaint_run(run, image: str, mask: str, plan: SamplerPlan, *, num: int, seed: int,
                callback: Callback | None = None,
                fast=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The given image, the mask and `num` completions of a TrainedRun's model, its network on
    the fast path `fast` (TrainedRun.fast_path; None: eager float32)."""
    if num < 1:
        raise FieldError("num", f"must be at least 1, got {num}")
    m = resolve_mask(mask, run.config.data.res, image).to(run.device)
    y = resolve_image(run, image)
    return y, m, inpaint(run.score_fn(fast), y, m, plan, num=num, seed=seed, callback=callback,
                         centre=run.centre)
