"""`pegasus data`, `sigmas`, `plugins`, `backbones` and `device`: what the data, the schedule,
the installed plugins and the machine's fast path look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pegasus.cli.app import app, console, examples, user_errors, warn
from pegasus.cli.options import DeviceOpt, OptionalRunOpt
from pegasus.errors import UserError


def _data_config(dataset: str, classes: str, res: int, data_dir: Path | None, download: bool):
    from pegasus.coerce import from_mapping
    from pegasus.config import DataConfig

    return from_mapping(DataConfig, {"dataset": dataset, "classes": classes, "res": res,
                                     "data_dir": str(data_dir or ""), "download": download},
                        where="data")


DatasetOpt = Annotated[str, typer.Option(help="sprites, cifar10, stl10, folder:PATH or auto.")]
ClassesOpt = Annotated[str, typer.Option(help="Comma-separated class names.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    help="Where datasets are downloaded and cached (default: $PEGASUS_DATA_DIR or ~/.cache/pegasus).")]
DownloadOpt = Annotated[bool, typer.Option(help="Download missing CIFAR-10 / STL-10 files.")]


@app.command(epilog=examples(
    "pegasus data --dataset stl10 --classes horse,bird --res 64 --preview preview.png",
    "pegasus data --dataset folder:~/pictures --classes cats,dogs --res 64",
))
def data(
    dataset: DatasetOpt = "auto",
    classes: ClassesOpt = "horse,bird",
    res: Annotated[int, typer.Option(min=1, help="Resolution in pixels.")] = 32,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = True,
    preview: Annotated[Path | None, typer.Option(dir_okay=False, help="Write a preview grid "
                                                 "(.png, .jpg or .webp).")] = None,
) -> None:
    """Load (download, filter, resize and cache) a dataset and report what it holds."""
    with user_errors():
        import time

        import torch

        from pegasus.data import load_images, resolve_dataset
        from pegasus.images import image_format, save_grid

        if preview is not None:
            image_format(preview)
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


@app.command(epilog=examples(
    "pegasus sigmas --dataset cifar10 --classes horse,bird --res 32 --steps-per-level 5",
    "pegasus sigmas --dim 3072 --sigma-max 50 --levels 232 --steps-per-level 5",
    "pegasus sigmas --dataset sprites --res 16 --steps-per-level 3 --write noise.toml",
))
def sigmas(
    steps_per_level: Annotated[
        int, typer.Option("--steps-per-level", min=1, help="T, Langevin steps per level.")] = 5,
    dim: Annotated[
        int | None, typer.Option(min=1, help="Data dimension D (pixels x channels), without data.")] = None,
    sigma_max: Annotated[float | None, typer.Option(help="sigma_1; with data, Technique 1 finds it.")] = None,
    sigma_min: Annotated[float, typer.Option(help="sigma_L, the smallest noise level.")] = 0.01,
    levels: Annotated[int | None, typer.Option(min=2, help="L; given, only eps is chosen.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Plan from this dataset's images.")] = None,
    classes: ClassesOpt = "horse,bird",
    res: Annotated[int, typer.Option(min=1, help="Resolution in pixels, with --dataset.")] = 32,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = True,
    write: Annotated[Path | None, typer.Option(
        dir_okay=False, help="Write the plan as a \\[noise] config fragment (TOML).")] = None,
) -> None:
    """Plan the noise schedule: NCSNv2 Techniques 1 (sigma_1), 2 (levels) and 4 (eps)."""
    with user_errors():
        import time

        import tomli_w

        from pegasus.atomic import atomic_write, check_writable
        from pegasus.noise.techniques import choose_schedule, max_pairwise_distance

        if dataset is None and (dim is None or sigma_max is None):
            raise UserError("give --dataset (with --classes and --res), or --dim and --sigma-max")
        if write is not None:
            check_writable(write)
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
            chosen = choose_schedule(dim, sigma_max, steps_per_level, sigma_min, levels)
        except ValueError as e:
            raise UserError(str(e)) from None
        for name, value in [("dimension", chosen.dim), ("sigma_1", f"{chosen.sigma_max:.4g}"),
                            ("sigma_L", f"{chosen.sigma_min:.4g}"), ("gamma", f"{chosen.gamma:.5f}"),
                            ("levels", chosen.levels), ("steps per level", chosen.steps_per_level),
                            ("eps", f"{chosen.eps:.3g}"), ("r(eps)", f"{chosen.ratio:.4f}"),
                            ("evaluations per sample", chosen.levels * chosen.steps_per_level + 1)]:
            console.print(f"{name}: {value}", highlight=False)
        if write is not None:
            atomic_write(write, lambda f: tomli_w.dump({"noise": chosen.as_config()}, f))
            console.print(f"wrote {write}", highlight=False)


@app.command(epilog=examples("pegasus plugins", "pegasus plugins --json",
                             "PEGASUS_DISABLE_PLUGINS=resnet pegasus plugins"))
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
        warn(line)


@app.command(epilog=examples("pegasus backbones"))
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


# Below this many columns (a pipe gets 80) the table's last column would hold a word a line:
# each sampler is then a paragraph instead.
TABLE_WIDTH = 150


@app.command(epilog=examples("pegasus samplers", "pegasus samplers --run runs/demo",
                             "pegasus sample --run runs/demo --sampler heun --steps 29"))
def samplers(
    run: OptionalRunOpt = None,
) -> None:
    """Show each sampler: what it is, its default budget, and what it can do.

    With --run, also the sampler that run draws with unless told, and why."""
    with user_errors():
        import torch

        from pegasus.samplers import SAMPLERS, sampler_spec
        from pegasus.samplers.plan import sampler_options

        rows = []
        for name in SAMPLERS:
            spec = sampler_spec(name)
            budget = ("the run's schedule: L*T + 1" if spec.default_steps is None
                      else str(spec.default_steps))
            start = "uniform noise" if spec.start == "uniform" else "data mean + sigma_1 z"
            # Whether a chain of several steps with the default options injects noise (one
            # consistency step, say, injects none).
            noise = "yes" if spec.stochastic({}, torch.ones(3)) else "no (an ODE)"
            samples = "a consistency-tuned run" if spec.learns == "consistency" else "a score"
            rows.append((name, budget, start, noise, "yes" if spec.inpaints else "no",
                         ", ".join(sampler_options(spec)) or "-", samples, spec.summary))
        _sampler_rows(rows)
        if run is not None:
            _run_default(run)


def _sampler_rows(rows: list[tuple[str, ...]]) -> None:
    heads = ("sampler", "evaluations by default", "starts at", "injects noise", "inpaints",
             "options", "samples", "what it is")
    if console.width >= TABLE_WIDTH:
        table = Table(*heads)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for name, *fields, summary in rows:
        console.print(f"[bold]{name}[/]: {summary}", highlight=False)
        console.print("  " + "; ".join(f"{head}: {value}" for head, value in
                                       zip(heads[1:-1], fields, strict=True)), highlight=False)


def _run_default(run: Path) -> None:
    """The sampler a run draws with unless told (TrainedRun.plan), and why."""
    from pegasus.api import load_run

    trained = load_run(run, device="cpu").trained
    plan = trained.plan()
    why = ("it is consistency-tuned" if trained.model.learns == "consistency" else
           "it trained on NCSNv2's levels" if trained.config.noise.training == "levels" else
           f"it trained on a continuum of sigmas ({trained.config.noise.training})")
    console.print(f"{run} draws with {plan.name} in {plan.evaluations} evaluations unless told: "
                  f"{why}", highlight=False)


@app.command(epilog=examples("pegasus device", "pegasus device --run runs/demo",
                             "pegasus device --json    # to paste into a bug report"))
def device(
    device: DeviceOpt = "auto",
    run: OptionalRunOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the device, torch and what the fast path does there (for bug reports).

    What each switch does on auto and why, the compiled networks your cache keeps; with --run,
    the fast path timings that run keeps."""
    with user_errors():
        from pegasus.device_report import device_report
        from pegasus.devices import resolve_device

        report = device_report(resolve_device(device), run)
        if as_json:
            print(json.dumps(report, indent=2))
            return
        for name, value in report.items():
            if isinstance(value, str):
                console.print(f"{name}: {value}", highlight=False)
        for switch, rule in report["auto"].items():
            console.print(f"{switch} auto: {rule}", highlight=False)
        cache = report["compile cache"]
        console.print(f"compiled networks cached: {cache['compiled networks']} ({cache['MiB']} "
                      f"MiB in {cache['path']})", highlight=False)
        if run is not None:
            r = report["run"]
            console.print(f"run {run}: fast path timings: {len(r['timed'])}", highlight=False)
            for entry in r["timed"]:
                times = ", ".join(f"{mode} {'out of memory' if ms is None else f'{ms:.1f} ms'}"
                                  for mode, ms in (entry.get("ms") or {}).items())
                console.print(f"  timed on {entry.get('gpu', '?')} (torch {entry.get('torch', '?')})"
                              f" for {entry.get('work', '?')}: {times}; chosen: "
                              f"{entry.get('chosen', '?')}", highlight=False)
