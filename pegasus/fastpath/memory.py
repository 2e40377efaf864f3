"""How many images fit: on a GPU, one two-point measurement of a pass's peak memory (its fixed
part, the weights' and cuDNN's workspaces, and its part per image); on a CPU, an estimate from
the network's shapes alone (its activations on the meta device, no memory used). Used to size
sampling batches to the free memory and to refuse, before any data loads or any chain runs, a
batch that cannot fit (with the largest that would) instead of an out-of-memory traceback or a
machine swapping minutes in."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from pegasus.errors import FieldError
from pegasus.fastpath.probe import untouched
from pegasus.objectives.dsm import dsm_loss


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


def activation_bytes(model: torch.nn.Module, shape: tuple[int, ...]) -> int | None:
    """Bytes of one image's activations in an evaluation of `model` (on a CPU): every leaf
    module's output summed, in float32, from one pass over a single image, at a quarter of the
    resolution above 32 px and scaled up by the pixels (a convolutional network's activations
    grow with them). An upper estimate of an evaluation's memory per image (an evaluation frees
    most of them as it goes); None for a network that refuses such an input."""
    total = [0]

    def count(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * 4

    res = shape[-1]
    small = res if res <= 32 else res // 4
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.rand(1, shape[0], small, small), torch.ones(1))
    except Exception:  # noqa: BLE001 - a third-party network that takes its resolution only
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return int(total[0] * (res / small) ** 2)


def available_bytes(device: torch.device) -> int:
    """The memory free for the work: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimated_batch(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, *,
                    training: bool, fraction: float = 0.8) -> int | None:
    """The largest batch the estimate says fits in `fraction` of the free memory: an evaluation
    keeps its activations and the chain's x, noise and score per image; a training step keeps
    its activations for the backward pass, their gradients, and Adam's two moments and the EMA
    beside the weights and their gradients. None when the network cannot be estimated."""
    per_image = activation_bytes(model, shape)
    if per_image is None:
        return None
    weights = sum(p.numel() * 4 for p in model.parameters())
    image = 4 * torch.Size(shape).numel()
    per_image = 2 * per_image + 2 * image if training else per_image + 3 * image
    fixed = weights * (5 if training else 1)
    return largest_batch(per_image, fixed, available_bytes(device), fraction)


def check_weights_fit(model: torch.nn.Module, device: torch.device) -> None:
    """Before any weights are allocated (`model` may live on the meta device): refuse a network
    whose training state (weights, gradients, Adam's two moments and the EMA: 5 float32 copies)
    exceeds the device's free memory."""
    parameters = sum(p.numel() for p in model.parameters())
    need, free = 5 * 4 * parameters, available_bytes(device)
    if need > free:
        raise FieldError("model", f"{parameters:,} parameters need {need / 2**30:,.1f} GiB to "
                                  f"train (weights, gradients, Adam and the EMA), above the "
                                  f"{free / 2**30:.1f} GiB available; choose a smaller width")


def check_estimated_training_batch(model: torch.nn.Module, config, device: torch.device) -> None:
    """Before any data loads, on a CPU: refuse a training batch the estimate says cannot fit in
    the machine's available memory (a GPU measures instead: check_training_batch)."""
    if device.type == "cuda":
        return
    shape = (3, config.data.res, config.data.res)
    fits = estimated_batch(model, shape, device, training=True)
    batch = config.train.batch_size
    if fits is not None and batch > max(fits, 1):
        free = available_bytes(device) / 2**30
        raise FieldError("train.batch_size", f"{batch:,} does not fit in this machine's "
                         f"{free:.1f} GiB of available memory; the largest that fits is about "
                         f"{max(fits, 1):,}")
