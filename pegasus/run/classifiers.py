"""A run's classifier files: the guide (guide.pt) and the judge (judge.pt), saved atomically
and loaded without running pickled code (checkpoint.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from pegasus.atomic import atomic_write
from pegasus.errors import CheckpointError, RunError, first_line
from pegasus.model.classifier import Classifier, ClassifierSpec
from pegasus.run.checkpoint import FORMAT, VERSION, load_checkpoint
from pegasus.run.layout import RunDir


def save_classifier(model: Classifier, path: Path, **extra) -> Path:
    payload = {"format": FORMAT, "version": VERSION, "spec": asdict(model.spec),
               "state": model.state_dict(), **extra}
    atomic_write(Path(path), lambda f: torch.save(payload, f))
    return Path(path)


def load_classifier(run_dir: Path, kind: str, device: torch.device | str = "cpu",
                    classes: list[str] | None = None) -> Classifier:
    """The run's guide or judge, each way its file can be wrong one line (it was damaged, is
    another program's, or classifies other `classes` than the run's, when given)."""
    path = RunDir(run_dir).classifier(kind)
    if not path.is_file():
        raise RunError(f"this run has no {kind} ({path} is missing); train its {kind} first "
                       f"(pegasus train-{kind})")
    state = load_checkpoint(path)
    if not isinstance(state.get("spec"), dict) or not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{path} is not a pegasus classifier")
    try:
        model = Classifier(ClassifierSpec(**state["spec"]))
        model.load_state_dict(state["state"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a pegasus {kind} that loads ({type(e).__name__}: "
                              f"{first_line(e)[:160]}); train it again (pegasus train-{kind})") from None
    if classes is not None and list(model.spec.classes) != list(classes):
        raise CheckpointError(f"{path} classifies {', '.join(model.spec.classes)}, not the run's "
                              f"{', '.join(classes)}; train it again (pegasus train-{kind})")
    return model.to(device).eval().requires_grad_(False)
