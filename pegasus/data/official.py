"""CIFAR-10 and STL-10 in their official on-disk formats, downloaded with torchvision.

Reading is our own code rather than torchvision's dataset classes, for two reasons: those
classes verify the MD5 of every file, so they reject any file that is not the exact official one
(tests write small files in the same format), and CIFAR-10's batches are pickles, which we read
with an unpickler that only admits the few numpy names the format uses, so a tampered file
cannot run code. Downloads go through torchvision's downloader with the official checksums.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.errors import UserError, first_line

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    folder: str  # what the archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]


CIFAR10 = Archive(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
)
STL10 = Archive(
    url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    md5="91f7769df0f17e558f3565bffb0c7dfb",
    folder="stl10_binary",
    train=("train_X.bin", "train_y.bin"),
    test=("test_X.bin", "test_y.bin"),
)


class DataFileError(UserError):
    """Files of a dataset that are missing, truncated or not in the official format."""


def ensure_files(archive: Archive, root: Path, files: tuple[str, ...], download: bool) -> Path:
    """The dataset folder under `root`, downloading the archive when files are missing."""
    folder = Path(root) / archive.folder
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(archive.url, str(root), md5=archive.md5)
        except Exception as e:  # noqa: BLE001 - offline, refused, or a checksum mismatch
            raise DataFileError(
                f"{', '.join(missing)} missing in {folder} and the download of {archive.url} "
                f"failed ({first_line(e)}); put the extracted files there or pass --data-dir"
            ) from None
        missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataFileError(
            f"expected {', '.join(missing)} in {folder}; download {archive.url} and extract it "
            f"under {root}, or pass --data-dir"
        )
    return folder


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly the globals a CIFAR-10 batch refers to: numpy array reconstruction, and
    `_codecs.encode`, with which Python 3 writes bytes at pickle protocol 2."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a dataset file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        data, labels = batch["data"], batch["labels"]
        images = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
    except Exception as e:  # noqa: BLE001 - truncated pickles raise many types
        raise DataFileError(f"{path} is truncated or not a CIFAR-10 python batch ({e})") from None
    return images, torch.as_tensor(labels, dtype=torch.long)


def read_cifar10(root: Path, *, include_test: bool, download: bool):
    files = CIFAR10.train + (CIFAR10.test if include_test else ())
    folder = ensure_files(CIFAR10, root, files, download)
    parts = [_read_cifar_batch(folder / f) for f in files]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), CIFAR10_CLASSES


def _read_stl_split(folder: Path, x_name: str, y_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw = (folder / x_name).read_bytes()
    labels = torch.frombuffer(bytearray((folder / y_name).read_bytes()), dtype=torch.uint8)
    size = 3 * 96 * 96
    if len(raw) % size or len(raw) // size != len(labels):
        raise DataFileError(
            f"{folder / x_name} holds {len(raw) / size:g} images for {len(labels)} labels: "
            f"truncated or not STL-10 binary")
    # Each image is stored channel by channel, column-major: transpose to (C, H, W).
    images = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 3, 96, 96).transpose(2, 3)
    return images.contiguous(), labels.long() - 1  # labels on disk are 1..10


def read_stl10(root: Path, *, download: bool):
    """The labelled train and test splits merged: 1300 images per class."""
    folder = ensure_files(STL10, root, STL10.train + STL10.test, download)
    train = _read_stl_split(folder, "train_X.bin", "train_y.bin")
    test = _read_stl_split(folder, "test_X.bin", "test_y.bin")
    return torch.cat([train[0], test[0]]), torch.cat([train[1], test[1]]), STL10_CLASSES
