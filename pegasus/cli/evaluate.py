"""`pegasus eval`: KID and FID of a run's samples, drawn now or read from a folder."""

from __future__ import annotations

import dataclasses
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
        from pegasus.distributed import group
        from pegasus.fastpath import Execution

        _check_sources(run, checkpoint, samples, neighbours)
        with group(device, given()) as ctx:
            if samples is not None:
                _score_folder(run, samples, ctx, num, seed, features, inception_weights,
                              neighbours)
                return
            asked = Execution(compile=compile, amp=amp)
            model = load_model(run, checkpoint, None, str(ctx.device))
            with EvaluationBars() as bars:
                execution = dataclasses.replace(asked, progress=bars)
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
