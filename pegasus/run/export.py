"""Exporting a run's EMA weights to share them: safetensors with the config, sigmas and backbone
in the metadata (weights.py)."""

from __future__ import annotations

from pathlib import Path

from pegasus.atomic import check_writable
from pegasus.errors import FieldError, WriteError
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
    folder = RunDir(run_dir)
    if out is None:  # into the run's own exports/: from the run's own checkpoint only
        folder.check_own()
        if checkpoint is not None and not folder.holds(checkpoint):
            raise FieldError("out", f"is needed: {checkpoint} is not run {run_dir}'s own "
                                    f"checkpoint, so its weights do not go in that run's exports/")
    run = load_trained_run(run_dir, checkpoint, device="cpu")
    return export_weights(run, out if out is not None else folder.export_file(run.step))
