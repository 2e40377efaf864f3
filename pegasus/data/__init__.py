"""Datasets: one front door, `load_images`, returning uint8 image tensors filtered by class."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pegasus.config import DataConfig
from pegasus.errors import UserError

MIN_RES = 8


class DatasetError(UserError):
    """A dataset that cannot be loaded as asked; the message says what to change."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,), indices into `classes`
    classes: list[str]  # the classes asked for, in the order asked

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}


def check_classes(asked: list[str], available: list[str] | tuple[str, ...], dataset: str) -> None:
    if not asked:
        raise DatasetError("no classes asked for; pass --classes, e.g. --classes horse,bird")
    for name in asked:
        if name not in available:
            raise DatasetError(
                f"unknown class {name!r} for {dataset}; valid classes: {', '.join(available)}"
            )
    if len(set(asked)) != len(asked):
        raise DatasetError(f"a class is named twice in {','.join(asked)}")


def load_images(config: DataConfig) -> ImageSet:
    if config.res < MIN_RES:
        raise DatasetError(f"resolution {config.res} px is too small; use --res {MIN_RES} or more")
    if config.dataset == "sprites":
        from pegasus.data.sprites import CLASSES, draw_sprites

        check_classes(config.classes, CLASSES, "sprites")
        images = [draw_sprites(c, config.size, config.res, seed=config.seed) for c in config.classes]
        labels = [torch.full((len(x),), i) for i, x in enumerate(images)]
        return ImageSet(torch.cat(images), torch.cat(labels), list(config.classes))
    raise DatasetError(f"unknown dataset {config.dataset!r}; available: sprites")
