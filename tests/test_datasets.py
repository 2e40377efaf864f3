"""Real-data loaders on small files written in the official on-disk formats."""

import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.config import DataConfig
from pegasus.data import DatasetError, load_images, resolve_dataset
from pegasus.data.official import CIFAR10_CLASSES, STL10_CLASSES, DataFileError
from pegasus.data.transforms import resize_square
from pegasus.errors import UserError


def _images(n, res, seed):
    """Random images with a bright top-left pixel: orientation mistakes cannot go unnoticed."""
    x = torch.randint(0, 200, (n, 3, res, res), generator=torch.Generator().manual_seed(seed),
                      dtype=torch.uint8)
    x[:, :, 0, 0] = 255
    return x


def write_cifar(root, labels_per_batch):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = labels_per_batch[i % len(labels_per_batch)]
        images = _images(len(labels), 32, i)
        batches[name] = (images, torch.tensor(labels))
        data = {"batch_label": name, "labels": list(labels),
                "data": images.reshape(len(labels), -1).numpy(), "filenames": []}
        (folder / name).write_bytes(pickle.dumps(data, protocol=2))
    return batches


def write_stl(root, train_labels, test_labels):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, labels in (("train", train_labels), ("test", test_labels)):
        images = _images(len(labels), 96, hash(split) % 100)
        # Official layout: per image, channel by channel, each channel column-major.
        (folder / f"{split}_X.bin").write_bytes(images.transpose(2, 3).contiguous().numpy().tobytes())
        (folder / f"{split}_y.bin").write_bytes(bytes(label + 1 for label in labels))
        out[split] = (images, torch.tensor(labels))
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES))
    return out


def _cfg(tmp_path, **kw):
    return DataConfig(data_dir=str(tmp_path), download=False, **kw)


def test_cifar10_filters_by_name_in_order_and_orientation(tmp_path):
    horse, bird = CIFAR10_CLASSES.index("horse"), CIFAR10_CLASSES.index("bird")
    batches = write_cifar(tmp_path, [[horse, 0, bird, horse], [bird, 3]])
    data = load_images(_cfg(tmp_path, dataset="cifar10", classes=["horse", "bird"], res=32))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    expected = {c: torch.cat([x[y == CIFAR10_CLASSES.index(c)] for x, y in train])
                for c in ("horse", "bird")}
    assert data.counts() == {"horse": len(expected["horse"]), "bird": len(expected["bird"])}
    assert torch.equal(data.images[data.labels == 0], expected["horse"])
    assert torch.equal(data.images[data.labels == 1], expected["bird"])
    # With the test split too.
    both = load_images(_cfg(tmp_path, dataset="cifar10", classes=["bird"], res=32,
                            train_plus_test=True))
    assert both.counts()["bird"] == len(expected["bird"]) + 1


def test_cifar10_cache_is_reused(tmp_path):
    write_cifar(tmp_path, [[7, 2]])
    cfg = _cfg(tmp_path, dataset="cifar10", classes=["horse"], res=16)
    first = load_images(cfg)
    assert first.cache.is_file() and first.cache.parent == tmp_path / "cache"
    second = load_images(cfg)
    assert second.cache == first.cache and torch.equal(second.images, first.images)
    assert torch.equal(first.images, resize_square(load_images(
        _cfg(tmp_path, dataset="cifar10", classes=["horse"], res=32)).images, 16))


def test_stl10_merges_train_and_test_and_resizes(tmp_path):
    horse = STL10_CLASSES.index("horse")
    splits = write_stl(tmp_path, [horse, 1, horse], [horse, 0])
    data = load_images(_cfg(tmp_path, dataset="stl10", classes=["horse"], res=96))
    expected = torch.cat([x[y == horse] for x, y in splits.values()])
    assert torch.equal(data.images, expected)
    assert data.images[0, 0, 0, 0] == 255  # top-left stays top-left
    small = load_images(_cfg(tmp_path, dataset="stl10", classes=["horse"], res=48))
    assert small.images.shape == (3, 3, 48, 48)
    assert torch.equal(small.images, resize_square(expected, 48))


def test_folder_dataset(tmp_path):
    from PIL import Image

    for name, count in (("horse", 3), ("bird", 2)):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(count):
            arr = np.full((40, 30, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / name / f"{i}.png")
    data = load_images(DataConfig(dataset=f"folder:{tmp_path / 'imgs'}", classes=["bird", "horse"],
                                  res=16, data_dir=str(tmp_path)))
    assert data.counts() == {"bird": 2, "horse": 3}
    assert data.images.shape == (5, 3, 16, 16)
    (tmp_path / "imgs" / "cat").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_images(DataConfig(dataset=f"folder:{tmp_path / 'imgs'}", classes=["cat"], res=16,
                               data_dir=str(tmp_path)))


def test_default_dataset_follows_the_resolution():
    assert resolve_dataset(DataConfig(res=32)) == "cifar10"
    assert resolve_dataset(DataConfig(res=64)) == "stl10"
    assert resolve_dataset(DataConfig(dataset="sprites", res=64)) == "sprites"


def test_missing_files_offline_name_the_files_and_where(tmp_path):
    with pytest.raises(DataFileError, match=r"expected data_batch_1.*cifar-10-batches-py"):
        load_images(_cfg(tmp_path, dataset="cifar10", res=32))


def test_truncated_files(tmp_path):
    write_cifar(tmp_path, [[7, 7]])
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataFileError, match="truncated"):
        load_images(_cfg(tmp_path, dataset="cifar10", classes=["horse"], res=32))
    write_stl(tmp_path / "s", [6], [6])
    x = tmp_path / "s" / "stl10_binary" / "train_X.bin"
    x.write_bytes(x.read_bytes()[:1000])
    with pytest.raises(DataFileError, match="truncated"):
        load_images(_cfg(tmp_path / "s", dataset="stl10", classes=["horse"], res=48))


def test_a_pickle_that_tries_to_run_code_is_refused(tmp_path):
    write_cifar(tmp_path, [[7]])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(DataFileError):
        load_images(_cfg(tmp_path, dataset="cifar10", classes=["horse"], res=32))


def test_a_class_with_no_images(tmp_path):
    write_cifar(tmp_path, [[7, 7]])
    with pytest.raises(DatasetError, match="'bird' has no images"):
        load_images(_cfg(tmp_path, dataset="cifar10", classes=["horse", "bird"], res=32))


def test_unknown_class_lists_the_dataset_own_names(tmp_path):
    write_stl(tmp_path, [1], [1])
    with pytest.raises(DatasetError, match="valid classes: airplane, bird, car"):
        load_images(_cfg(tmp_path, dataset="stl10", classes=["automobile"], res=48))


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "cifar10", "--no-download"], "expected data_batch_1"),
    (["--dataset", "sprites", "--res", "4"], "too small"),
    (["--dataset", "sprites", "--classes", "dog"], "unknown class 'dog'"),
    (["--dataset", "imagenet"], "unknown dataset"),
])
def test_data_command_bad_input(tmp_path, args, needle):
    result = CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert needle in result.output


def test_data_command_reports_counts_and_writes_a_preview(tmp_path):
    write_stl(tmp_path, [6, 6, 1], [6])
    out = tmp_path / "p.png"
    result = CliRunner().invoke(app, ["data", "--dataset", "stl10", "--data-dir", str(tmp_path),
                                      "--classes", "horse,bird", "--res", "48", "--preview", str(out)])
    assert result.exit_code == 0, result.output
    assert "horse: 3" in result.output and "bird: 1" in result.output
    assert "resolution: 48 px" in result.output and "cache:" in result.output and out.is_file()


def test_sigmas_command_without_and_with_data(tmp_path):
    r = CliRunner().invoke(app, ["sigmas", "--dim", "3072", "--sigma-max", "50", "--levels", "232",
                                 "--steps-per-level", "5", "--write", str(tmp_path / "n.toml")])
    assert r.exit_code == 0 and "levels: 232" in r.output and "eps: 6.18e-06" in r.output
    assert "[noise]" in (tmp_path / "n.toml").read_text()
    r = CliRunner().invoke(app, ["sigmas", "--dataset", "sprites", "--res", "8",
                                 "--steps-per-level", "3"])
    assert r.exit_code == 0 and "dimension: 192" in r.output and "sigma_1:" in r.output
    r = CliRunner().invoke(app, ["sigmas", "--steps-per-level", "3"])
    assert r.exit_code == 2 and "--dim" in r.output


def test_training_on_stl10_files_with_an_auto_schedule(tmp_path):
    """The real-data path end to end: official-format files, class filter, resize, cache, and
    a noise schedule planned from those very images (Techniques 1, 2, 4)."""
    import tomllib

    from pegasus.noise.techniques import choose_schedule, max_pairwise_distance
    from pegasus.training import train
    from tiny import tiny_config

    horse = STL10_CLASSES.index("horse")
    write_stl(tmp_path / "data", [horse, 1, horse, horse], [horse, 0])
    config = tiny_config(
        'data.dataset="stl10"', f'data.data_dir="{tmp_path / "data"}"', "data.download=false",
        'data.classes=["horse"]', 'noise.sigma_max="auto"', 'noise.levels="auto"',
        'noise.eps="auto"', "train.iters=2")
    train(config, tmp_path / "run", tensorboard=False)
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["noise"]
    images = load_images(config.data).images
    assert images.shape == (4, 3, 16, 16)
    plan = choose_schedule(3 * 16 * 16, max_pairwise_distance(images), 2)
    assert saved["sigma_max"] == pytest.approx(plan.sigma_max, rel=1e-6)
    assert saved["levels"] == plan.levels and saved["eps"] == pytest.approx(plan.eps)
