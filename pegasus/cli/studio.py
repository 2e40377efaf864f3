"""`pegasus studio`: blends and winged horses of a run, drawn live in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pegasus.cli.app import app, console, examples, user_errors
from pegasus.cli.options import DeviceOpt, RunOpt


@app.command(epilog=examples(
    "pegasus studio --run runs/demo-ct",
    "pegasus studio --run runs/demo --port 8000 --out out/favourites",
    "pegasus studio --run runs/demo-ct --host 0.0.0.0    # to other machines: serves no login",
))
def studio(
    run: RunOpt,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free "
                                      "one).")] = 7860,
    host: Annotated[str, typer.Option(help="Address to listen on; the default serves this "
                                      "machine only.")] = "127.0.0.1",
    out: Annotated[Path, typer.Option(file_okay=False, help="Folder for the favourites (PNG "
                                      "and the command line that remakes each).")] = Path("studio"),
    device: DeviceOpt = "auto",
) -> None:
    """Serve a web page that blends two classes of a run live, with a tray of favourites.

    Move k, the guidance, the seed, the sampler or its budget and the strip is drawn again
    (a draw still running is cancelled). Each favourite is saved as a PNG with the pegasus
    command line that remakes it byte for byte. Ctrl-C ends it. Needs the studio extra."""
    with user_errors({"port": "--port", "host": "--host", "out": "--out"}):
        from pegasus.studio import serve

        def ready(url: str) -> None:
            console.print(f"studio of {run} at {url} (favourites in {out}/; Ctrl-C to end)",
                          highlight=False, soft_wrap=True)

        serve(run, out=out, host=host, port=port, device=device, ready=ready)
        console.print("studio ended", highlight=False)
