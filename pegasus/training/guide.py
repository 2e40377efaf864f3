"""Training a run's classifiers: the noise-conditional guide p(class | x, sigma) that steers
guided blends, and the independent clean-image judge that scores them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pegasus import distributed
from pegasus.data import load_images
from pegasus.devices import resolve_device
from pegasus.errors import FieldError, UserError
from pegasus.fastpath.memory import available_bytes, estimated_batch
from pegasus.model.classifier import KINDS, Classifier, ClassifierSpec
from pegasus.run.classifiers import save_classifier
from pegasus.run.layout import RunDir
from pegasus.run.load import trained_schedule
from pegasus.signatures import ProgressFn


def train_classifier(
    spec: ClassifierSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    sigmas: torch.Tensor | None,
    iters: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: ProgressFn | None = None,
    ctx: distributed.Context | None = None,
) -> Classifier:
    """Cross-entropy on uint8 `images` with random flips; with `sigmas`, each image is first
    perturbed at a uniformly drawn level, as in score training. Under torchrun (`ctx` of several
    ranks) it is data-parallel as `train` is: each rank draws `batch_size` images of its own per
    step from a generator of its own, and DDP averages the gradients, so every rank ends with
    the same weights."""
    device = images.device
    ctx = ctx or distributed.alone(device)
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = Classifier(spec).to(device)
    net = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator(device=device).manual_seed(seed + 7919 * ctx.rank)
    for step in range(1, iters + 1):
        idx = torch.randint(len(images), (batch_size,), device=device, generator=g)
        x = images[idx].float() / 255
        flip = torch.rand(batch_size, device=device, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        sigma = None
        if sigmas is not None:
            sigma = sigmas[torch.randint(len(sigmas), (batch_size,), device=device, generator=g)]
            x = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, device=device, generator=g)
        loss = F.cross_entropy(net(x, sigma), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None and ctx.main:
            progress(step, iters, loss.item() if step % 50 == 0 or step == iters else None)
    return model.eval().requires_grad_(False)


@dataclass
class TrainedClassifier:
    model: Classifier
    path: Path
    accuracy: dict[str, float]  # held-out accuracy: "clean", or per noise level for the guide


def _check_batch(config, kind: str, batch_size: int, device: torch.device) -> None:
    """Before the data loads: a batch the estimate says cannot fit (a GPU is estimated too: a
    classifier is small, and its batch is the user's alone)."""
    shape = (3, config.data.res, config.data.res)
    probe = Classifier(ClassifierSpec(list(config.data.classes), config.data.res, 3,
                                      noise_conditional=kind == "guide"))
    fits = estimated_batch(probe, shape, device, training=True)
    if fits is not None and batch_size > max(fits, 1):
        raise FieldError("batch_size", f"{batch_size:,} does not fit in the "
                                       f"{available_bytes(device) / 2**30:.1f} GiB available; "
                                       f"the largest that fits is about {max(fits, 1):,}")


def train_for_run(
    run_dir: Path,
    kind: str,
    *,
    iters: int,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressFn | None = None,
    ctx: distributed.Context | None = None,
) -> TrainedClassifier:
    """Train the run's guide (noisy, sigma-conditional, on the run's own data) or judge (clean
    images only; on `sprites` a fresh sample drawn with another seed, so it never sees the
    images the score model and the guide were trained on). 10% of the images are held out.
    Under torchrun (`ctx`), data-parallel (train_classifier); rank 0 writes the file."""
    if kind not in KINDS:
        raise ValueError(f"kind must be guide or judge, got {kind!r}")
    if iters < 1:
        raise FieldError("iters", f"must be at least 1, got {iters}")
    if batch_size < 1:
        raise FieldError("batch_size", f"must be at least 1, got {batch_size}")
    ctx = ctx or distributed.alone(resolve_device(device))
    dev = ctx.device
    config, schedule = trained_schedule(run_dir)
    RunDir(run_dir).check_own()
    if len(config.data.classes) < 2:
        raise UserError(f"run {run_dir} was trained on one class ({config.data.classes[0]}); a "
                        f"{kind} tells classes apart and needs a run of two or more")
    _check_batch(config, kind, batch_size, dev)
    data_config = config.data
    if kind == "judge" and data_config.dataset == "sprites":
        data_config = dataclasses.replace(data_config, seed=data_config.seed + 1)
    data = load_images(data_config)
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))
    held = order[: len(order) // 10]
    used = order[len(order) // 10 :]
    images, labels = data.images.to(dev), data.labels.to(dev)
    sigmas = schedule.sigmas(dev) if kind == "guide" else None
    spec = ClassifierSpec(list(data.classes), config.data.res, images.shape[1],
                          noise_conditional=kind == "guide")
    model = train_classifier(spec, images[used.to(dev)], labels[used.to(dev)], sigmas=sigmas,
                             iters=iters, batch_size=batch_size, seed=seed, progress=progress,
                             ctx=ctx)
    x, y = images[held.to(dev)].float() / 255, labels[held.to(dev)]
    accuracy = {}
    with torch.no_grad():
        if sigmas is None:
            accuracy["clean"] = (model(x).argmax(1) == y).float().mean().item()
        else:
            g = torch.Generator(device=dev).manual_seed(seed)
            for i in (len(sigmas) - 1, len(sigmas) // 2, 0):
                s = sigmas[i].expand(len(x))
                noisy = x + s.view(-1, 1, 1, 1) * torch.randn(x.shape, device=dev, generator=g)
                accuracy[f"sigma={float(sigmas[i]):.3g}"] = (
                    (model(noisy, s).argmax(1) == y).float().mean().item())
    path = RunDir(run_dir).classifier(kind)
    if ctx.main:
        save_classifier(model, path, accuracy=accuracy)
    distributed.barrier(ctx)
    return TrainedClassifier(model, path, accuracy)
