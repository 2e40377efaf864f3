"""How large a training batch fits on a GPU: a probe before training starts, so a batch that
cannot fit is refused in one line (with the largest that would) instead of an out-of-memory
traceback minutes in, after the data has loaded."""

from __future__ import annotations

import torch

from pegasus.errors import FieldError
from pegasus.fastpath.probe import untouched
from pegasus.model.loss import dsm_loss


def largest_batch(per_image: float, fixed: float, free: float, fraction: float = 0.9) -> int:
    """The largest batch b with fixed + b * per_image <= fraction * free (bytes); 0 if none."""
    return max(0, int((fraction * free - fixed) // per_image)) if per_image > 0 else 2**31


def _peak_of_step(model, x: torch.Tensor, sigmas: torch.Tensor, autocast) -> int:
    device = x.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    with autocast:
        loss = dsm_loss(model, x, sigmas).loss
    loss.backward()
    torch.cuda.synchronize(device)
    model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device)


def check_training_batch(model, batch: int, shape: tuple[int, ...], sigmas: torch.Tensor,
                         autocast, probe: int = 2) -> None:
    """On CUDA: measure the peak memory of a forward and backward pass at two small batches
    (their difference is the cost per image, the rest is fixed), add Adam's two moments and the
    EMA's copy of the weights (made after this check), and refuse `batch` when it cannot fit in
    the free memory."""
    device = sigmas.device
    if device.type != "cuda" or batch <= 2 * probe:
        return
    with untouched(model, device):  # a backbone's dropout or batch norm, as the probe's passes
        small = _peak_of_step(model, torch.rand(probe, *shape, device=device), sigmas, autocast)
        large = _peak_of_step(model, torch.rand(2 * probe, *shape, device=device), sigmas,
                              autocast)
    per_image = max(large - small, 1) / probe
    adam_and_ema = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    fixed = small - probe * per_image + adam_and_ema
    free, _ = torch.cuda.mem_get_info(device)
    fits = largest_batch(per_image, fixed - torch.cuda.memory_allocated(device), free)
    if batch > fits:
        raise FieldError("train.batch_size", f"{batch} does not fit in the {free / 2**30:.1f} GiB "
                         f"free on {torch.cuda.get_device_name(device)} (about "
                         f"{per_image / 2**20:.0f} MiB per image); the largest that fits is "
                         f"about {fits}")
