"""The `pegasus` command line: parse, call the library, print with rich.

Heavy modules (torch, the networks) are imported inside the commands so that `pegasus --help`
stays fast. Errors caused by input are one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pegasus.errors import UserError

app = typer.Typer(
    name="pegasus",
    help="Train noise-conditional score networks (NCSNv2) and blend two classes into new things.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors():
    """Turn input errors into one line on stderr and exit code 2."""
    try:
        yield
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )


def sampling_progress(progress, description: str, total: int):
    """A sampler callback that advances a progress bar; it never reads the device."""
    task = progress.add_task(description, total=total, info="")
    return lambda info: progress.advance(task)


RunOpt = Annotated[Path, typer.Option("--run", help="Run directory (config, checkpoints, samples, logs).")]
SeedOpt = Annotated[int, typer.Option(help="Random seed: the same seed gives the same images.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field: SECTION.FIELD=VALUE, e.g. model.ngf=64."),
]


@app.command()
def train(
    run: RunOpt = Path("runs/default"),
    config: Annotated[str | None, typer.Option(help="Preset name (see configs/) or TOML file.")] = None,
    dataset: Annotated[str | None, typer.Option(help="sprites, cifar10, stl10 or folder:PATH.")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names, e.g. horse,bird.")] = None,
    res: Annotated[int | None, typer.Option(help="Image resolution in pixels.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone name (see `pegasus backbones`).")] = None,
    iters: Annotated[int | None, typer.Option(help="Total training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's latest checkpoint.")] = False,
    set_: SetOpt = None,
) -> None:
    """Train a score network; Ctrl-C saves a checkpoint and stops (continue with --resume)."""
    with user_errors():
        from pegasus.config import build_config
        from pegasus.training import train as run_training

        flags = {"data.dataset": dataset, "data.classes": classes, "data.res": res,
                 "model.backbone": backbone, "train.iters": iters,
                 "train.batch_size": batch_size, "train.device": device}
        cfg = build_config(preset=config, flags=flags, overrides=set_ or [],
                           resume_from=run if resume else None)
        console.print(
            f"training [bold]{cfg.model.backbone}[/] on {cfg.data.dataset} "
            f"({','.join(cfg.data.classes)}) at {cfg.data.res} px for {cfg.train.iters} steps "
            f"-> {run}", highlight=False)
        with _progress() as progress:
            task = progress.add_task("train", total=cfg.train.iters, info="")

            def report(step: int, total: int, loss: float | None) -> None:
                if loss is None:
                    progress.update(task, completed=step)
                else:
                    progress.update(task, completed=step, info=f"loss {loss:.2f}")

            result = run_training(cfg, run, resume=resume, progress=report)
        if result.interrupted:
            console.print(f"stopped at step {result.step}; checkpoint {result.checkpoint}; "
                          f"continue with: pegasus train --run {run} --resume")
            raise typer.Exit(128 + result.interrupted)
        console.print(f"done: step {result.step}, checkpoint {result.checkpoint}")


@app.command()
def sample(
    run: RunOpt,
    num: Annotated[int, typer.Option(help="Number of images.")] = 64,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint file instead of the run's latest.")
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw images by annealed Langevin dynamics from a run's EMA weights."""
    with user_errors():
        from pegasus.generate import load_trained_run, sample_images
        from pegasus.images import save_grid

        if num < 1:
            raise UserError(f"--num must be at least 1, got {num}")
        trained = load_trained_run(run, checkpoint, device)
        cfg = trained.config
        with _progress() as progress:
            callback = sampling_progress(progress, "sample", trained.schedule.evaluations)
            images = sample_images(
                trained.model, trained.schedule, trained.sigmas, num=num, res=cfg.data.res,
                seed=seed, denoise=cfg.noise.denoise, callback=callback)
        save_grid(images, out)
        console.print(f"wrote {num} samples from step {trained.step} to {out}")


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List plugins, their versions, hooks, backbones and status."""
    from pegasus.registry import registry

    reg = registry()
    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status,
         "hooks": p.hooks, "backbones": p.backbones, "error": p.error}
        for p in reg.plugins
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("plugin", "distribution", "version", "status", "hooks", "backbones")
    for r in rows:
        status = {"ok": "[green]ok[/]", "disabled": "[dim]disabled[/]"}.get(r["status"], "[red]error[/]")
        table.add_row(r["name"], r["distribution"], r["version"], status, ", ".join(r["hooks"]),
                      ", ".join(r["backbones"]))
    console.print(table)
    for line in reg.problems():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


@app.command()
def backbones() -> None:
    """Show each backbone: its plugin, resolutions and config defaults."""
    from pegasus.registry import registry

    table = Table("backbone", "plugin", "resolutions", "config defaults", "description")
    for name, (spec, plugin) in sorted(registry().backbones.items()):
        defaults = ", ".join(f"{k}={_show(v)}" for k, v in spec.defaults().items())
        table.add_row(name, plugin.name, ",".join(map(str, spec.resolutions)), defaults or "-",
                      spec.description)
    console.print(table)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def main() -> None:
    """Entry point: report broken plugins (one line each), then run the command."""
    from pegasus.registry import registry

    for line in registry().problems():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    app(prog_name="pegasus")


if __name__ == "__main__":
    sys.exit(main())
