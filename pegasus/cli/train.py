"""`pegasus train`, `train-guide` and `train-judge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import (
    StepsBar,
    app,
    console,
    err_console,
    examples,
    given,
    note,
    stated,
    user_errors,
    warn,
)
from pegasus.cli.options import DeviceOpt, RunOpt, SeedOpt, SetOpt

# The config field each flag of `train` sets, so errors about a field name the flag.
TRAIN_FLAGS = {"data.dataset": "--dataset", "data.classes": "--classes", "data.res": "--res",
               "data.data_dir": "--data-dir", "model.backbone": "--backbone",
               "train.iters": "--iters", "train.batch_size": "--batch-size",
               "train.device": "--device"}
PRESETS_HELP = ("Preset name or a TOML file. Presets: cifar10, celeba, church, tower, bedroom, ffhq "
                "(the published NCSNv2 settings; CelebA, LSUN and FFHQ read folder:PATH, as pegasus "
                "cannot download them), winged-horses-cifar10, winged-horses-stl10-48/64/96, "
                "ncsnv2-stl10-64/96, sprites-demo.")


def _kind(config) -> list[str]:
    """How a run trains, where it is not NCSNv2's: its sigma draw and preconditioning, and an
    objective other than DSM (with the run it tunes)."""
    from pegasus.registry import get_objective

    noise, objective = config.noise, config.objective
    kind = [] if noise.training == "levels" else [f"sigma drawn {noise.training}"]
    if noise.preconditioning == "edm":
        kind.append(f"EDM's preconditioning, sigma_data {noise.sigma_data}")
    if objective.name != "dsm":
        spec = get_objective(objective.name)[0]
        kind.append(f"objective {objective.name}: {spec.description}"
                    + (f", from {objective.source}" if objective.source else ""))
    return kind


def _announcer(run: Path, planned: bool):
    """train()'s on_start: what the run trains, on what, and how, in four lines."""
    def announce(resolved, parameters: int, fast) -> None:
        from pegasus.noise.schedule import Schedule
        from pegasus.run.trained import default_sampler

        s = Schedule.from_noise(resolved.noise)
        how = "as configured" if planned else "planned from the data"
        name, budget = default_sampler(resolved)
        err_console.print(
            f"training [bold]{resolved.model.backbone}[/] on {resolved.data.dataset} "
            f"({','.join(resolved.data.classes)}) at {resolved.data.res} px for "
            f"{resolved.train.iters} steps -> {run}", highlight=False)
        err_console.print(f"model: {resolved.model.backbone} {resolved.model.options}, "
                          f"{parameters:,} parameters", highlight=False)
        cost = (f"sampled by {name} in {budget if budget else s.evaluations} evaluations "
                f"unless told")
        err_console.print(f"noise: {s.describe()} ({'; '.join([how, *_kind(resolved)])}; "
                          f"{cost})", highlight=False)
        err_console.print(f"fast path: {fast.describe()}", highlight=False)

    return announce


def _finish(result, run: Path, early_stop: int) -> None:
    """The last line of a training call: stopped (exit 128 + signal), stopped early, or done."""
    if result.interrupted:
        if result.checkpoint is None:
            console.print("stopped before the first step; nothing was saved")
        else:
            console.print(f"stopped at step {result.step}; checkpoint {result.checkpoint}; "
                          f"continue with: pegasus train --run {run} --resume")
        raise typer.Exit(128 + result.interrupted)
    if result.stopped_early:
        low_step, low = min(result.held_out, key=lambda logged: logged[1])
        console.print(f"stopped early at step {result.step}: the held-out DSM loss has not "
                      f"fallen for {early_stop} logs (train.early_stop) since its low of "
                      f"{low:.4g} at step {low_step}; checkpoint {result.checkpoint}",
                      highlight=False)
        return
    console.print(f"done: step {result.step}, checkpoint {result.checkpoint}")


@app.command(epilog=examples(
    "pegasus train --config sprites-demo --run runs/demo",
    "pegasus train --classes horse,bird --res 64 --run runs/stl64",
    "pegasus train --config cifar10 --run runs/cifar",
    "pegasus train --dataset sprites --res 32 --set model.ngf=64 --run runs/small",
    "pegasus train --run runs/demo --resume",
))
def train(
    run: RunOpt = Path("runs/default"),
    config: Annotated[str | None, typer.Option(help=PRESETS_HELP)] = None,
    dataset: Annotated[str | None, typer.Option(help="sprites, cifar10, stl10 or folder:PATH.")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names, e.g. horse,bird.")] = None,
    res: Annotated[int | None, typer.Option(min=1, help="Image resolution in pixels.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are downloaded and cached.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone name (see `pegasus backbones`).")] = None,
    iters: Annotated[int | None, typer.Option(min=1, help="Total training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per step.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's newest good checkpoint.")] = False,
    set_: SetOpt = None,
) -> None:
    """Train a score network; Ctrl-C saves a checkpoint and stops (continue with --resume)."""
    with user_errors(TRAIN_FLAGS):
        from pegasus.run.resume import training_start
        from pegasus.training import train as run_training

        flags = {"data.dataset": dataset, "data.classes": classes, "data.res": res,
                 "data.data_dir": data_dir, "model.backbone": backbone, "train.iters": iters,
                 "train.batch_size": batch_size, "train.device": device}
        start = training_start(run, preset=config, flags=flags, overrides=set_ or [],
                               resume=resume, warn=warn)
        cfg = start.config
        with StepsBar("train", ".2f") as bar:
            result = run_training(cfg, run, resume=resume, resumed=start.resumed,
                                  progress=bar.report, on_start=_announcer(run, cfg.noise.planned),
                                  warn=warn, notify=note)
        _finish(result, run, cfg.train.early_stop)


@app.command(epilog=examples(
    "pegasus tune --run runs/demo --to runs/demo-ct",
    "pegasus sample --run runs/demo-ct --sampler consistency --steps 2 --out two-steps.png",
    "pegasus tune --run runs/demo --to runs/demo-ct --iters 2400 --ema 0.999",
    "pegasus tune --run runs/demo --to runs/c --stages 16 --q 2 --weight gap --dropout 0.2 "
    "--denoise 0  # ECT's CIFAR-10",
    "pegasus search-sigmas --run runs/demo-ct    # then its sampling sigmas, by held-out KID",
    "pegasus train --run runs/demo-ct --resume --iters 2400    # tune on",
))
def tune(
    run: RunOpt,
    to: Annotated[Path, typer.Option(file_okay=False, help="The new run's folder.")],
    iters: Annotated[int, typer.Option(min=1, help="Tuning steps.")] = 1200,
    stages: Annotated[int | None, typer.Option(
        help="Stages of r's schedule over the tuning (ECT's CIFAR-10 run has 16; the default "
             "measured best on short tunings).")] = None,
    q: Annotated[float | None, typer.Option(
        help="r's step toward t each stage (objective.q; the default is ECT's ImageNet value, "
             "its CIFAR-10 one is 2).")] = None,
    c: Annotated[str | None, typer.Option(
        help="The distance's pseudo-Huber constant: a number (0: the L2 norm, ECT's CIFAR-10) "
             "or auto (iCT's rule by the image's size).")] = None,
    weight: Annotated[str | None, typer.Option(
        help="edm: EDM's weight (the default; ECT's on ImageNet); gap: 1/(t - r), ECT's on "
             "CIFAR-10.")] = None,
    denoise: Annotated[float | None, typer.Option(
        help="The share of pairs kept denoising (r = 0) at every stage, against grainy "
             "samples (objective.denoise; default 0.3, ECT's is 0).")] = None,
    dropout: Annotated[float | None, typer.Option(
        help="The backbone's dropout while tuning, one mask for both points of a pair "
             "(default: the source run's; ECT's CIFAR-10 rate is 0.2).")] = None,
    ema: Annotated[float | None, typer.Option(
        help="The tuned run's EMA decay; the source run's unless set (ECT's own "
             "suits 100k steps and more).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    set_: SetOpt = None,
) -> None:
    """Tune a trained run into a consistency model (ECT) that samples in 1 to 4 evaluations.

    The new run starts from the run's EMA weights and is an ordinary run: checkpoints, resume
    (`train --resume`), exports, torchrun. Sample it with `--sampler consistency`."""
    flags = {"train.iters": "--iters", "train.device": "--device", "objective.q": "--q",
             "objective.c": "--c", "objective.weight": "--weight", "model.dropout": "--dropout",
             "train.ema": "--ema", "objective.denoise": "--denoise"}
    with user_errors(flags):
        from pegasus.training.tune import tune as tune_run

        chosen = {"train.device": device and f'"{device}"', "objective.q": q,
                  "objective.c": c and (f'"{c}"' if c == "auto" else c),
                  "objective.weight": weight and f'"{weight}"', "train.ema": ema,
                  "objective.denoise": denoise}
        overrides = [f"{field}={value}" for field, value in chosen.items() if value is not None]
        recipe = stated(stages=stages, dropout=dropout)
        with StepsBar("tune", ".3g") as bar:
            result = tune_run(run, to, iters=iters, overrides=[*overrides, *(set_ or [])],
                              progress=bar.report, on_start=_announcer(to, True), warn=warn,
                              notify=note, **recipe)
        _finish(result, to, 0)
        if not result.interrupted:
            console.print(f"choose its sampling sigmas by measurement: pegasus search-sigmas "
                          f"--run {to} (until then consistency walks Karras's grid)")


def _train_classifier(run: Path, kind: str, iters: int, batch_size: int, seed: int,
                      device: str) -> None:
    with user_errors({"iters": "--iters", "batch_size": "--batch-size"}):
        from pegasus.distributed import group
        from pegasus.training.guide import train_for_run

        with group(device, given()) as ctx, StepsBar(f"train {kind}", ".3f") as bar:
            result = train_for_run(run, kind, iters=iters, batch_size=batch_size, seed=seed,
                                   progress=bar.report, ctx=ctx)
        accuracy = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in result.accuracy.items())
        console.print(f"wrote {result.path}; held-out accuracy {accuracy}")


@app.command("train-guide", epilog=examples(
    "pegasus train-guide --run runs/demo",
    "pegasus train-guide --run runs/demo --iters 3000",
    "torchrun --nproc_per_node 4 -m pegasus -- train-guide --run runs/cifar    # 4 x 64 per step",
))
def train_guide(
    run: RunOpt,
    iters: Annotated[int, typer.Option(min=1, help="Training steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train the noise-conditional classifier p(class | x, sigma) that guides `blend --guidance`.

    Under torchrun, data-parallel: each rank takes --batch-size images per step."""
    _train_classifier(run, "guide", iters, batch_size, seed, device)


@app.command("train-judge", epilog=examples("pegasus train-judge --run runs/demo"))
def train_judge(
    run: RunOpt,
    iters: Annotated[int, typer.Option(min=1, help="Training steps.")] = 500,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 64,
    seed: SeedOpt = 1,
    device: DeviceOpt = "auto",
) -> None:
    """Train the independent clean-image classifier that scores blends (`blend --report`).

    Under torchrun, data-parallel: each rank takes --batch-size images per step."""
    _train_classifier(run, "judge", iters, batch_size, seed, device)
