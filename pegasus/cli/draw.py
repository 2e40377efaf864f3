"""`pegasus sample`, `blend` and `export`: drawing from a trained run or shared weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pegasus.cli.app import (
    DeviceOpt,
    OptionalRunOpt,
    RunOpt,
    SeedOpt,
    StepsBar,
    WeightsOpt,
    app,
    console,
    examples,
    note,
    progress_bar,
    sampling_progress,
    user_errors,
    warn,
)
from pegasus.samplers import SAMPLER_HELP, SAMPLERS

SamplerOpt = Annotated[str, typer.Option(help=f"Sampler, one of {', '.join(SAMPLERS)}. {SAMPLER_HELP}.")]
StepsOpt = Annotated[int | None, typer.Option(
    min=1, help="Network evaluations per image (a budget: the sampler takes the largest grid "
                "that fits; als keeps T steps per level and re-plans eps).")]
ImageOpt = Annotated[str | None, typer.Option(
    help="An image file (centre-cropped and resized to the run's resolution) or sample:SEED, a "
         "sample of the run itself.")]
MaskOpt = Annotated[str | None, typer.Option(
    help="Where to regenerate: a black-and-white PNG (white = regenerate), or right-half, "
         "left-half, top, bottom, centre, box:x0,y0,x1,y1 (pixels of the run's resolution).")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    exists=True, dir_okay=False, help="A checkpoint file instead of the run's latest.")]
OutImage = Annotated[Path, typer.Option(
    dir_okay=False, help="Image file to write: .png, .jpg or .webp.")]
CompileOpt = Annotated[str, typer.Option(
    "--compile", help="torch.compile the network: auto (on a GPU of compute capability 7.0 or "
                      "later, for long work; cached in the run folder), on or off.")]
AmpOpt = Annotated[str, typer.Option(
    help="bf16 autocast for the network (the update and 1/sigma stay float32): auto (on a GPU "
         "with bf16 tensor cores: compute capability 8.0 or later), on (or bf16) or off.")]
FAST_FLAGS = {"compile": "--compile", "amp": "--amp"}


@app.command(epilog=examples(
    "pegasus sample --run runs/demo --num 64 --seed 0 --out samples.png",
    "pegasus sample --run runs/demo --num 4 --seed 0    # the first 4 of the 64 above",
    "pegasus sample --weights model.safetensors --num 16 --out shared.jpg",
    "pegasus sample --run runs/demo --sampler heun --steps 35    # 35 network evaluations",
    "pegasus sample --run runs/cifar --num 10000 --folder fid-samples/    # one PNG per image",
    "pegasus sample --run runs/cifar --num 50000 --folder fid-samples/    # continues it to 50000",
    "pegasus sample --run runs/cifar --num 10000 --out samples.npz        # uint8 NHWC, for FID",
))
def sample(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num: Annotated[int, typer.Option(min=1, help="Number of images.")] = 64,
    seed: SeedOpt = 0,
    out: OutImage = Path("samples.png"),
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images per sampling batch (default: all on CPU; as many as fit on a GPU); "
                    "it changes speed and memory, never the images.")] = None,
    device: DeviceOpt = "auto",
    sampler: SamplerOpt = "als",
    steps: StepsOpt = None,
    compile_: CompileOpt = "auto",
    amp: AmpOpt = "auto",
    folder: Annotated[Path | None, typer.Option(
        file_okay=False, help="Write each image as <folder>/NNNNNN.png, batch by batch (many "
                              "images, bounded memory), instead of one grid. A folder begun by "
                              "the same job (weights, sampler, seed, precision) is continued "
                              "from its first missing image.")] = None,
) -> None:
    """Draw images from a run's EMA weights (or exported weights).

    Annealed Langevin by default, or a fast sampler; a grid image, a folder of PNGs, or an .npz."""
    with user_errors({"steps": "--steps", "sampler": "--sampler", **FAST_FLAGS}):
        from pegasus.fastpath.compile import check_switches
        from pegasus.images import check_npz, image_format, save_grid, save_npz
        from pegasus.run.folder import SampleFolder, SampleSet
        from pegasus.run.trained import load_trained_run

        # Before any slow work: the output can be written and the switches are valid.
        samples = SampleFolder(folder) if folder is not None else None
        if samples is not None:
            samples.check()
        elif out.suffix == ".npz":
            check_npz(out)
        else:
            image_format(out)
        check_switches(compile=compile_, amp=amp)
        trained = load_trained_run(run, checkpoint, device, weights=weights, warn=warn, notify=note)
        plan = trained.plan(sampler, steps)
        start = 0
        if samples is not None:
            start = samples.begin(SampleSet.of(trained, plan, seed=seed, amp=amp),
                                  source=f"{trained.source} (step {trained.step})")
            if start >= num:
                console.print(f"{folder} already holds {start} samples of this job, the {num} "
                              f"asked for among them; nothing to draw", highlight=False)
                return
        batch_size = trained.batch_size(num - start, batch_size)
        evaluations = trained.sampling_evaluations(plan, num - start, batch_size)
        score = trained.score_fn(trained.fast_path(evaluations, compile_, amp, batch_size))
        what = f"({sampler}, {plan.evaluations} evaluations per image)"
        if samples is not None or out.suffix == ".npz":
            with progress_bar() as progress:
                task = progress.add_task(f"sample ({sampler})", total=num, completed=start,
                                         info="images")
                batches = trained.sample_batches(num, seed, batch_size=batch_size, plan=plan,
                                                 score=score, start=start)
                report = lambda done: progress.update(task, completed=done)  # noqa: E731
                if samples is not None:
                    samples.write(batches, start, report)
                else:
                    save_npz(batches, out, num, report)
            which = f"(images {start} to {num - 1}) " if start else ""
            console.print(f"wrote {num - start} samples {which}from step {trained.step} to "
                          f"{folder or out} {what}", highlight=False)
            return
        with progress_bar() as progress:
            callback = sampling_progress(progress, f"sample ({sampler})", evaluations)
            images = trained.sample(num, seed, batch_size=batch_size, callback=callback, plan=plan,
                                    score=score)
        save_grid(images, out)
        console.print(f"wrote {num} samples from step {trained.step} to {out} {what}",
                      highlight=False)


@app.command(epilog=examples(
    "pegasus blend --run runs/demo --k 9 --n 15 --strips 8 --out blend.png",
    "pegasus blend --run runs/demo --from horse --to bird --guidance 10 --report",
    "pegasus blend --weights model.safetensors --k 9 --n 15",
    "pegasus blend --run runs/demo --sampler heun --mode slerp --k 9 --n 15",
))
def blend(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[int, typer.Option("--k", help="Which column to write: 0 .. N+1 (eq. 4).")] = 9,
    n: Annotated[int, typer.Option("--n", help="N: interpolated images between the two "
                                   "chains.")] = 15,
    strips: Annotated[int, typer.Option(min=1, help="Number of strips (each shares one starting "
                                        "point).")] = 8,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(dir_okay=False, help="Image of the k-th images; the strips "
                                      "go beside it as <out>-strips.")] = Path("blend.png"),
    source: Annotated[str | None, typer.Option("--from", help="Class at k = 0 (with --guidance).")] = None,
    target: Annotated[str | None, typer.Option("--to", help="Class at k = N+1 (with --guidance).")] = None,
    guidance: Annotated[float, typer.Option(min=0, help="Classifier guidance weight W; 0 is plain "
                                            "eq. 4.")] = 0.0,
    report: Annotated[bool, typer.Option(help="Score the strips with the run's judge; with "
                                         "--guidance, also unguided strips of the same seed.")] = False,
    device: DeviceOpt = "auto",
    sampler: SamplerOpt = "als",
    steps: StepsOpt = None,
    mode: Annotated[str, typer.Option(
        help="eq4: interpolate the noise injected at every step (als, pc, cas, heun with churn); "
             "slerp: interpolate the starting noise spherically (heun, the deterministic ODE).")] = "eq4",
    image: ImageOpt = None,
    mask: MaskOpt = None,
    compile_: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Blend two classes: strips of chains mixed by noise interpolation (eq. 4)."""
    with user_errors({"k": "--k", "n": "--n", "strips": "--strips", "guidance": "--guidance",
                      "steps": "--steps", "sampler": "--sampler", "mode": "--mode",
                      "image": "--image", "mask": "--mask", **FAST_FLAGS}):
        from pegasus.errors import UserError
        from pegasus.fastpath.compile import check_switches
        from pegasus.model.classifier import load_classifier
        from pegasus.run.trained import load_trained_run
        from pegasus.tasks.blend import BlendRequest, blend_and_report, check_blend_output, save_blend

        check_blend_output(out)
        check_switches(compile=compile_, amp=amp)
        if (guidance > 0 or report) and run is None:
            raise UserError("guidance and reports need a run folder (its guide and judge); "
                            "exported weights carry neither")
        if (image is None) != (mask is None):
            raise UserError("a masked blend needs both --image and --mask")
        trained = load_trained_run(run, None, device, weights=weights, warn=warn, notify=note)
        kept = {}
        if mask is not None:
            from pegasus.tasks.inpaint import resolve_image, resolve_mask

            kept = {"mask": resolve_mask(mask, trained.config.data.res, image).to(trained.device),
                    "image": resolve_image(trained, image)}
        request = BlendRequest(n=n, k=k, strips=strips, seed=seed, source=source, target=target,
                               guidance=guidance, sampler=sampler, steps=steps, mode=mode, **kept)
        request.validate(trained.classes)
        evaluations = request.plan(trained.schedule).evaluations
        guide = load_classifier(run, "guide", trained.device) if guidance > 0 else None
        judge = load_classifier(run, "judge", trained.device) if report else None
        chains = 2 if report and guidance > 0 else 1  # a guided report also blends unguided
        fast = trained.fast_path(evaluations * chains, compile_, amp)
        with progress_bar() as progress:
            strips_, reports = blend_and_report(
                trained, request, guide, judge,
                lambda r: sampling_progress(progress, f"blend W={r.guidance:g}", evaluations),
                fast)
        kth, strips_png = save_blend(strips_, k, out)
        console.print(f"wrote the k={k} images to {kth} and the strips (k = 0..{n + 1}) to "
                      f"{strips_png}", highlight=False)
        if reports:
            src, tgt = reports[0].source, reports[0].target
            table = Table("guidance W", "strips", f"{src} left and {tgt} right",
                          f"mean p({src}) along the strip, k = 0..{n + 1}")
            for r in reports:
                table.add_row(f"{r.guidance:g}", str(r.strips), f"{100 * r.ends_correct:.1f}%",
                              " ".join(f"{p:.2f}" for p in r.source_probability))
            console.print(table)


@app.command(epilog=examples(
    "pegasus inpaint --run runs/demo --image horse.png --mask right-half --num 8",
    "pegasus inpaint --run runs/demo --image sample:3 --mask box:2,2,10,8 --out wings.png",
    "pegasus inpaint --run runs/demo --image photo.jpg --mask wings-mask.png --sampler heun",
))
def inpaint(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    mask: MaskOpt = "right-half",
    num: Annotated[int, typer.Option(min=1, help="Completions to draw.")] = 8,
    seed: SeedOpt = 0,
    out: OutImage = Path("inpaint.png"),
    sampler: SamplerOpt = "als",
    steps: StepsOpt = None,
    device: DeviceOpt = "auto",
    compile_: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Keep part of an image and regenerate the rest (white in the mask).

    Writes a row of the input, the mask, what is kept and the completions."""
    with user_errors({"image": "--image", "mask": "--mask", "steps": "--steps",
                      "sampler": "--sampler", "num": "--num", **FAST_FLAGS}):
        import torch

        from pegasus.errors import UserError
        from pegasus.fastpath.compile import check_switches
        from pegasus.images import image_format, save_grid
        from pegasus.run.trained import load_trained_run
        from pegasus.tasks.inpaint import check_inpaint_inputs, inpaint_run

        if image is None:
            raise UserError("give the image to complete: --image FILE or --image sample:SEED")
        image_format(out)
        check_switches(compile=compile_, amp=amp)
        trained = load_trained_run(run, None, device, weights=weights, warn=warn, notify=note)
        check_inpaint_inputs(trained, image, mask)
        plan = trained.plan(sampler, steps)
        fast = trained.fast_path(plan.evaluations, compile_, amp)
        with progress_bar() as progress:
            callback = sampling_progress(progress, f"inpaint ({sampler})", plan.evaluations)
            given, region, completions = inpaint_run(trained, image, mask, plan, num=num, seed=seed,
                                                     callback=callback, fast=fast)
        shown = given * (1 - region) + 0.5 * region  # the kept pixels, grey where regenerated
        row = torch.cat([given[None], region.expand_as(given)[None], shown[None], completions])
        save_grid(row, out, nrow=len(row))
        console.print(f"wrote {out}: the image, the mask, what is kept, and {num} completions "
                      f"({sampler}, {plan.evaluations} evaluations)", highlight=False)


@app.command(epilog=examples(
    "pegasus export --run runs/demo --out model.safetensors",
    "pegasus sample --weights model.safetensors --num 16",
))
def export(
    run: RunOpt,
    out: Annotated[Path | None, typer.Option(
        dir_okay=False, help="The .safetensors file to write (default: the run's "
                             "exports/weights-<step>.safetensors).")] = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Export a run's EMA weights as safetensors, to share: `sample --weights` draws from it.

    The config, sigmas and backbone go in the file's metadata (JSON); no run folder and no
    pickle is needed to use it."""
    with user_errors():
        from pegasus.run.trained import export_run

        path = export_run(run, out, checkpoint)
        console.print(f"wrote {path}", highlight=False)


@app.command("eval", epilog=examples(
    "pegasus eval --run runs/demo --num 500 --features judge",
    "pegasus eval --run runs/demo --sampler heun --steps 35 --num 500",
    "pegasus eval --run runs/cifar --features inception --inception-weights pt_inception.pth",
    "pegasus eval --run runs/cifar --samples fid/ --features inception    # score drawn samples",
))
def eval_(
    run: RunOpt,
    num: Annotated[int | None, typer.Option(
        min=2, help="Samples to draw and score (default 1000), or to score of --samples "
                    "(default: all).")] = None,
    seed: SeedOpt = 0,
    sampler: SamplerOpt = "als",
    steps: StepsOpt = None,
    features: Annotated[str, typer.Option(
        help="judge: the run's judge classifier (offline, train-judge first; comparable within "
             "this project only); inception: standard Inception-v3 features (torch-fidelity).")] = "judge",
    inception_weights: Annotated[Path | None, typer.Option(
        dir_okay=False, help="Offline copy of the Inception weights (with --features inception).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per sampling batch.")] = None,
    device: DeviceOpt = "auto",
    compile_: CompileOpt = "auto",
    amp: AmpOpt = "auto",
    samples: Annotated[Path | None, typer.Option(
        exists=True, file_okay=False,
        help="Score the images a `pegasus sample --folder` job wrote there (by one job or several "
             "continuing it) instead of drawing new ones; the sampling options do not apply.")] = None,
) -> None:
    """Score a run's samples: KID and FID against its training images (torchmetrics)."""
    with user_errors({"steps": "--steps", "sampler": "--sampler", "features": "--features",
                      "num": "--num", "inception_weights": "--inception-weights", **FAST_FLAGS}):
        from pegasus.fastpath.compile import check_switches
        from pegasus.run.trained import load_trained_run
        from pegasus.tasks.evaluate import evaluate_folder, evaluate_run, feature_extractor

        if samples is not None:
            from pegasus.devices import resolve_device
            from pegasus.run.folder import SampleFolder

            folder = SampleFolder(samples)
            total = num or folder.count()
            with StepsBar("score (images)", "") as bar:
                quality = evaluate_folder(
                    run, folder, device=resolve_device(device), num=num, seed=seed,
                    features=features, inception_weights=inception_weights,
                    progress=lambda done: bar.report(done, total, None))
            console.print(quality.describe(), highlight=False)
            return
        num = 1000 if num is None else num
        check_switches(compile=compile_, amp=amp)
        trained = load_trained_run(run, None, device, warn=warn, notify=note)
        plan = trained.plan(sampler, steps)
        feature_extractor(features, run, trained.device, inception_weights)  # before sampling
        batch_size = trained.batch_size(num, batch_size)
        evaluations = trained.sampling_evaluations(plan, num, batch_size)
        fast = trained.fast_path(evaluations, compile_, amp, batch_size)
        with progress_bar() as progress:
            callback = sampling_progress(progress, f"sample ({sampler})", evaluations)
            quality = evaluate_run(trained, run, plan, num=num, seed=seed, features=features,
                                   inception_weights=inception_weights, batch_size=batch_size,
                                   callback=callback, fast=fast)
        console.print(quality.describe(), highlight=False)
