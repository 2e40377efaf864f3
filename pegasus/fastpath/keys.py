"""The one key type of the fast path's records: what a compile kept in the user's cache, or a
timing kept in a run's fast-path.json, was made for. A key names the work (sampling or training),
the network (backbone and options), the resolution and batch, and, once rendered for a record,
the device and torch it was made on: what is fastest, or compiled, for one GPU or torch is not
for another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.devices import device_name
from pegasus.fastpath.cache import compiled_file


@dataclass(frozen=True)
class WorkKey:
    work: str  # "sample" or "train"
    backbone: str
    options: str  # the backbone's options, as written in the config
    res: int
    batch: int | None = None  # images per evaluation (training and probes); None: any
    world: int = 1  # ranks training together (a DDP compile differs)

    @classmethod
    def of(cls, work: str, config, batch: int | None = None, world: int = 1) -> WorkKey:
        """The key of `work` on the network a run's config (config.Config) describes."""
        return cls(work, config.model.backbone, str(config.model.options), config.data.res, batch,
                   world)

    def describe(self) -> str:
        parts = [self.work, self.backbone, self.options, f"{self.res} px"]
        if self.batch is not None:
            parts.append(f"batch {self.batch}")
        if self.world > 1:
            parts.append(f"{self.world} ranks")
        return ", ".join(parts)

    def on(self, device: torch.device, *what: object) -> str:
        """This key on `device` and this torch, with `what` else decides it (a fast path, an
        input shape, the candidates timed)."""
        return " | ".join([device_name(device), f"torch {torch.__version__}", self.describe(),
                           *map(str, what)])

    def compile_file(self, device: torch.device, *what: object) -> Path:
        """Where the user's compile cache keeps a compile for this key (cache.py)."""
        return compiled_file(self.on(device, *what))
