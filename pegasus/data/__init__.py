"""Datasets: one front door, `load_images`, returning uint8 image tensors filtered by class name.

`sprites` is generated; `cifar10`, `stl10` and `folder:PATH` are read from disk, filtered,
resized once and cached as a uint8 tensor file keyed by dataset, classes, resolution and the
source files, so later runs start at once. With dataset `auto`, 32 px means CIFAR-10 and larger
means STL-10, as in the winged-horses work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.config import DataConfig
from pegasus.errors import DatasetError

MIN_RES = 8
DATASETS = ("sprites", "cifar10", "stl10", "folder:PATH", "auto")


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,), indices into `classes`
    classes: list[str]  # the classes asked for, in the order asked
    dataset: str = "sprites"
    cache: Path | None = None  # the cached tensor file, for datasets read from disk

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}


def default_data_dir() -> Path:
    """$PEGASUS_DATA_DIR, else $XDG_CACHE_HOME/pegasus, else ~/.cache/pegasus."""
    if os.environ.get("PEGASUS_DATA_DIR"):
        return Path(os.environ["PEGASUS_DATA_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pegasus"


def resolve_dataset(config: DataConfig) -> str:
    if config.dataset == "auto":
        return "cifar10" if config.res <= 32 else "stl10"
    return config.dataset


def check_classes(asked: list[str], available, dataset: str) -> None:
    if not asked:
        raise DatasetError("no classes asked for; name some in data.classes, e.g. horse,bird")
    for name in asked:
        if name not in available:
            raise DatasetError(
                f"unknown class {name!r} for {dataset}; valid classes: {', '.join(available)}")
    if len(set(asked)) != len(asked):
        raise DatasetError(f"a class is named twice in {','.join(asked)}")


def available_classes(config: DataConfig) -> list[str]:
    """The class names of the dataset a config names, without reading any images."""
    from pegasus.data import official
    from pegasus.data.folder import folder_classes
    from pegasus.data.sprites import CLASSES

    dataset = resolve_dataset(config)
    if dataset == "sprites":
        return list(CLASSES)
    if dataset == "cifar10":
        return list(official.CIFAR10_CLASSES)
    if dataset == "stl10":
        return list(official.STL10_CLASSES)
    if dataset.startswith("folder:"):
        return folder_classes(Path(dataset.removeprefix("folder:")).expanduser())
    raise DatasetError(f"unknown dataset {config.dataset!r}; available: {', '.join(DATASETS)}")


def check_data_config(config: DataConfig) -> None:
    """Every check on a data config that needs no image: resolution, dataset, class names.
    Training runs it before any slow work."""
    if config.res < MIN_RES:
        raise DatasetError(f"resolution {config.res} px is too small; use {MIN_RES} px or more")
    check_classes(config.classes, available_classes(config), resolve_dataset(config))


def load_images(config: DataConfig) -> ImageSet:
    """The images of a data config, filtered by class, at its resolution; with `limit`, the
    first `limit` images of each class (a small training set: data.limit)."""
    check_data_config(config)
    dataset = resolve_dataset(config)
    if dataset == "sprites":
        from pegasus.data.sprites import draw_sprites

        images = [draw_sprites(c, config.size, config.res, seed=config.seed) for c in config.classes]
        labels = [torch.full((len(x),), i) for i, x in enumerate(images)]
        found = ImageSet(torch.cat(images), torch.cat(labels), list(config.classes), dataset)
    else:
        found = _without_held_out(_load_from_disk(dataset, config), config.held_out)
    return _per_class(found, slice(None, config.limit)) if config.limit else found


def _without_held_out(found: ImageSet, held_out: int) -> ImageSet:
    """A dataset on disk keeps the last `held_out` images of each class out of training (the
    sprites draw theirs with another seed instead: load_held_out)."""
    if not held_out:
        return found
    counts = found.counts()
    fewest = min(counts, key=counts.get)
    if counts[fewest] <= held_out:
        raise DatasetError(f"data.held_out = {held_out} keeps every {fewest} image out of "
                           f"training ({counts[fewest]} in all): hold out fewer")
    return _per_class(found, slice(None, -held_out))


def load_held_out(config: DataConfig, per_class: int = 64) -> ImageSet:
    """Images of the run's classes it does not train on: sprites drawn with another seed (as
    many as `per_class`, however few the run trains on: a small training set is where they
    tell copies), or the last data.held_out images of each class of a dataset on disk; empty
    when data.held_out is 0 there."""
    if resolve_dataset(config) == "sprites":
        return load_images(dataclasses.replace(config, seed=config.seed + 1, size=per_class,
                                               limit=0))
    every = load_images(dataclasses.replace(config, held_out=0, limit=0))
    return _per_class(every, slice(len(every.images) if not config.held_out else -config.held_out,
                                   None))


def _per_class(found: ImageSet, part: slice) -> ImageSet:
    """The images of each class in `part` of its own order."""
    keep = torch.cat([torch.nonzero(found.labels == i).flatten()[part]
                      for i in range(len(found.classes))])
    return dataclasses.replace(found, images=found.images[keep], labels=found.labels[keep])


def _sources(dataset: str, config: DataConfig, root: Path) -> tuple[list[Path], list[str]]:
    """The files the dataset is read from (for the cache key) and its class names."""
    from pegasus.data import official
    from pegasus.data.folder import EXTENSIONS, folder_classes

    if dataset == "cifar10":
        names = official.CIFAR10.train + (official.CIFAR10.test if config.train_plus_test else ())
        return [root / official.CIFAR10.folder / n for n in names], list(official.CIFAR10_CLASSES)
    if dataset == "stl10":
        names = official.STL10.train + official.STL10.test
        return [root / official.STL10.folder / n for n in names], list(official.STL10_CLASSES)
    folder = Path(dataset.removeprefix("folder:")).expanduser()
    classes = folder_classes(folder)
    files = sorted(p for c in config.classes for p in (folder / c).rglob("*")
                   if p.suffix.lower() in EXTENSIONS)
    return files, classes


def _cache_key(dataset: str, config: DataConfig, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat() if f.exists() else None
        h.update(f"{f}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\n".encode())
    name = dataset.split(":")[0]
    split = "-traintest" if dataset == "cifar10" and config.train_plus_test else ""
    return f"{name}{split}-{'_'.join(config.classes)}-{config.res}px-{h.hexdigest()[:12]}.pt"


def _load_from_disk(dataset: str, config: DataConfig) -> ImageSet:
    from pegasus.atomic import atomic_write
    from pegasus.data import official
    from pegasus.data.folder import read_folder
    from pegasus.data.transforms import resize_square

    root = Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()
    files, classes = _sources(dataset, config, root)
    wanted = [classes.index(c) for c in config.classes]
    if dataset in ("cifar10", "stl10"):
        # Fetch (or report) missing files before the key is computed from them.
        archive = official.CIFAR10 if dataset == "cifar10" else official.STL10
        official.ensure_files(archive, root, tuple(f.name for f in files), config.download)
    cache = root / "cache" / _cache_key(dataset, config, files)
    if cache.is_file():
        try:
            stored = torch.load(cache, weights_only=True)
            return ImageSet(stored["images"], stored["labels"], list(config.classes), dataset, cache)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)

    if dataset == "cifar10":
        images, labels, _ = official.read_cifar10(root, include_test=config.train_plus_test,
                                                  download=config.download)
    elif dataset == "stl10":
        images, labels, _ = official.read_stl10(root, download=config.download)
    else:
        images, labels = read_folder(Path(dataset.removeprefix("folder:")).expanduser(),
                                     config.classes, config.res)
        wanted = list(range(len(config.classes)))
    keep = torch.cat([torch.nonzero(labels == w).flatten() for w in wanted])
    new_labels = torch.cat([torch.full(((labels == w).sum().item(),), i)
                            for i, w in enumerate(wanted)])
    images = resize_square(images[keep], config.res)
    for name, count in zip(config.classes, torch.bincount(new_labels, minlength=len(wanted)).tolist(),
                           strict=True):
        if count == 0:
            raise DatasetError(f"class {name!r} has no images in {dataset}")
    atomic_write(cache, lambda f: torch.save({"images": images, "labels": new_labels}, f))
    return ImageSet(images, new_labels, list(config.classes), dataset, cache)
