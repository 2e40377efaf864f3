"""`pegasus eval`: KID and FID of a run's samples, drawn now or read from a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import (
    EvaluationBars,
    StepsBar,
    app,
    console,
    examples,
    given,
    load_model,
    stated,
    user_errors,
    with_sigmas,
)
from pegasus.cli.options import (
    FAST_FLAGS,
    AmpOpt,
    BatchSizeOpt,
    CheckpointOpt,
    CompileOpt,
    DeviceOpt,
    OptionalRunOpt,
    SamplerOpt,
    SeedOpt,
    SigmasOpt,
    StepsOpt,
)


@app.command("eval", epilog=examples(
    "pegasus eval --run runs/demo --num 500 --features judge",
    "pegasus eval --run runs/demo --sampler heun --steps 35 --num 500",
    "pegasus eval --run runs/cifar --features inception --inception-weights pt_inception.pth",
    "pegasus eval --run runs/cifar --samples fid/ --features inception    # score drawn samples",
    "pegasus eval --run runs/demo --likelihood --num 64 --steps 61        # bits per dimension",
    "pegasus eval --run runs/demo --num 500 --neighbours copies.png        # are they new?",
    "pegasus eval --checkpoint runs/demo/checkpoints/checkpoint-00000800.pt --num 500",
    "torchrun --nproc_per_node 8 -m pegasus -- eval --run runs/cifar --samples fid/ --features inception",
))
def eval_(
    run: OptionalRunOpt = None,
    checkpoint: CheckpointOpt = None,
    num: Annotated[int | None, typer.Option(
        min=2, help="Samples to draw and score (default 1000), or to score of --samples "
                    "(default: all).")] = None,
    seed: SeedOpt = 0,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    sigmas: SigmasOpt = None,
    features: Annotated[str, typer.Option(
        help="judge: the run's judge classifier (offline, train-judge first; comparable within "
             "this project only); inception: standard Inception-v3 features (torch-fidelity).")] = "judge",
    inception_weights: Annotated[Path | None, typer.Option(
        dir_okay=False, help="Offline copy of the Inception weights (with --features inception).")] = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = "auto",
    amp: AmpOpt = "auto",
    samples: Annotated[Path | None, typer.Option(
        exists=True, file_okay=False,
        help="Score the images a `pegasus sample --folder` job wrote there (by one job or several "
             "continuing it) instead of drawing new ones; the sampling options do not apply.")] = None,
    likelihood: Annotated[bool, typer.Option(
        help="Instead of KID and FID: the negative log-likelihood in bits per dimension of --num "
             "images (default 64) by the probability-flow ODE (--sampler heun) and Hutchinson's "
             "estimator.")] = False,
    probes: Annotated[int, typer.Option(
        min=1, help="Rademacher probes per image for --likelihood's trace estimate.")] = 1,
    neighbours: Annotated[Path | None, typer.Option(
        dir_okay=False, help="Write a picture of the first 8 samples, each beside its 3 nearest "
                             "training images in pixels and in features (.png).")] = None,
) -> None:
    """Score a run's samples: KID, FID and whether they copy training images (torchmetrics)."""
    with user_errors({"steps": "--steps", "sampler": "--sampler", "features": "--features",
                      "probes": "--probes", "num": "--num",
                      "inception_weights": "--inception-weights", **FAST_FLAGS}):
        sampler = with_sigmas(sampler, sigmas)
        from pegasus.distributed import group
        from pegasus.fastpath import Execution

        _check_sources(run, checkpoint, samples, neighbours)
        with group(device, given()) as ctx:
            if samples is not None:
                _score_folder(run, samples, ctx, num, seed, features, inception_weights,
                              neighbours)
                return
            model = load_model(run, checkpoint, None, str(ctx.device))
            with EvaluationBars() as bars:
                execution = Execution(compile=compile, amp=amp, progress=bars)
                if likelihood:
                    result = model.likelihood(64 if num is None else num, seed, sampler=sampler,
                                              steps=steps, probes=probes, execution=execution,
                                              ctx=ctx)
                else:
                    result = model.evaluate(seed=seed, sampler=sampler, steps=steps,
                                            features=features, inception_weights=inception_weights,
                                            batch_size=batch_size, neighbours=neighbours,
                                            execution=execution, ctx=ctx, **stated(num=num))
            console.print(result.describe(), highlight=False)


def _check_sources(run, checkpoint, samples, neighbours) -> None:
    """What eval reads and writes, checked before any slow work."""
    from pegasus.errors import UserError
    from pegasus.images import image_format

    if samples is not None and (run is None or checkpoint is not None):
        raise UserError("--samples are scored against a run folder's images and judge: give "
                        "--run, without --checkpoint")
    if neighbours is not None:
        image_format(neighbours)


def _score_folder(run, samples, ctx, num, seed, features, inception_weights, neighbours):
    from pegasus.run.folder import SampleFolder
    from pegasus.tasks.evaluate import evaluate_folder

    with StepsBar("score (images)", "") as bar:
        quality = evaluate_folder(run, SampleFolder(samples), device=ctx.device, num=num,
                                  seed=seed, features=features,
                                  inception_weights=inception_weights,
                                  progress=bar.images,
                                  neighbours=neighbours, ctx=ctx)
    console.print(quality.describe(), highlight=False)


@app.command("search-sigmas", epilog=examples(
    "pegasus search-sigmas --run runs/demo-ct",
    "pegasus search-sigmas --run runs/demo-ct --steps 2 --num 512 --probes 10",
    "pegasus sample --run runs/demo-ct --sampler consistency --steps 2   # walks them",
))
def search_sigmas_(
    run: Annotated[Path, typer.Option("--run", "--run-dir", file_okay=False,
                                      help="A consistency-tuned run folder (pegasus tune).")],
    steps: Annotated[int | None, typer.Option(
        help="Search the sigmas of 2 up to this many evaluations (default 4).")] = None,
    num: Annotated[int | None, typer.Option(
        help="Samples each candidate is scored on (default 256).")] = None,
    probes: Annotated[int | None, typer.Option(
        help="Each sigma's probes number this + 2 (default 8): half on a grid over the "
             "bracket, then a golden section around the grid's best.")] = None,
    grain: Annotated[float | None, typer.Option(
        help="The most neighbour-pixel difference a candidate may have, over the held-out "
             "images' (default 1.1; 0: KID alone, which prefers grainy sigmas).")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Choose a tuned run's consistency sigmas by held-out KID, and write them into the run.

    Each sigma below sigma_1 is found by a coarse grid, then a golden-section search around its
    best point, on the judge's KID against held-out images, among candidates whose grain stays
    within --grain of the images' (the least grainy where none does), every candidate drawn
    from one seed; `--sampler consistency` then walks them at those budgets, and refuses others
    until they are searched too."""
    with user_errors({"steps": "--steps", "num": "--num", "probes": "--probes",
                      "grain": "--grain"}):
        model = load_model(run, None, None, device)

        def heard(probe) -> None:
            console.print(f"  {probe.steps} evaluations, sigmas {_sigmas(probe.sigmas)}: KID "
                          f"{probe.kid:.4g} ± {probe.kid_std:.2g}, grain {probe.grain:.2f}x",
                          highlight=False)

        bound = {} if grain is None else {"grain": grain or None}
        found = model.search_sigmas(heard=heard, seed=seed, batch_size=batch_size, **bound,
                                    **stated(steps=steps, num=num, probes=probes))
        for count, best in sorted(found.by_steps.items()):
            console.print(f"{count} evaluations: sigma_1, then {_sigmas(best.sigmas)} (KID "
                          f"{best.kid:.4g} ± {best.kid_std:.2g}, {found.num} samples)",
                          highlight=False)
        console.print(f"wrote {model.trained.run_dir.searched_sigmas}")


def _sigmas(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values)
