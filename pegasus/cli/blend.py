"""`pegasus blend`: strips of two classes mixed by noise interpolation (eq. 4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
    SOURCE_FLAGS,
    AmpOpt,
    BlendModeOpt,
    BlendOutOpt,
    ColumnOpt,
    CompileOpt,
    DeviceOpt,
    GuidanceOpt,
    ImageAOpt,
    ImageBOpt,
    ImageOpt,
    MaskOpt,
    OptionalRunOpt,
    SeedOpt,
    SigmasOpt,
    StepsOpt,
    StrengthOpt,
    StripsOpt,
    WeightsOpt,
)


@app.command(epilog=examples(
    "pegasus blend --run runs/demo --k 9 --n 15 --strips 8 --out blend.png",
    "pegasus blend --run runs/demo --from horse --to bird --guidance 10 --report",
    "pegasus blend --run runs/demo --from horse --to bird --guidance 10 --k auto",
    "pegasus blend --weights model.safetensors --k 9 --n 15",
    "pegasus blend --run runs/demo --sampler heun --mode slerp --k 9 --n 15",
))
def blend(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    k: ColumnOpt = None,
    n: Annotated[int, typer.Option("--n", help="N: interpolated images between the two "
                                   "chains.")] = 15,
    strips: StripsOpt = None,
    seed: SeedOpt = 0,
    out: BlendOutOpt = Path("blend.png"),
    source: Annotated[str | None, typer.Option("--from", help="Class at k = 0 (with --guidance).")] = None,
    target: Annotated[str | None, typer.Option("--to", help="Class at k = N+1 (with --guidance).")] = None,
    guidance: GuidanceOpt = 0.0,
    report: Annotated[bool, typer.Option(help="Score the strips with the run's judge (and with "
                                         "--guidance unguided ones of the seed).")] = False,
    device: DeviceOpt = "auto",
    sampler: Annotated[str | None, typer.Option(
        help="Sampler (`pegasus samplers`). Default: the run's own where it serves the mode, "
             "else als for a masked blend and heun for slerp and two pictures by ode.")] = None,
    steps: StepsOpt = None,
    sigmas: SigmasOpt = None,
    mode: BlendModeOpt = None,
    image: ImageOpt = None,
    mask: MaskOpt = None,
    image_a: ImageAOpt = None,
    image_b: ImageBOpt = None,
    strength: StrengthOpt = "0.5",
    compile: CompileOpt = "auto",
    amp: AmpOpt = "auto",
) -> None:
    """Blend two classes: strips of chains mixed by noise interpolation (eq. 4)."""
    flags = {"k": "--k", "n": "--n", "strips": "--strips", "guidance": "--guidance",
             "steps": "--steps", "sampler": "--sampler", "mode": "--mode", "image": "--image",
             "mask": "--mask", "image_a": "--image-a", "image_b": "--image-b",
             "strength": "--strength"}
    with user_errors({**flags, **SOURCE_FLAGS, **FAST_FLAGS}):
        sampler = with_sigmas(sampler, sigmas)
        from pegasus.errors import UserError
        from pegasus.fastpath import Execution
        from pegasus.tasks.blend_files import check_blend_output

        check_blend_output(out)
        asked = Execution(compile=compile, amp=amp)
        if image_a is not None or image_b is not None:
            _blend_pictures(run, weights, device, image_a, image_b, mode, n, k, strips,
                            seed, strength, sampler, steps, source, target, guidance, mask,
                            asked, out)
            return
        if (image is None) != (mask is None):
            raise UserError("a masked blend needs both --image and --mask")
        model = load_model(run, None, weights, device)
        with EvaluationBars() as bars:
            result = model.blend(n=n, seed=seed, source=source, target=target,
                                 guidance=guidance, steps=steps, image=image, mask=mask,
                                 report=report, execution=dataclasses.replace(asked, progress=bars),
                                 **stated(k=k, strips=strips, sampler=sampler, mode=mode))
        _say(result, *result.save(out), n)


def _say(result, kth: Path, strips_png: Path, n: int) -> None:
    """What a drawn blend wrote and, with --report, the judge's scores of its strips."""
    chosen = _columns(result.columns)
    console.print(f"wrote the {chosen} images to {kth} and the strips (k = 0..{n + 1}) to "
                  f"{strips_png}", highlight=False)
    if result.reports:
        _print_reports(result.reports, chosen, n)


def _columns(columns: list[int]) -> str:
    """k=9, or each strip's own: k=8,9,9,10."""
    return f"k={columns[0]}" if len(set(columns)) == 1 else f"k={','.join(map(str, columns))}"


def _print_reports(reports, chosen: str, n: int) -> None:
    src, tgt = reports[0].source, reports[0].target
    table = Table("guidance W", "strips", f"{src} left and {tgt} right",
                  f"mean p({src}) along the strip, k = 0..{n + 1}", "monotonicity",
                  "balance at k", "smoothness ± spread", "copies of training images at k",
                  "KID x 1e3 at k")
    for r in reports:
        s = r.scores
        table.add_row(f"{r.guidance:g}", str(r.strips), f"{100 * r.ends_correct:.1f}%",
                      " ".join(f"{p:.2f}" for p in r.source_probability),
                      f"{s.monotonicity:.2f}", f"{s.balance:.2f}",
                      f"{s.smoothness:.3g} ± {s.smoothness_spread:.2g}",
                      f"{100 * r.memorised:.1f}%",
                      "-" if r.kid is None else f"{1e3 * r.kid:.1f} ± {1e3 * r.kid_std:.1f}")
    console.print(table)
    for r in reports:
        console.print(f"W={r.guidance:g}: columns {_columns(r.scores.columns)}", highlight=False)
    for r in reports:
        console.print(f"W={r.guidance:g}: hybrid at k (a {src} body with {tgt} parts, by the "
                      f"judge) {r.hybrid:.2f}, {100 * r.hybrid_share:.0f}% above 0.5",
                      highlight=False)


def _blend_pictures(run, weights, device, image_a, image_b, mode, n, k, strips, seed, strength,
                    sampler, steps, source, target, guidance, mask, asked, out) -> None:
    from pegasus.errors import UserError
    from pegasus.tasks.blend_files import save_blend
    from pegasus.tasks.strips import resolve_column

    if image_a is None or image_b is None:
        raise UserError("blending two pictures needs both --image-a and --image-b")
    model = load_model(run, None, weights, device)
    with EvaluationBars() as bars:
        result = model.blend_pictures(image_a, image_b, n=n, seed=seed, strength=strength,
                                      steps=steps, source=source, target=target,
                                      guidance=guidance, mask=mask,
                                      execution=dataclasses.replace(asked, progress=bars),
                                      **stated(mode=mode, k=k, strips=strips, sampler=sampler))
    column = resolve_column(k, n)
    kth, strips_png = save_blend(result.strips, column, out)
    console.print(f"wrote the k={column} images to {kth} and the strips (k = 0..{n + 1}) to "
                  f"{strips_png}; {result.describe()}", highlight=False)
