"""How many images fit on a GPU: one two-point measurement of a pass's peak memory (its fixed
part, the weights' and cuDNN's workspaces, and its part per image), used to size sampling
batches to the free memory and to refuse, before any data loads, a training batch that cannot
fit (with the largest that would) instead of an out-of-memory traceback minutes in."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pegasus.errors import FieldError
from pegasus.fastpath.probe import untouched
from pegasus.model.loss import dsm_loss


def largest_batch(per_image: float, fixed: float, free: float, fraction: float = 0.9) -> int:
    """The largest batch b with fixed + b * per_image <= fraction * free (bytes); 0 if none."""
    return max(0, int((fraction * free - fixed) // per_image)) if per_image > 0 else 2**31


def two_point(run: Callable[[int], object], device: torch.device, probe: int) -> tuple[float, float]:
    """(fixed bytes, bytes per image) of `run(batch)`, from its peak memory above what was
    allocated before it, at `probe` and 2 x `probe` images: their difference is the part per
    image, the rest is fixed (counted once, not once per image)."""
    def peak(batch: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    small, large = peak(probe), peak(2 * probe)
    per_image = (large - small) / probe
    if per_image <= 0:  # allocator rounding swamped the difference: the plain average, larger
        per_image = large / (2 * probe)
    return max(0.0, small - probe * per_image), per_image


@torch.no_grad()
def sampling_batch_size(model, shape: tuple[int, ...], device: torch.device,
                        fraction: float = 0.8, probe: int = 8) -> int:
    """The largest sampling batch whose evaluations fit in `fraction` of the free GPU memory;
    the chain's own x, noise and score tensors are added to each image's part."""
    def evaluate(batch: int) -> None:
        model(torch.rand(batch, *shape, device=device), torch.ones(batch, device=device))

    fixed, per_image = two_point(evaluate, device, probe)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, largest_batch(per_image + 3 * 4 * torch.Size(shape).numel(), fixed, free, fraction))


def check_training_batch(model, batch: int, shape: tuple[int, ...], sigmas: torch.Tensor,
                         autocast, probe: int = 2) -> None:
    """On CUDA: measure a forward and backward pass at two small batches, add Adam's two moments
    and the EMA's copy of the weights (made after this check), and refuse `batch` when it cannot
    fit in the free memory."""
    device = sigmas.device
    if device.type != "cuda" or batch <= 2 * probe:
        return

    def step(size: int) -> None:
        with autocast:
            loss = dsm_loss(model, torch.rand(size, *shape, device=device), sigmas).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    with untouched(model, device):  # a backbone's dropout or batch norm, as the probe's passes
        fixed, per_image = two_point(step, device, probe)
    fixed += 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    free, _ = torch.cuda.mem_get_info(device)
    fits = largest_batch(per_image, fixed, free)
    if batch > fits:
        raise FieldError("train.batch_size", f"{batch} does not fit in the {free / 2**30:.1f} GiB "
                         f"free on {torch.cuda.get_device_name(device)} (about "
                         f"{per_image / 2**20:.0f} MiB per image); the largest that fits is "
                         f"about {fits}")
