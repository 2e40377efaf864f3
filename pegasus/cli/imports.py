"""`pegasus import ncsnv2`: a checkpoint of the reference NCSNv2 code as a pegasus run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import app, console, examples, user_errors, warn
from pegasus.cli.options import RunOpt

imports = typer.Typer(help="Bring other programs' checkpoints in as pegasus runs.",
                      no_args_is_help=True)
app.add_typer(imports, name="import")


@imports.command("ncsnv2", epilog=examples(
    "pegasus import ncsnv2 exp/logs/cifar10/checkpoint_300000.pth --run runs/cifar-ref",
    "pegasus import ncsnv2 checkpoint.pth --run runs/celeba --config celeba.yml",
    "pegasus import ncsnv2 checkpoint.pth --run runs/cifar-ref --config cifar10   # a preset",
    "pegasus train --run runs/cifar-ref --resume --dataset cifar10 --classes horse,bird --iters 310000",
))
def ncsnv2(
    checkpoint: Annotated[Path, typer.Argument(
        dir_okay=False, help="The reference's checkpoint_<step>.pth (or checkpoint.pth).")],
    run: RunOpt,
    config: Annotated[str | None, typer.Option(
        help="The run's config when no config.yml lies beside the checkpoint or above it: a "
             "reference YAML file, or a pegasus preset such as cifar10.")] = None,
) -> None:
    """Import a reference NCSNv2 checkpoint as a run: sample it, blend it, resume training it."""
    with user_errors({"config": "--config"}):
        from pegasus.interop.ncsnv2 import import_checkpoint

        path = import_checkpoint(checkpoint, run, config, warn=warn)
        console.print(f"imported {checkpoint} as run {run} ({path.name}); sample it with: "
                      f"pegasus sample --run {run}", highlight=False)
