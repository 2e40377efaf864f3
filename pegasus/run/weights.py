"""Shareable weights: a run's EMA weights as a safetensors file, with what is needed to sample
from them (config, sigmas, backbone) as JSON in the file's metadata.

safetensors is the format the Hugging Face ecosystem loads without executing code: a JSON
header and raw tensor bytes, no pickle. `pegasus sample --weights FILE` draws from such a file
with no run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pegasus.atomic import atomic_write
from pegasus.config import Config
from pegasus.errors import CheckpointError, ConfigError, FieldError
from pegasus.registry import get_backbone
from pegasus.run.checkpoint import file_kind
from pegasus.version import __version__

FORMAT = "pegasus-weights"
VERSION = "1"


@dataclass
class ExportedWeights:
    config: Config
    tensors: dict[str, torch.Tensor]
    sigmas: torch.Tensor
    backbone: dict[str, Any]
    step: int
    data_mean: torch.Tensor | None  # the training images' per-channel mean; None if unrecorded


def export_weights(trained, out: Path) -> Path:
    """Write the EMA weights of a `TrainedRun` to `out` (safetensors), atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    _, plugin = get_backbone(trained.config.model.backbone)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "pegasus_version": __version__,
        "config": json.dumps(trained.config.to_dict()),
        # float32 -> Python float -> JSON -> float32 is exact, so the sigmas come back bit for bit.
        "sigmas": json.dumps(trained.sigmas.cpu().tolist()),
        "backbone": json.dumps(plugin.record(trained.config.model.backbone)),
        "step": str(trained.step),
    }
    if trained.centre_recorded:
        metadata["data_mean"] = json.dumps(trained.centre.flatten().cpu().tolist())
    payload = save(tensors, metadata=metadata)
    atomic_write(Path(out), lambda f: f.write(payload))
    return Path(out)


def read_weights(path: Path) -> ExportedWeights:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist or is not a file")
    kind = file_kind(path)
    if kind is not None and "checkpoint" in kind:
        raise FieldError("weights", f"{path} is a torch checkpoint (.pt), not exported safetensors "
                                    f"weights; give it as the checkpoint instead")
    if kind is not None and kind != "safetensors weights":
        raise CheckpointError(f"{path} is {kind}, not exported safetensors weights")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not pegasus weights (no "
                              f"'format: {FORMAT}' in its metadata)")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path} has weights format version {metadata.get('version')}; this "
                              f"pegasus reads version {VERSION}")
    try:
        config = Config.from_dict(json.loads(metadata["config"]))
        sigmas = torch.tensor(json.loads(metadata["sigmas"]), dtype=torch.float32)
        backbone = json.loads(metadata.get("backbone", "{}"))
        step = int(metadata.get("step", "0"))
        mean = metadata.get("data_mean")
        data_mean = None if mean is None else torch.tensor(json.loads(mean), dtype=torch.float32)
    except (KeyError, ValueError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path} has damaged pegasus metadata ({e})") from None
    return ExportedWeights(config, tensors, sigmas, backbone, step, data_mean)

