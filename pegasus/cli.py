"""The `pegasus` command line: parse, call the library, print with rich.

Heavy modules (torch, the networks) are imported inside the commands so that `pegasus --help`
stays fast. Errors caused by input are one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
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


# --run-dir is the same option: torchrun's own parser takes a bare --run for its --run-path.
RunOpt = Annotated[Path, typer.Option(
    "--run", "--run-dir", help="Run directory (config, checkpoints, samples, logs).")]
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
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are downloaded and cached.")] = None,
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
                 "data.data_dir": data_dir,
                 "model.backbone": backbone, "train.iters": iters,
                 "train.batch_size": batch_size, "train.device": device}
        cfg = build_config(preset=config, flags=flags, overrides=set_ or [],
                           resume_from=run if resume else None)
        quiet = os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 alone reports
        console.quiet = err_console.quiet = quiet
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

            def announce(resolved) -> None:
                from pegasus.build import schedule_from_config

                s = schedule_from_config(resolved.noise)
                how = "planned from the data" if not cfg.noise.planned else "as configured"
                progress.console.print(
                    f"noise: sigma_1 {s.sigma_max:.4g}, sigma_L {s.sigma_min:.4g}, L {s.levels}, "
                    f"T {s.steps_per_level}, eps {s.eps:.3g} ({how}; "
                    f"{s.evaluations} evaluations per sample)", highlight=False)

            result = run_training(cfg, run, resume=resume, progress=report, on_start=announce)
        if result.interrupted:
            if result.checkpoint is None:
                console.print("stopped before the first step; nothing was saved")
            else:
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
    batch_size: Annotated[int | None, typer.Option(
        help="Images per sampling batch (default: all on CPU; as many as fit on a GPU).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw images by annealed Langevin dynamics from a run's EMA weights."""
    with user_errors():
        from pegasus.generate import load_trained_run, sample_images
        from pegasus.images import save_grid

        if num < 1 or (batch_size is not None and batch_size < 1):
            raise UserError("--num and --batch-size must be at least 1")
        trained = load_trained_run(run, checkpoint, device)
        cfg = trained.config
        with _progress() as progress:
            chunks = -(-num // batch_size) if batch_size else 1
            callback = sampling_progress(progress, "sample", trained.schedule.evaluations * chunks)
            images = sample_images(
                trained.model, trained.schedule, trained.sigmas, num=num, res=cfg.data.res,
                seed=seed, denoise=cfg.noise.denoise, callback=callback, batch_size=batch_size)
        save_grid(images, out)
        console.print(f"wrote {num} samples from step {trained.step} to {out}")


@app.command()
def blend(
    run: RunOpt,
    k: Annotated[int, typer.Option("--k", help="Which column to write: 0 .. N+1 (eq. 4).")] = 9,
    n: Annotated[int, typer.Option("--n", help="N: interpolated images between the two chains.")] = 15,
    strips: Annotated[int, typer.Option(help="Number of strips (each shares one starting point).")] = 8,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(help="PNG of the k-th images; the strips go beside it.")] = Path(
        "blend.png"),
    source: Annotated[str | None, typer.Option("--from", help="Class at k = 0 (with --guidance).")] = None,
    target: Annotated[str | None, typer.Option("--to", help="Class at k = N+1 (with --guidance).")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier guidance weight W; 0 is plain eq. 4.")] = 0.0,
    report: Annotated[bool, typer.Option(help="Score the strips with the run's judge; with "
                                         "--guidance, also unguided strips of the same seed.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Blend two classes: strips of Langevin chains mixed by noise interpolation (eq. 4)."""
    with user_errors():
        from pegasus.blend import BlendRequest, blend_and_report, save_blend
        from pegasus.classifier import GUIDE_FILE, JUDGE_FILE, load_classifier
        from pegasus.generate import load_trained_run

        request = BlendRequest(n=n, k=k, strips=strips, seed=seed, source=source, target=target,
                               guidance=guidance)
        trained = load_trained_run(run, None, device)
        request.validate(trained.config.data.classes)
        dev = trained.sigmas.device
        guide = load_classifier(run / GUIDE_FILE, dev, what="guide") if guidance > 0 else None
        judge = load_classifier(run / JUDGE_FILE, dev, what="judge") if report else None
        with _progress() as progress:
            strips_, reports = blend_and_report(
                trained, request, guide, judge,
                lambda r: sampling_progress(progress, f"blend W={r.guidance:g}",
                                            trained.schedule.evaluations))
        kth, strips_png = save_blend(strips_, k, out)
        console.print(f"wrote the k={k} images to {kth} and the strips (k = 0..{n + 1}) to {strips_png}")
        if reports:
            src, tgt = reports[0].source, reports[0].target
            table = Table("guidance W", "strips", f"{src} left and {tgt} right",
                          f"mean p({src}) along the strip, k = 0..{n + 1}")
            for r in reports:
                table.add_row(f"{r.guidance:g}", str(r.strips), f"{100 * r.ends_correct:.1f}%",
                              " ".join(f"{p:.2f}" for p in r.source_probability))
            console.print(table)


def _train_classifier(run: Path, kind: str, iters: int, batch_size: int, seed: int,
                      device: str) -> None:
    with user_errors():
        from pegasus.classifier import train_for_run

        with _progress() as progress:
            task = progress.add_task(f"train {kind}", total=iters, info="")

            def report(step: int, total: int, loss: float | None) -> None:
                progress.update(task, completed=step, **({"info": f"loss {loss:.3f}"} if loss else {}))

            result = train_for_run(run, kind, iters=iters, batch_size=batch_size, seed=seed,
                                   device=device, progress=report)
        accuracy = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in result.accuracy.items())
        console.print(f"wrote {result.path}; held-out accuracy {accuracy}")


@app.command("train-guide")
def train_guide(
    run: RunOpt,
    iters: Annotated[int, typer.Option(help="Training steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train the noise-conditional classifier p(class | x, sigma) that guides `blend --guidance`."""
    _train_classifier(run, "guide", iters, batch_size, seed, device)


@app.command("train-judge")
def train_judge(
    run: RunOpt,
    iters: Annotated[int, typer.Option(help="Training steps.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    seed: SeedOpt = 1,
    device: DeviceOpt = "auto",
) -> None:
    """Train the independent clean-image classifier that scores blends (`blend --report`)."""
    _train_classifier(run, "judge", iters, batch_size, seed, device)


def _data_config(dataset: str, classes: str, res: int, data_dir: Path | None, download: bool):
    from pegasus.config import DataConfig, from_mapping

    return from_mapping(DataConfig, {"dataset": dataset, "classes": classes, "res": res,
                                     "data_dir": str(data_dir or ""), "download": download},
                        where="data")


DatasetOpt = Annotated[str, typer.Option(help="sprites, cifar10, stl10, folder:PATH or auto.")]
ClassesOpt = Annotated[str, typer.Option(help="Comma-separated class names.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    help="Where datasets are downloaded and cached (default: $PEGASUS_DATA_DIR or ~/.cache/pegasus).")]
DownloadOpt = Annotated[bool, typer.Option(help="Download missing CIFAR-10 / STL-10 files.")]


@app.command()
def data(
    dataset: DatasetOpt = "auto",
    classes: ClassesOpt = "horse,bird",
    res: Annotated[int, typer.Option(help="Resolution in pixels.")] = 32,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = True,
    preview: Annotated[Path | None, typer.Option(help="Write a preview grid PNG.")] = None,
) -> None:
    """Load (download, filter, resize and cache) a dataset and report what it holds."""
    with user_errors():
        import time

        import torch

        from pegasus.data import load_images, resolve_dataset
        from pegasus.images import save_grid

        config = _data_config(dataset, classes, res, data_dir, download)
        start = time.perf_counter()
        images = load_images(config)
        elapsed = time.perf_counter() - start
        for name, count in images.counts().items():
            console.print(f"{name}: {count}", highlight=False)
        console.print(f"dataset: {resolve_dataset(config)}", highlight=False)
        console.print(f"resolution: {res} px", highlight=False)
        console.print(f"cache: {images.cache or 'none (generated on the fly)'}", highlight=False)
        console.print(f"load time: {elapsed:.2f} s", highlight=False)
        if preview is not None:
            picks = torch.cat([torch.nonzero(images.labels == i).flatten()[:8]
                               for i in range(len(images.classes))])
            save_grid(images.images[picks].float() / 255, preview, nrow=8)
            console.print(f"preview: {preview}", highlight=False)


@app.command()
def sigmas(
    steps_per_level: Annotated[
        int, typer.Option("--steps-per-level", help="T, Langevin steps per level.")] = 5,
    dim: Annotated[
        int | None, typer.Option(help="Data dimension D (pixels x channels), without data.")] = None,
    sigma_max: Annotated[float | None, typer.Option(help="sigma_1; with data, Technique 1 finds it.")] = None,
    sigma_min: Annotated[float, typer.Option(help="sigma_L, the smallest noise level.")] = 0.01,
    levels: Annotated[int | None, typer.Option(help="L; given, only eps is chosen.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Plan from this dataset's images.")] = None,
    classes: ClassesOpt = "horse,bird",
    res: Annotated[int, typer.Option(help="Resolution in pixels, with --dataset.")] = 32,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = True,
    write: Annotated[Path | None, typer.Option(help="Write the plan as a [noise] config fragment.")] = None,
) -> None:
    """Plan the noise schedule: NCSNv2 Techniques 1 (sigma_1), 2 (levels) and 4 (eps)."""
    with user_errors():
        import time

        from pegasus import toml_writer
        from pegasus.planner import max_pairwise_distance, plan_schedule

        if dataset is None and (dim is None or sigma_max is None):
            raise UserError("give --dataset (with --classes and --res), or --dim and --sigma-max")
        if dataset is not None:
            import torch

            from pegasus.data import load_images

            images = load_images(_data_config(dataset, classes, res, data_dir, download)).images
            if torch.cuda.is_available():
                images = images.cuda()
            dim = images[0].numel()
            if sigma_max is None:
                start = time.perf_counter()
                sigma_max = max_pairwise_distance(images)
                console.print(f"technique 1 on {len(images)} images: {time.perf_counter() - start:.2f} s",
                              highlight=False)
        try:
            plan = plan_schedule(dim, sigma_max, steps_per_level, sigma_min, levels)
        except ValueError as e:
            raise UserError(str(e)) from None
        for name, value in [("dimension", plan.dim), ("sigma_1", f"{plan.sigma_max:.4g}"),
                            ("sigma_L", f"{plan.sigma_min:.4g}"), ("gamma", f"{plan.gamma:.5f}"),
                            ("levels", plan.levels), ("steps per level", plan.steps_per_level),
                            ("eps", f"{plan.eps:.3g}"), ("r(eps)", f"{plan.ratio:.4f}"),
                            ("evaluations per sample", plan.levels * plan.steps_per_level + 1)]:
            console.print(f"{name}: {value}", highlight=False)
        if write is not None:
            write.write_text(toml_writer.dumps({"noise": plan.as_config()}))
            console.print(f"wrote {write}", highlight=False)


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
