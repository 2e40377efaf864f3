"""The options several verbs share, each declared once (its flag, type and help)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.samplers import SAMPLERS

# --run-dir is the same option: torchrun's own parser takes a bare --run for its --run-path.
RunOpt = Annotated[Path, typer.Option(
    "--run", "--run-dir", file_okay=False,
    help="Run folder (config.toml, checkpoints/, samples/, logs/).")]
OptionalRunOpt = Annotated[Path | None, typer.Option(
    "--run", "--run-dir", file_okay=False,
    help="Run folder to draw from (its latest checkpoint).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    exists=True, dir_okay=False, help="Exported weights (.safetensors) instead of a run folder.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed: the same seed gives the same images.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field: SECTION.FIELD=VALUE, e.g. model.ngf=64."),
]
SamplerOpt = Annotated[str | None, typer.Option(
    help=f"Sampler: {', '.join(SAMPLERS)} (`pegasus samplers` says what each is, its default "
         f"budget and its options), options in brackets: 'heun\\[churn=10]'. Default: the run's "
         f"own, chosen by how it trained (`pegasus samplers --run R` says which); the output "
         f"names the one used.")]
SigmasOpt = Annotated[str | None, typer.Option(
    help="The consistency sampler's sigmas below sigma_1, comma-separated, largest first (one "
         "fewer than --steps): instead of those `pegasus search-sigmas` chose for the run.")]
StepsOpt = Annotated[int | None, typer.Option(
    min=1, help="Network evaluations per image (a budget: the sampler takes the largest grid "
                "that fits; als keeps T steps per level and re-plans eps).")]
ImageOpt = Annotated[str | None, typer.Option(
    help="An image file (centre-cropped and resized to the run's resolution) or sample:SEED, a "
         "sample of the run itself.")]
MaskOpt = Annotated[str | None, typer.Option(
    help="Where to regenerate: a black-and-white PNG (white = regenerate), or right-half, "
         "left-half, top, bottom, centre, box:x0,y0,x1,y1 (pixels of the run's resolution); "
         "inpainting's default is right-half.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    exists=True, dir_okay=False, help="A checkpoint file instead of the run's latest.")]
OutImage = Annotated[Path, typer.Option(
    dir_okay=False, help="Image file to write: .png, .jpg or .webp.")]
CompileOpt = Annotated[str, typer.Option(
    "--compile", help="torch.compile the network: auto (on a GPU of compute capability 7.0 or "
                      "later, for long work; cached in your own cache), on or off.")]
AmpOpt = Annotated[str, typer.Option(
    help="bf16 autocast for the network (the update and 1/sigma stay float32): auto (on a GPU "
         "with bf16 tensor cores: compute capability 8.0 or later), on (or bf16) or off.")]
FAST_FLAGS = {"compile": "--compile", "amp": "--amp"}  # the flags that set these fields
# The bound is tasks/steering.py's MAX_GUIDANCE, which checks it (tests/test_robustness.py holds
# this text to it).
GuidanceOpt = Annotated[float, typer.Option(
    help="Classifier guidance weight W, 0 (none) to 1000. It multiplies grad log p(class | x, "
         "sigma); far above 30 the guide alone moves the chains, and past 1000 their images "
         "only leave the picture's range.")]
SOURCE_FLAGS = {"weights": "--weights", "checkpoint": "--checkpoint"}
BatchSizeOpt = Annotated[int | None, typer.Option(
    min=1, help="Images per sampling batch (default: all on CPU; as many as fit on a GPU); it "
                "changes speed and memory, never the images.")]

# What `pegasus blend` blends and writes: the mode, two given pictures, the strips.
ColumnOpt = Annotated[str | None, typer.Option(
    "--k", help="Which column to write: 0 .. N+1 (eq. 4), or auto: each strip's own, where the "
    "judge's p(source) crosses 1/2. Default round(0.6 N): 9 at N = 15.")]
StripsOpt = Annotated[int | None, typer.Option(
    min=1, help="Number of strips (each shares one starting point; default 8, one for two "
                "pictures by ode, 4 by sdedit).")]
BlendOutOpt = Annotated[Path, typer.Option(
    dir_okay=False, help="Image of the k-th images; the strips go beside it as <out>-strips.")]
BlendModeOpt = Annotated[str | None, typer.Option(
    help="Drawn strips: eq4 (the default) interpolates the noise injected at every step "
         "(als, pc, cas, dpmpp-2m-sde, heun with churn); slerp the starting noise (an ODE: "
         "heun, dpmpp-2m). Two given pictures: ode (the default) interpolates their ODE "
         "latents; sdedit noises both to --strength and blends by eq. 4 from there.")]
ImageAOpt = Annotated[str | None, typer.Option(
    help="Blend two given pictures: the first (a file or sample:SEED), at k = 0.")]
ImageBOpt = Annotated[str | None, typer.Option(help="The second picture, at k = N+1.")]
StrengthOpt = Annotated[str, typer.Option(
    help="With --mode sdedit: how far both pictures are noised, a fraction of the schedule "
         "(0: sigma_L, 1: sigma_1) or sigma=VALUE.")]
