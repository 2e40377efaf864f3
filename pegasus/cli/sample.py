"""`pegasus sample` and `export`: drawing from a trained run or shared weights, and sharing it."""

from __future__ import annotations

import contextlib
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
    user_errors,
    with_sigmas,
)
from pegasus.cli.options import (
    FAST_FLAGS,
    SOURCE_FLAGS,
    AmpOpt,
    BatchSizeOpt,
    CheckpointOpt,
    CompileOpt,
    DeviceOpt,
    OptionalRunOpt,
    OutImage,
    RunOpt,
    SamplerOpt,
    SeedOpt,
    SigmasOpt,
    StepsOpt,
    WeightsOpt,
)


@app.command(epilog=examples(
    "pegasus sample --run runs/demo --num 64 --seed 0 --out samples.png    # the run's own sampler",
    "pegasus sample --run runs/demo --num 4 --seed 0    # the first 4 of the 64 above",
    "pegasus sample --weights model.safetensors --num 16 --out shared.jpg",
    "pegasus sample --run runs/demo --sampler heun --steps 35    # 35 network evaluations",
    "pegasus sample --run runs/cifar --num 10000 --folder fid-samples/    # one PNG per image",
    "pegasus sample --run runs/cifar --num 50000 --folder fid-samples/    # continues it to 50000",
    "pegasus sample --run runs/cifar --num 10000 --out samples.npz        # uint8 NHWC, for FID",
    "torchrun --nproc_per_node 8 -m pegasus -- sample --run runs/cifar --num 50000 --folder fid/",
))
def sample(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num: Annotated[int, typer.Option(min=1, help="Number of images.")] = 64,
    seed: SeedOpt = 0,
    out: OutImage = Path("samples.png"),
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = "auto",
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    sigmas: SigmasOpt = None,
    compile: CompileOpt = "auto",
    amp: AmpOpt = "auto",
    folder: Annotated[Path | None, typer.Option(
        file_okay=False, help="Write each image as <folder>/NNNNNN.png, batch by batch (many "
                              "images, bounded memory), instead of one grid. A folder begun by "
                              "the same job (weights, sampler, seed, precision) is continued: "
                              "the images missing there are drawn. Under torchrun each rank "
                              "draws its share.")] = None,
) -> None:
    """Draw images from a run's EMA weights (or exported weights): a grid, PNGs or an .npz."""
    with user_errors({"steps": "--steps", "sampler": "--sampler", "num": "--num",
                      "batch_size": "--batch-size", **SOURCE_FLAGS, **FAST_FLAGS}):
        sampler = with_sigmas(sampler, sigmas)
        from pegasus.distributed import group, launched
        from pegasus.errors import UserError
        from pegasus.fastpath import Execution
        from pegasus.images import check_npz, image_format
        from pegasus.run.job import SampleFolder

        # Before any slow work: the output can be written and the switches are valid.
        if folder is not None:
            SampleFolder(folder).check()
        elif launched():
            raise UserError("under torchrun, sample writes a --folder, each rank its share "
                            "of the images; a grid or an .npz is one process's work")
        elif out.suffix == ".npz":
            check_npz(out)
        else:
            image_format(out)
        asked = Execution(compile=compile, amp=amp)
        with (group(device, given()) if launched() else contextlib.nullcontext() as ctx,
              EvaluationBars() as bars):
            model = load_model(run, checkpoint, weights, str(ctx.device) if ctx else device)
            job = model.job(num=num, sampler=sampler, steps=steps, batch_size=batch_size,
                            execution=dataclasses.replace(asked, progress=bars))
            grid = folder is None and out.suffix != ".npz"
            written = job.write_grid(out, seed) if grid else _write_many(job, out, folder, seed, ctx)
        if written.count == 0:
            console.print(f"{folder} already holds {written.first} samples of this job, the "
                          f"{num} asked for among them; nothing to draw", highlight=False)
            return
        which = f"(images {written.first} to {num - 1}) " if written.first else ""
        console.print(f"wrote {written.count} samples {which}from step {model.step} to "
                      f"{written.path} ({job.plan.name}, {written.evaluations} evaluations per "
                      f"image)", highlight=False)


def _write_many(job, out: Path, folder: Path | None, seed: int, ctx):
    """The job's images as a folder of PNGs or an .npz, with a bar over the images."""
    with StepsBar(f"sample ({job.plan.name})", "") as bar:
        if folder is not None:
            return job.write_folder(folder, seed, bar.images, ctx)
        return job.write_npz(out, seed, bar.images)


@app.command(epilog=examples(
    "pegasus export --run runs/demo --out model.safetensors",
    "pegasus sample --weights model.safetensors --num 16",
    "pegasus export --run runs/cifar --format ncsnv2 --out exp/logs/cifar/checkpoint_300000.pth",
))
def export(
    run: RunOpt,
    out: Annotated[Path | None, typer.Option(
        dir_okay=False, help="The file to write (safetensors: default the run's "
                             "exports/weights-<step>.safetensors; ncsnv2: a .pth).")] = None,
    checkpoint: CheckpointOpt = None,
    format_: Annotated[str, typer.Option(
        "--format", help="safetensors: the EMA weights to share; ncsnv2: the reference NCSNv2 "
                         "code's checkpoint list, with a config.yml beside it.")] = "safetensors",
) -> None:
    """Export a run: safetensors to share (`sample --weights`), or the reference's format.

    safetensors: the EMA weights with the config, sigmas and backbone in the file's metadata
    (JSON); no run folder and no pickle is needed to use it. ncsnv2: what the reference's runner
    saves (raw weights, Adam, epoch, step, EMA), for it to load with strict=True."""
    with user_errors({"format": "--format", "out": "--out"}):
        from pegasus.errors import FieldError

        if format_ == "ncsnv2":
            from pegasus.interop.ncsnv2 import export_checkpoint

            if out is None:
                raise FieldError("out", "is needed with --format ncsnv2: name the .pth to write")
            path = export_checkpoint(run, out, checkpoint)
            console.print(f"wrote {path} and {path.with_name('config.yml')}", highlight=False)
            return
        if format_ != "safetensors":
            raise FieldError("format", f"must be safetensors or ncsnv2, got {format_!r}")
        from pegasus.run.export import export_run

        path = export_run(run, out, checkpoint)
        console.print(f"wrote {path}", highlight=False)
