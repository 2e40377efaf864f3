"""`pegasus hybrid`: images of one class that grow another's parts (a horse with a bird's wings)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import (
    EvaluationBars,
    app,
    console,
    examples,
    load_model,
    stated,
    user_errors,
    with_sigmas,
)
from pegasus.cli.options import (
    FAST_FLAGS,
    AmpOpt,
    BatchSizeOpt,
    CompileOpt,
    DeviceOpt,
    OutImage,
    RunOpt,
    SamplerOpt,
    SeedOpt,
    SigmasOpt,
    StepsOpt,
)


@app.command(epilog=examples(
    "pegasus hybrid --run runs/demo --base horse --with bird --num 64 --seed 0 --out hybrids.png",
    "pegasus hybrid --run runs/demo-ct --num 64 --sampler consistency --steps 4",
    "pegasus hybrid --run runs/demo --num 1000 --folder pegasi/    # one PNG per image",
    "pegasus hybrid --run runs/demo --candidates 8 --guidance 20 --report",
))
def hybrid(
    run: RunOpt,
    base: Annotated[str | None, typer.Option(
        help="The class of the body (default: the run's first class).")] = None,
    with_: Annotated[str | None, typer.Option(
        "--with", help="The class whose parts grow on it (default: the run's other class).")] = None,
    num: Annotated[int | None, typer.Option(min=1, help="Hybrids to make (default 16).")] = None,
    seed: SeedOpt = 0,
    out: OutImage = Path("hybrids.png"),
    folder: Annotated[Path | None, typer.Option(
        file_okay=False, help="Write each hybrid as <folder>/NNNNNN.png instead of one grid; "
                              "the folder must be new or empty.")] = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    sigmas: SigmasOpt = None,
    guidance: Annotated[float | None, typer.Option(
        help="Guidance weight W (0 to 1000, default 10): the body toward its class, the region "
             "above its back toward the other's (the run's guide, pegasus train-guide).")] = None,
    candidates: Annotated[int | None, typer.Option(
        min=1, help="Regenerations of each image's region (default 4); the run's guide keeps "
                    "the most hybrid. Each costs one more chain.")] = None,
    report: Annotated[bool, typer.Option(
        "--report", help="Print how hybrid the images are by the run's guide.")] = False,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Make hybrids of two classes: a horse growing a bird's wings, say.

    Each is a sample of one class whose region above the back is regenerated toward the other
    class, the best of several candidates by the run's own guide."""
    with user_errors({"steps": "--steps", "sampler": "--sampler", "num": "--num",
                      "guidance": "--guidance", "candidates": "--candidates",
                      "batch_size": "--batch-size", **FAST_FLAGS}):
        sampler = with_sigmas(sampler, sigmas)
        from pegasus.errors import UserError
        from pegasus.fastpath import Execution
        from pegasus.images import image_format

        if folder is not None:
            if folder.exists() and any(folder.iterdir()):
                raise UserError(f"{folder} is not empty; give a new or empty folder")
        else:
            image_format(out)
        asked = Execution(compile=compile, amp=amp)
        model = load_model(run, None, None, device)
        with EvaluationBars() as bars:
            made = model.hybrid(seed=seed, execution=dataclasses.replace(asked, progress=bars),
                                **stated(base=base, parts=with_, num=num, sampler=sampler,
                                         steps=steps, guidance=guidance, candidates=candidates,
                                         batch_size=batch_size))
        where = _write(made, out, folder)
        console.print(f"wrote {len(made.images)} hybrids to {where} ({made.sampler}, "
                      f"{made.evaluations} evaluations per image with its candidates)",
                      highlight=False)
        if report:
            _print_report(made)

def _write(made, out: Path, folder: Path | None) -> str:
    """The hybrids as one grid at `out`, or one PNG each in `folder`; where they went."""
    from PIL import Image

    from pegasus.images import save_image_atomic, to_uint8

    if folder is None:
        return str(made.save(out))
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(to_uint8(made.images).numpy()):
        save_image_atomic(Image.fromarray(pixels), folder / f"{i:06d}.png")
    return f"{folder}/"


def _print_report(made) -> None:
    """How hybrid the images are by the run's guide, in one line."""
    scores = made.scores
    console.print(f"by the run's guide: hybrid {scores.hybrid.mean():.3f} on average, "
                  f"{(scores.hybrid > 0.5).float().mean():.1%} above 0.5; body "
                  f"p({made.base}) {scores.body.mean():.3f}, parts p({made.parts}) "
                  f"{scores.parts.mean():.3f}, region filled "
                  f"{scores.coverage.mean():.1%}", highlight=False)
