"""The Python front door: `pegasus.load(path)` gives a Model, the object a notebook reads first.

    import pegasus
    model = pegasus.load("runs/demo")       # a run folder, a checkpoint (.pt), exported weights
                                            # (.safetensors) or a reference NCSNv2 .pth
    images = model.job(num=16).images(seed=0)     # the run's own sampler (model.job(...).plan)
    model.job(num=50_000, sampler="cas", steps=32).write_folder("fid/", seed=0)
    strips = model.blend(n=15, k=9, strips=4, source="horse", target="bird", guidance=10).strips
    filled = model.inpaint("horse.png", mask="right-half", num=4).completions
    pegasi = model.hybrid(base="horse", parts="bird", num=16).images   # horses with bird wings
    s = model.score(x, sigma)                            # x in [0, 1], sigma shaped (B,)

Every image is a float tensor in [0, 1], (N, 3, H, W). The CLI's verbs call these methods.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pegasus.allocator import keep_freed_memory
from pegasus.fastpath import Execution
from pegasus.run.job import SamplingJob
from pegasus.run.layout import RunDir
from pegasus.run.load import load_trained_run
from pegasus.run.sigmas import SearchedSigmas
from pegasus.run.trained import TrainedRun
from pegasus.tasks.blend import Blend, BlendRequest, blend
from pegasus.tasks.encode import EncodeRequest, Latent, decode, encode, ode_plan
from pegasus.tasks.evaluate import EvalRequest, Quality, evaluate_run
from pegasus.tasks.hybrid import HybridRequest, Hybrids, hybrid
from pegasus.tasks.inpaint import Inpainting, InpaintRequest, inpaint_run
from pegasus.tasks.likelihood import Likelihood, evaluate_likelihood, log_likelihood
from pegasus.tasks.pictures import PictureBlend, PictureRequest, blend_pictures
from pegasus.tasks.sigma_search import SearchRequest, search_sigmas


def load(path: str | Path, device: str = "cpu", *, run: str | Path | None = None,
         config: str | Path | None = None, warn=None, notify=None) -> Model:
    """The trained model at `path`: a run folder (its newest checkpoint), a checkpoint file of
    one (.pt; `run` names its run folder when it lies elsewhere), exported weights
    (.safetensors), or a checkpoint of the reference NCSNv2 code (.pth; `config` is its
    config.yml or a pegasus preset when none lies beside it: interop/ncsnv2.py). `device` is
    cpu, cuda, cuda:N or auto; `warn` hears of damaged checkpoints skipped, `notify` of compiles
    and timings."""
    keep_freed_memory()
    path = Path(path)
    if path.suffix == ".pth":  # the reference NCSNv2 code's checkpoints
        from pegasus.devices import resolve_device
        from pegasus.interop.ncsnv2 import load_reference
        from pegasus.run.load import trained_from_state

        state = load_reference(path, config, warn)
        return Model(trained_from_state(state, path, resolve_device(device), notify=notify))
    if path.suffix == ".safetensors":
        return load_run(weights=path, device=device, warn=warn, notify=notify)
    if path.suffix in (".pt", ".pth") and not path.is_dir():
        return load_run(run, path, device=device, warn=warn, notify=notify)
    return load_run(path, device=device, warn=warn, notify=notify)


def load_run(run: str | Path | None = None, checkpoint: str | Path | None = None, *,
             weights: str | Path | None = None, device: str = "cpu", warn=None,
             notify=None) -> Model:
    """The model of a run folder (its newest checkpoint, or `checkpoint`, whose run folder is the
    one it lies in unless `run` names another: its judge and compile cache), or of exported
    weights: what the CLI's --run, --checkpoint and --weights name."""
    if checkpoint is not None and run is None:
        run = _run_of(Path(checkpoint))
    return Model(load_trained_run(run and Path(run), checkpoint and Path(checkpoint), device,
                                  weights=weights and Path(weights), warn=warn, notify=notify))


def _run_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file sits in (run/checkpoints/checkpoint-N.pt), if any."""
    folder = checkpoint.resolve().parent.parent
    return folder if RunDir(folder).config.is_file() else None


class Model:
    """A trained score model: its config, schedule and step, its score, and what it makes."""

    def __init__(self, trained: TrainedRun) -> None:
        self.trained = trained

    @property
    def config(self):
        return self.trained.config

    @property
    def schedule(self):
        return self.trained.schedule

    @property
    def step(self) -> int:
        return self.trained.step

    @property
    def device(self) -> torch.device:
        return self.trained.device

    def __repr__(self) -> str:
        return (f"Model({self.config.model.backbone} at {self.config.data.res} px, step "
                f"{self.step}, from {self.trained.source})")

    @torch.no_grad()
    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """s(x, sigma) = network(x, sigma) / sigma for images x in [0, 1] and noise levels sigma
        (shape (B,) or a scalar), on the model's device."""
        return self.trained.model(x.to(self.device), torch.as_tensor(sigma, device=self.device))

    def job(self, *, num: int, sampler: str | None = None, steps: int | None = None,
            batch_size: int | None = None, execution: Execution = Execution()) -> SamplingJob:
        """The sampling job of `num` images by `sampler` within `steps` network evaluations per
        image (run/job.py): the one way to draw. The run's own sampler when none is named (how
        it trained decides: TrainedRun.plan); `job.plan` says which. Its `images(seed)` returns
        them; `write_grid`, `write_folder` (continued when stopped) and `write_npz` write them.
        Image i of a seed is the same whatever num and batch_size. `execution` (fastpath.
        Execution) asks for torch.compile, bf16 and a progress bar."""
        return SamplingJob.make(self.trained, self.trained.plan(sampler, steps), num=num,
                                batch_size=batch_size, execution=execution)

    def blend(self, *, report: bool = False, execution: Execution = Execution(),
              **request) -> Blend:
        """Strips of two classes blended by eq. 4 (tasks/blend.py). `request` holds
        BlendRequest's fields, which own the defaults: n (15), k (None: 9 at N = 15; or "auto"),
        strips (8), seed, source, target, guidance, sampler (None: the run's own), steps, mode,
        image, mask. `.strips` is (strips, n + 2, 3, H, W), `.columns` the column written of
        each and, with `report`, `.reports` the judge's scores."""
        return blend(self.trained, BlendRequest(**request), report=report, execution=execution)

    def inpaint(self, image: str | Path, *, execution: Execution = Execution(),
                **request) -> Inpainting:
        """Completions of an image (a file or "sample:SEED") where the mask is white. `request`
        holds InpaintRequest's other fields, which own the defaults: mask ("right-half"),
        num (8), seed, sampler (None: the run's own if it inpaints, else als), steps, and
        toward and guidance to steer the regenerated pixels to a class."""
        return inpaint_run(self.trained, InpaintRequest(image=str(image), **request),
                           execution=execution)

    def hybrid(self, *, execution: Execution = Execution(), **request) -> Hybrids:
        """Images of the base class that grow the other class's parts: a horse with a bird's
        wings (tasks/hybrid.py). `request` holds HybridRequest's fields, which own the defaults:
        base and parts (None: the run's first class and its other), num (16), seed, sampler
        (None: the run's own if it can, else als), steps, guidance (10), candidates (4),
        batch_size. `.images` are the hybrids, `.scores` how hybrid each is by the run's guide."""
        return hybrid(self.trained, HybridRequest(**request), execution=execution)

    def encode(self, images: torch.Tensor, *, execution: Execution = Execution(),
               **request) -> Latent:
        """The probability-flow ODE's latents at sigma_1 of images (N, 3, H, W) in [0, 1].
        `request` holds EncodeRequest's fields, which own the defaults: sampler (None: heun),
        steps."""
        request = EncodeRequest(**request)
        callback = execution.bar("encode", request.plan(self.trained).evaluations)
        return encode(self.trained, images, request, callback=callback)

    def decode(self, latent: Latent, *, execution: Execution = Execution()) -> torch.Tensor:
        """The images of latents this run encoded, (N, 3, H, W) in [0, 1]."""
        latent.check(self.trained)  # before the progress bar: another run's latent is refused first
        plan = ode_plan(self.trained, latent.sampler, latent.steps)
        return decode(self.trained, latent, callback=execution.bar("decode", plan.evaluations))

    def log_likelihood(self, x: torch.Tensor, *, sampler: str | None = None,
                       steps: int | None = None, probes: int = 1, seed: int = 0) -> torch.Tensor:
        """log p(x) in nats per image (N, 3, H, W) in [0, 1], by the probability-flow ODE and
        Hutchinson's estimator (tasks/likelihood.py): the density of the data blurred by
        sigma_L. bits_per_dim(log_p, D) turns it into bits per dimension of 8-bit images."""
        plan = ode_plan(self.trained, sampler, steps)
        return log_likelihood(self.trained.model, x.to(self.device), plan.sigmas,
                              centre=self.trained.centre, probes=probes,
                              generator=torch.Generator().manual_seed(seed))

    def likelihood(self, num: int = 64, seed: int = 0, *, sampler: str | None = None,
                   steps: int | None = None, probes: int = 1,
                   execution: Execution = Execution(), ctx=None) -> Likelihood:
        """The mean negative log-likelihood in bits per dimension, with its standard error, of
        `num` held-out images (or training images) of the run's data (tasks/likelihood.py);
        with `ctx` (distributed.group under torchrun) this rank's share of them."""
        return evaluate_likelihood(self.trained, ode_plan(self.trained, sampler, steps), num=num,
                                   seed=seed, probes=probes, progress=execution.progress, ctx=ctx)

    def blend_pictures(self, image_a: str, image_b: str, *,
                       execution: Execution = Execution(), **request) -> PictureBlend:
        """Strips between two given pictures (files or "sample:SEED"): their ODE latents
        interpolated (mode "ode") or both noised to `strength` and blended by eq. 4 ("sdedit").
        `request` holds PictureRequest's other fields, which own the defaults."""
        return blend_pictures(self.trained, PictureRequest(image_a, image_b, **request),
                              execution=execution)

    def search_sigmas(self, *, execution: Execution = Execution(), heard=None,
                      **request) -> SearchedSigmas:
        """Choose a consistency-tuned run's sampling sigmas for 2 .. steps evaluations by
        held-out KID (tasks/sigma_search.py) and write them into its run folder, where
        `consistency` at those budgets then walks them. `request` holds SearchRequest's
        fields, which own the defaults: steps (4), num (256), seed, probes (8), grain (1.1),
        batch_size;
        `heard` hears each probe."""
        return search_sigmas(self.trained, SearchRequest(**request), execution=execution,
                             heard=heard)

    def evaluate(self, *, execution: Execution = Execution(), ctx=None, **request) -> Quality:
        """KID and FID of samples against the run's training images, and whether they copy
        them (tasks/evaluate.py); with `ctx` (distributed.group under torchrun) this rank draws
        its share of the samples. `request` holds EvalRequest's fields, which own the
        defaults: num (1000), seed, sampler (None: the run's own), steps, features ("judge"),
        inception_weights, batch_size, neighbours."""
        return evaluate_run(self.trained, EvalRequest(**request), execution=execution, ctx=ctx)
