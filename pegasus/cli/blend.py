"""`pegasus blend`: strips of two classes mixed by noise interpolation (eq. 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pegasus.cli.app import EvaluationBars, app, console, examples, load_model, user_errors
from pegasus.cli.options import (
    FAST_FLAGS,
    SOURCE_FLAGS,
    AmpOpt,
    CompileOpt,
    DeviceOpt,
    ImageOpt,
    MaskOpt,
    OptionalRunOpt,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
    WeightsOpt,
)


@app.command(epilog=examples(
    "pegasus blend --run runs/demo --k 9 --n 15 --strips 8 --out blend.png",
    "pegasus blend --run runs/demo --from horse --to bird --guidance 10 --report",
    "pegasus blend --weights model.safetensors --k 9 --n 15",
    "pegasus blend --run runs/demo --sampler heun --mode slerp --k 9 --n 15",
))
def blend(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[int, typer.Option("--k", help="Which column to write: 0 .. N+1 (eq. 4).")] = 9,
    n: Annotated[int, typer.Option("--n", help="N: interpolated images between the two "
                                   "chains.")] = 15,
    strips: Annotated[int, typer.Option(min=1, help="Number of strips (each shares one starting "
                                        "point).")] = 8,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(dir_okay=False, help="Image of the k-th images; the strips "
                                      "go beside it as <out>-strips.")] = Path("blend.png"),
    source: Annotated[str | None, typer.Option("--from", help="Class at k = 0 (with --guidance).")] = None,
    target: Annotated[str | None, typer.Option("--to", help="Class at k = N+1 (with --guidance).")] = None,
    guidance: Annotated[float, typer.Option(min=0, help="Classifier guidance weight W; 0 is plain "
                                            "eq. 4.")] = 0.0,
    report: Annotated[bool, typer.Option(help="Score the strips with the run's judge; with "
                                         "--guidance, also unguided strips of the same seed.")] = False,
    device: DeviceOpt = "auto",
    sampler: SamplerOpt = "als",
    steps: StepsOpt = None,
    mode: Annotated[str, typer.Option(
        help="eq4: interpolate the noise injected at every step (als, pc, cas, heun with churn); "
             "slerp: interpolate the starting noise spherically (heun, the deterministic ODE).")] = "eq4",
    image: ImageOpt = None,
    mask: MaskOpt = None,
    compile_: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Blend two classes: strips of chains mixed by noise interpolation (eq. 4)."""
    with user_errors({"k": "--k", "n": "--n", "strips": "--strips", "guidance": "--guidance",
                      "steps": "--steps", "sampler": "--sampler", "mode": "--mode",
                      "image": "--image", "mask": "--mask", **SOURCE_FLAGS, **FAST_FLAGS}):
        from pegasus.errors import UserError
        from pegasus.fastpath import check_switches
        from pegasus.tasks.blend_files import check_blend_output

        check_blend_output(out)
        check_switches(compile=compile_, amp=amp)
        if (image is None) != (mask is None):
            raise UserError("a masked blend needs both --image and --mask")
        model = load_model(run, None, weights, device)
        with EvaluationBars() as bars:
            result = model.blend(n, k, strips, seed, source=source, target=target,
                                 guidance=guidance, sampler=sampler, steps=steps, mode=mode,
                                 image=image, mask=mask, report=report, compile=compile_, amp=amp,
                                 progress=bars)
        kth, strips_png = result.save(out)
        console.print(f"wrote the k={k} images to {kth} and the strips (k = 0..{n + 1}) to "
                      f"{strips_png}", highlight=False)
        if result.reports:
            src, tgt = result.reports[0].source, result.reports[0].target
            table = Table("guidance W", "strips", f"{src} left and {tgt} right",
                          f"mean p({src}) along the strip, k = 0..{n + 1}")
            for r in result.reports:
                table.add_row(f"{r.guidance:g}", str(r.strips), f"{100 * r.ends_correct:.1f}%",
                              " ".join(f"{p:.2f}" for p in r.source_probability))
            console.print(table)
