"""`pegasus eval`: KID and FID of a run's samples, drawn now or read from a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import EvaluationBars, StepsBar, app, console, examples, load_model, user_errors
from pegasus.cli.options import (
    FAST_FLAGS,
    AmpOpt,
    BatchSizeOpt,
    CompileOpt,
    DeviceOpt,
    RunOpt,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
)


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
    batch_size: BatchSizeOpt = None,
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
        from pegasus.fastpath import check_switches

        if samples is not None:
            from pegasus.devices import resolve_device
            from pegasus.run.folder import SampleFolder
            from pegasus.tasks.evaluate import evaluate_folder

            folder = SampleFolder(samples)
            with StepsBar("score (images)", "") as bar:
                quality = evaluate_folder(
                    run, folder, device=resolve_device(device), num=num, seed=seed,
                    features=features, inception_weights=inception_weights,
                    progress=lambda done, total: bar.report(done, total, None))
            console.print(quality.describe(), highlight=False)
            return
        check_switches(compile=compile_, amp=amp)
        model = load_model(run, None, None, device)
        with EvaluationBars() as bars:
            quality = model.evaluate(1000 if num is None else num, seed, sampler=sampler,
                                     steps=steps, features=features,
                                     inception_weights=inception_weights, batch_size=batch_size,
                                     compile=compile_, amp=amp, progress=bars)
        console.print(quality.describe(), highlight=False)
