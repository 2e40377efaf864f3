"""`pegasus encode` and `decode`: an image to its latent noise by the probability-flow ODE, and
back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Option

from pegasus.cli.app import EvaluationBars, app, console, examples, load_model, stated, user_errors
from pegasus.cli.options import (
    SOURCE_FLAGS,
    DeviceOpt,
    ImageOpt,
    OptionalRunOpt,
    OutImage,
    StepsOpt,
    WeightsOpt,
)

OdeSamplerOpt = Annotated[str | None, Option(
    help="The ODE solver, both ways: heun (the default) or dpmpp-2m (its grid the run's plan "
         "for it).")]


@app.command(epilog=examples(
    "pegasus encode --run runs/demo --image horse.png --out horse.pt",
    "pegasus encode --run runs/demo --image sample:7 --out bird.pt --sampler dpmpp-2m --steps 40",
))
def encode(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    image: ImageOpt = None,
    out: Annotated[Path, Option(dir_okay=False, help="The latent file to write (.pt).")] = Path("latent.pt"),
    sampler: OdeSamplerOpt = None,
    steps: StepsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Encode an image to its latent at sigma_1 by the probability-flow ODE.

    It is decoded once too, to say how well it comes back (PSNR)."""
    with user_errors({"image": "--image", "sampler": "--sampler", "steps": "--steps",
                      **SOURCE_FLAGS}):
        from pegasus.atomic import check_writable
        from pegasus.errors import UserError
        from pegasus.fastpath import Execution
        from pegasus.tasks.encode import psnr
        from pegasus.tasks.inputs import given_image, resolve_image

        if image is None:
            raise UserError("give the image to encode: --image FILE or --image sample:SEED")
        if out.suffix != ".pt":
            raise UserError(f"{out}: a latent is a torch file; name it .pt")
        check_writable(out)
        model = load_model(run, None, weights, device)
        picture = resolve_image(model.trained, given_image(image, model.config.data.res))
        with EvaluationBars() as bars:
            execution = Execution(progress=bars)
            latent = model.encode(picture[None], steps=steps, execution=execution,
                                  **stated(sampler=sampler))
            again = model.decode(latent, execution=execution)
        latent.save(out)
        console.print(f"wrote {out}: the latent of {image} at sigma_1 ({latent.sampler}); it decodes "
                      f"back at {psnr(again[0], picture):.1f} dB PSNR", highlight=False)


@app.command(epilog=examples("pegasus decode --run runs/demo --latent horse.pt --out back.png"))
def decode(
    run: OptionalRunOpt = None,
    weights: WeightsOpt = None,
    latent: Annotated[Path, Option(exists=True, dir_okay=False,
                                   help="A latent file pegasus encode wrote.")] = Path("latent.pt"),
    out: OutImage = Path("decoded.png"),
    device: DeviceOpt = "auto",
) -> None:
    """Decode a latent back to its image by the probability-flow ODE (the run that encoded it)."""
    with user_errors({"latent": "--latent", **SOURCE_FLAGS}):
        from pegasus.fastpath import Execution
        from pegasus.images import image_format, save_grid
        from pegasus.tasks.encode import Latent

        image_format(out)
        model = load_model(run, None, weights, device)
        code = Latent.load(latent)
        with EvaluationBars() as bars:
            images = model.decode(code, execution=Execution(progress=bars))
        save_grid(images, out, padding=0)  # the picture itself, at the run's resolution
        console.print(f"wrote {out} from {latent}", highlight=False)
