"""What samples are compared with to tell a copy: the run's training images and held-out ones,
with their features; and the picture of samples beside their nearest training images."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.config import Config
from pegasus.data import load_held_out, load_images
from pegasus.images import save_image_atomic, tile, to_uint8
from pegasus.tasks.novelty import nearest

HELD_FRACTION = 0.1  # of the training images, kept out where no unseen images can be made
MOST_HELD = 1000


@dataclass
class Reference:
    images: torch.Tensor  # the training images compared with, uint8 (N, C, H, W), on the CPU
    features: torch.Tensor  # theirs
    held: torch.Tensor  # the held-out images' features
    rule: str
    unseen: bool  # the held-out images are none the run trained on (not a tenth of its own)

    @classmethod
    def of(cls, config: Config, extract: Callable[[torch.Tensor], torch.Tensor],
           seed: int) -> Reference:
        """Every training image, and held-out images the run never saw (data.load_held_out),
        else a seeded tenth of the training images, then left out of the reference; `extract`
        gives the features of images in [0, 1]."""
        images = load_images(config.data).images
        unseen = load_held_out(config.data, per_class=MOST_HELD // len(config.data.classes))
        if len(unseen.images):
            pick = torch.randperm(len(unseen.images), generator=torch.Generator().manual_seed(seed))
            held, rule = unseen.images[pick[:MOST_HELD]], _held_rule(config)
        else:
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
            cut = min(MOST_HELD, max(10, int(HELD_FRACTION * len(images))))
            held, images, rule = images[order[:cut]], images[order[cut:]], "a tenth held out"
        return cls(images, extract(images.float() / 255), extract(held.float() / 255), rule,
                   bool(len(unseen.images)))


def _held_rule(config: Config) -> str:
    if config.data.dataset == "sprites":
        return "sprites drawn with another seed"
    return f"the last {config.data.held_out} images of each class, kept out of training"


class FirstImages:
    """A stream of image batches passed on unchanged, its first `count` images kept."""

    def __init__(self, count: int) -> None:
        self.count, self.kept = count, []

    def keep(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            held = sum(len(b) for b in self.kept)
            if held < self.count:
                self.kept.append(batch[: self.count - held].detach().cpu())
            yield batch

    @property
    def images(self) -> torch.Tensor:
        return torch.cat(self.kept) if self.kept else torch.empty(0)


def save_neighbours(samples: torch.Tensor, sample_features: torch.Tensor, reference: Reference,
                    out: Path, k: int = 3) -> Path:
    """Each sample beside its k nearest training images, in pixel space (left panel) and in
    feature space (right panel), one row per sample, the sample in the first column of each."""
    train = reference.images.float() / 255
    by_pixels = nearest(samples.flatten(1), train.flatten(1), k)[1]
    by_features = nearest(sample_features, reference.features, k)[1]
    rows = []
    for i, sample in enumerate(samples):
        rows += [sample, *train[by_pixels[i]], torch.ones_like(sample), sample,
                 *train[by_features[i]]]
    factor = max(1, 48 // samples.shape[-1])
    grid = tile(torch.stack(rows).repeat_interleave(factor, -1).repeat_interleave(factor, -2),
                nrow=2 * (k + 1) + 1, padding=2, pad_value=1.0)
    from PIL import Image

    return save_image_atomic(Image.fromarray(to_uint8(grid[None])[0].numpy()), out)
