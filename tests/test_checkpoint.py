import pytest
import torch

from pegasus.run.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "config": {"a": 1}}


def test_round_trip_latest_pointer_and_keep(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, _state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-00000003.pt", "checkpoint-00000004.pt"]
    latest = latest_checkpoint(tmp_path)
    state = load_checkpoint(latest)
    assert state["step"] == 4 and torch.equal(state["model"]["w"], torch.full((3,), 4.0))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, _state(1), keep=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_a_file_that_is_no_checkpoint_says_so_without_torchs_advice(tmp_path):
    """torch's first line advises weights_only=False, the one thing pegasus must not do."""
    path = tmp_path / "notes.pt"
    path.write_text("# not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a pegasus checkpoint: it is no torch zip") as caught:
        load_checkpoint(path)
    assert "weights_only" not in str(caught.value)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("damage,said", [
    (lambda data: data[:10], "truncated or corrupt (its archive: not a ZIP archive)"),
    (lambda data: data[:len(data) // 2], "truncated or corrupt (its archive: failed finding "
                                         "central directory)"),
    (lambda data: b"", "is not a pegasus checkpoint: it is an empty file"),
    (lambda data: b"hello", "is not a pegasus checkpoint: it is no torch zip archive"),
])
def test_a_damaged_checkpoint_is_named_in_pegasuss_words_not_torchs(tmp_path, damage, said, mmap):
    """The audit found torch's internals quoted: "(105)", the mmap hint, miniz's advice."""
    path = save_checkpoint(tmp_path, _state(1), keep=1)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, mmap=mmap)
    words = str(caught.value)
    assert words.endswith(said), words
    for internal in ("miniz", "Errno", "mmap", "zipfile_serialization", "weights_only"):
        assert internal not in words


def test_a_checkpoint_torch_cannot_read_to_its_end_says_so(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path, _state(1), keep=1)
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(
        OSError(22, "Invalid argument")))  # what a zip cut short in its records gives
    with pytest.raises(CheckpointError, match=r"truncated or corrupt \(it ends early, or cannot "
                                              r"be read\)$"):
        load_checkpoint(path)


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"format": "pegasus-checkpoint", "version": 1, "step": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"hello": 1}, path)
    with pytest.raises(CheckpointError, match="not a pegasus checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path, _state(1), keep=3)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, {"step": 2, "bad": Unsaveable()}, keep=3)
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("*.tmp"))


def test_written_files_get_the_mode_a_plain_open_would(tmp_path):
    """Atomic writes go through mkstemp, which makes files private; the result must not be."""
    import os
    import stat

    from pegasus.atomic import _UMASK, atomic_write

    atomic_write(tmp_path / "grid.png", lambda f: f.write(b"x"))
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "grid.png").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode) == 0o666 & ~_UMASK
