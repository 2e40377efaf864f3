"""Time to first batch, cold (decode, filter, resize, write the uint8 cache) and warm (read the
cache), on CIFAR-10- and STL-10-format files written here (full-size stand-ins with random
pixels: the loaders do not care what the pixels show; `--fraction` shrinks them, for a smoke
test). Also the cost of Technique 1, the exact
largest pairwise distance, for 10k images at 64 px.

    python bench/data_first_batch.py [cpu|cuda] [--technique1-images N] [--fraction F]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import torch

from common import device_name, sync
from pegasus.config import DataConfig
from pegasus.data import load_images
from pegasus.noise.techniques import max_pairwise_distance


def write_cifar(root: Path, fraction: float) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = round(10000 * fraction)
        data = torch.randint(0, 256, (n, 3072), dtype=torch.uint8, generator=g).numpy()
        labels = torch.randint(0, 10, (n,), generator=g).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=4))


def write_stl(root: Path, fraction: float) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", round(5000 * fraction)), ("test", round(8000 * fraction))):
        (folder / f"{split}_X.bin").write_bytes(
            torch.randint(0, 256, (n * 3 * 96 * 96,), dtype=torch.uint8, generator=g).numpy().tobytes())
        (folder / f"{split}_y.bin").write_bytes(
            (torch.randint(0, 10, (n,), generator=g) + 1).to(torch.uint8).numpy().tobytes())


def first_batch(config: DataConfig, device: torch.device) -> float:
    start = time.perf_counter()
    data = load_images(config)
    images = data.images.to(device)
    batch = images[torch.randint(len(images), (128,), device=device)].float() / 255
    sync(device)
    assert batch.shape[0] == 128
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("device", nargs="?", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--technique1-images", type=int, default=10000,
                        help="images for the Technique 1 timing")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="the share of the official image counts the stand-in files hold")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    device = torch.device(args.device)
    print(f"on {device_name(device)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar(root, args.fraction)
        write_stl(root, args.fraction)
        for name, res in (("cifar10", 32), ("stl10", 64)):
            config = DataConfig(dataset=name, classes=["horse", "bird"], res=res, data_dir=tmp,
                                download=False)
            cold = first_batch(config, device)
            warm = first_batch(config, device)
            print(f"  {name} horse,bird at {res} px: first batch cold {cold:.2f} s, warm {warm:.3f} s "
                  f"({cold / warm:.0f}x)")
    x = torch.rand(args.technique1_images, 3, 64, 64, device=device)
    sync(device)
    start = time.perf_counter()
    sigma = max_pairwise_distance(x)
    sync(device)
    print(f"  technique 1 on {len(x)} images at 64 px: {time.perf_counter() - start:.2f} s "
          f"(sigma_1 = {sigma:.1f})")


if __name__ == "__main__":
    main()
