"""`pegasus inpaint`: keep part of an image and regenerate the rest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import EvaluationBars, app, console, examples, load_model, stated, user_errors
from pegasus.cli.options import (
    FAST_FLAGS,
    SOURCE_FLAGS,
    AmpOpt,
    CompileOpt,
    DeviceOpt,
    GuidanceOpt,
    ImageOpt,
    MaskOpt,
    OptionalRunOpt,
    OutImage,
    SeedOpt,
    StepsOpt,
    WeightsOpt,
)


@app.command(epilog=examples(
    "pegasus inpaint --run runs/demo --image horse.png --mask right-half --num 8",
    "pegasus inpaint --run runs/demo --image sample:3 --mask box:2,2,10,8 --out wings.png",
    "pegasus inpaint --run runs/demo --image sample:3 --mask top --toward bird --guidance 10",
    "pegasus inpaint --run runs/demo --image photo.jpg --mask wings-mask.png --sampler pc",
))
def inpaint(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    mask: MaskOpt = None,
    num: Annotated[int | None, typer.Option(min=1, help="Completions to draw (default 8).")] = None,
    seed: SeedOpt = 0,
    out: OutImage = Path("inpaint.png"),
    sampler: Annotated[str | None, typer.Option(
        help="Sampler (`pegasus samplers`): one that inpaints. Default: the run's own if it "
             "inpaints, else als.")] = None,
    steps: StepsOpt = None,
    toward: Annotated[str | None, typer.Option(
        help="Guide the regenerated pixels toward this class (with --guidance; the run's "
             "guide classifier, pegasus train-guide).")] = None,
    guidance: GuidanceOpt = 0.0,
    device: DeviceOpt = "auto",
    compile: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Keep part of an image and regenerate the rest (white in the mask).

    Writes a row of the input, the mask, what is kept and the completions."""
    with user_errors({"image": "--image", "mask": "--mask", "steps": "--steps",
                      "sampler": "--sampler", "num": "--num", "toward": "--toward",
                      "guidance": "--guidance", **SOURCE_FLAGS, **FAST_FLAGS}):
        from pegasus.errors import UserError
        from pegasus.fastpath import Execution
        from pegasus.images import image_format, save_grid

        if image is None:
            raise UserError("give the image to complete: --image FILE or --image sample:SEED")
        image_format(out)
        asked = Execution(compile=compile, amp=amp)
        model = load_model(run, None, weights, device)
        with EvaluationBars() as bars:
            result = model.inpaint(image, seed=seed, steps=steps, toward=toward,
                                   guidance=guidance,
                                   execution=dataclasses.replace(asked, progress=bars),
                                   **stated(mask=mask, num=num, sampler=sampler))
        row = result.row()
        save_grid(row, out, nrow=len(row), upscale=True)
        console.print(f"wrote {out}: the image, the mask, what is kept, and "
                      f"{len(result.completions)} completions ({result.sampler}, "
                      f"{result.evaluations} evaluations)", highlight=False)
