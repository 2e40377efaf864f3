"""Exporting a run's EMA weights to share them: safetensors with the config, sigmas and backbone
in the metadata (weights.py)."""

from __future__ import annotations

from pathlib import Path

from pegasus.atomic import check_writable
from pegasus.errors import WriteError
from pegasus.run.layout import RunDir
from pegasus.run.load import load_trained_run
from pegasus.run.weights import export_weights


def export_run(run_dir: Path, out: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Export a run's latest (or given) checkpoint as shareable weights (weights.py); `out`
    defaults to the run's exports/ folder."""
    if out is not None:
        if Path(out).suffix != ".safetensors":
            raise WriteError(f"cannot write {out}: exported weights are safetensors; name the file "
                             f"*.safetensors")
        check_writable(Path(out))
    run = load_trained_run(run_dir, checkpoint, device="cpu")
    return export_weights(run, out if out is not None else RunDir(run_dir).export_file(run.step))
