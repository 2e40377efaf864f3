"""Never lose a run: the NaN guard, one writer per run, a `latest` confined to checkpoints/,
fallback past a damaged checkpoint, honest checkpoint errors, and SIGKILLs at random moments."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.errors import CheckpointError, RunError
from pegasus.run.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from pegasus.run.lock import RunLock
from pegasus.training import train
from pegasus.training.stops import DivergedError, StopOnSignal
from test_errors import one_line
from tiny import TINY, tiny_config

runner = CliRunner()
SETS = [a for s in TINY for a in ("--set", s)]


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint_bit_identical(tmp_path):
    train(tiny_config("train.iters=4", "train.checkpoint_every=2"), tmp_path, tensorboard=False)
    good = latest_checkpoint(tmp_path / "checkpoints")
    before = good.read_bytes()
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--set",
                                 "train.lr=1e30", "--set", "train.iters=40",
                                 "--set", "train.log_every=2", "--set", "train.checkpoint_every=2"])
    one_line(result, "training diverged at step")
    assert "lower train.lr" in result.output and good.name in " ".join(result.output.split())
    assert good.read_bytes() == before and latest_checkpoint(tmp_path / "checkpoints") == good
    state = load_checkpoint(good)
    assert all(torch.isfinite(t).all() for t in state["ema"].values())


def test_the_weight_check_refuses_a_non_finite_checkpoint(tmp_path):
    with pytest.raises(DivergedError, match="weights"):
        train(tiny_config("train.lr=1e30", "train.log_every=100", "train.iters=5",
                          "train.checkpoint_every=2"), tmp_path, tensorboard=False)
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run" / ".lock", "run x"):
        with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
            train(tiny_config(), tmp_path / "run", tensorboard=False)
    # Released on exit: the same run trains now.
    assert train(tiny_config("train.iters=1"), tmp_path / "run", tensorboard=False).step == 1


def test_a_lock_whose_holder_cannot_be_written_still_locks(tmp_path, monkeypatch):
    """The audit: a full disk as a new run's lock was created gave a traceback. The lock holds
    without the holder's name; the run's own first write then says what is wrong."""
    from pegasus.run import lock

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lock.os, "pwrite", full)
    with RunLock(tmp_path / ".lock", "run x"):
        with pytest.raises(RunError, match="run y is in use by another process"):
            with RunLock(tmp_path / ".lock", "run y"):
                pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from pegasus.run.lock import RunLock\n"
            f"with RunLock({str(tmp_path / '.lock')!r}, 'r'):\n print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunError, match=f"process {proc.pid}"):
        RunLock(tmp_path / ".lock", "r").__enter__()
    proc.kill()
    proc.wait()
    with RunLock(tmp_path / ".lock", "r"):
        pass


@pytest.mark.parametrize("content", [b"/etc/passwd\n", b"../config.toml\n", b"\xff\xfe\x00bad",
                                     b"checkpoint-00000001.pt" * 20, b"x" * 300])
def test_latest_names_a_checkpoint_inside_the_folder_or_is_ignored(tmp_path, content):
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": step}, keep=3)
    (tmp_path / "latest").write_bytes(content)
    warnings = []
    assert latest_checkpoint(tmp_path, warnings.append) == tmp_path / "checkpoint-00000002.pt"
    assert len(warnings) == 1 and "using the newest checkpoint" in warnings[0]


def test_a_pointer_left_behind_by_a_failed_update_yields_to_the_newer_checkpoint(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": step}, keep=3)
    (tmp_path / "latest").write_text("checkpoint-00000001.pt\n")  # the update to 2 failed
    warnings = []
    assert latest_checkpoint(tmp_path, warnings.append) == tmp_path / "checkpoint-00000002.pt"
    assert len(warnings) == 1 and "is newer" in warnings[0]


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path):
    train(tiny_config("train.iters=4", "train.checkpoint_every=2", "train.keep=3"), tmp_path,
          tensorboard=False)
    newest = latest_checkpoint(tmp_path / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:1000])
    (tmp_path / "checkpoints" / ".checkpoint-00000009.pt.abc.tmp").write_bytes(b"half")
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--set", "train.iters=5"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "falling back to the previous checkpoint" in text and "done: step 5" in text
    assert "removed .checkpoint-00000009.pt.abc.tmp" in text
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_a_checkpoint_that_holds_code_is_named_as_such(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "pegasus-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="could run code") as e:
        load_checkpoint(path)
    assert "weights_only" not in str(e.value) and "truncated" not in str(e.value)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained")
    train(tiny_config("train.iters=2"), path, tensorboard=False)
    return path


def test_a_checkpoint_of_another_width_is_one_line_naming_both(tmp_path, trained):
    other = tmp_path / "other"
    train(tiny_config("train.iters=2", "model.width=16"), other, tensorboard=False)
    ckpt = latest_checkpoint(other / "checkpoints")
    state = load_checkpoint(ckpt)
    state["config"] = load_checkpoint(latest_checkpoint(trained / "checkpoints"))["config"]
    torch.save(state, ckpt)
    one_line(runner.invoke(app, ["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.png")]),
             "do not fit backbone 'unet'")
    # On resume: this run's config against another run's checkpoint.
    target = tmp_path / "target"
    train(tiny_config("train.iters=2"), target, tensorboard=False)
    mine = latest_checkpoint(target / "checkpoints")
    foreign = load_checkpoint(latest_checkpoint(other / "checkpoints"))
    foreign["config"] = load_checkpoint(mine)["config"]
    torch.save(foreign, mine)
    one_line(runner.invoke(app, ["train", "--run", str(target), "--resume", "--set", "train.iters=3"]),
             "does not fit this run's model")


def test_a_checkpoint_without_ema_is_one_line(tmp_path, trained):
    state = load_checkpoint(latest_checkpoint(trained / "checkpoints"))
    del state["ema"]
    path = tmp_path / "no-ema.pt"
    torch.save(state, path)
    one_line(runner.invoke(app, ["sample", "--checkpoint", str(path), "--out", str(tmp_path / "x.png")]),
             "lacks ema")


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("x") and p, "is a file"),
    (lambda p: Path("/proc/pegasus-run"), "cannot create run folder"),
    (lambda p: p / ("x" * 300), "longer than the file system allows"),
])
def test_run_paths_that_cannot_be_used(tmp_path, make, needle):
    path = make(tmp_path / "f")
    one_line(runner.invoke(app, ["train", "--run", str(path if isinstance(path, Path) else tmp_path / "f"),
                                 *SETS]), needle)


def test_output_in_a_folder_that_cannot_be_written(tmp_path, trained):
    one_line(runner.invoke(app, ["sample", "--run", str(trained), "--out", "/proc/x.png"]),
             "cannot write /proc/x.png")


def test_a_full_disk_keeps_the_checkpoints_there_and_says_how_much_room(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"step": 1, "w": torch.ones(3)}, keep=2)

    def no_space(obj, f, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match=r"No space left.*intact \(checkpoint-00000001.pt\).*"
                                              r"train.keep = 2 needs room for 2 checkpoints"):
        save_checkpoint(tmp_path, {"step": 2}, keep=2)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint-00000001.pt")["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_lowering_keep_on_a_full_disk_makes_room_for_the_next_checkpoint(tmp_path, monkeypatch):
    """The audit: the advice "lower train.keep" did not work, as the oldest went only after
    the write. A disk with room for two checkpoints, a run that kept three: with keep = 2 the
    next write fits, the newest two kept."""
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, {"step": step}, keep=3)
    save = torch.save

    def two_fit(obj, f, *a, **k):
        if len(list(tmp_path.glob("checkpoint-*.pt"))) >= 2:
            raise OSError(28, "No space left on device")
        save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", two_fit)
    with pytest.raises(CheckpointError, match=r"intact \(checkpoint-00000002.pt, "
                                              r"checkpoint-00000003.pt\).*train.keep = 3 needs "
                                              r"room for 3 checkpoints; free some space, or lower"):
        save_checkpoint(tmp_path, {"step": 4}, keep=3)
    save_checkpoint(tmp_path, {"step": 4}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000003.pt",
                                                            "checkpoint-00000004.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000004.pt"


def test_resume_refuses_a_config_toml_that_no_longer_matches(tmp_path):
    train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    text = (tmp_path / "config.toml").read_text()
    start = text.index("[train]")
    (tmp_path / "config.toml").write_text(text[:start])  # the whole train section lost
    one_line(runner.invoke(app, ["train", "--run", str(tmp_path), "--resume"]), "no longer matches")
    # Overriding on purpose is allowed, and resumes with the checkpoint's config plus the change.
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--set", "train.iters=3"])
    assert result.exit_code == 2  # the toml still differs in other train fields: refused too
    (tmp_path / "config.toml").write_text(text)
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--set", "train.iters=3"])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_a_kept_checkpoint(tmp_path):
    """A few training processes killed at random moments (checkpoint every step, so some kills
    land mid-write): every kept checkpoint loads, and resuming finishes the run."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "pegasus", "train", "--run", str(run), *SETS,
            "--set", "train.iters=400", "--set", "train.checkpoint_every=1", "--set", "train.keep=2"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        extra = ["--resume"] if latest_checkpoint(run / "checkpoints") else []
        proc = subprocess.Popen(args + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not list_checkpoints(run / "checkpoints") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(float(torch.rand((), generator=gen)) * 1.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for path in list_checkpoints(run / "checkpoints"):
            assert load_checkpoint(path)["step"] >= 1
    # One step past the newest kept checkpoint: the resume must load it and write the next.
    step = load_checkpoint(latest_checkpoint(run / "checkpoints"))["step"]
    result = runner.invoke(app, ["train", "--run", str(run), "--resume", "--set",
                                 f"train.iters={step + 1}"])
    assert result.exit_code == 0, result.output
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_a_resume_to_a_step_already_passed_is_one_line_and_leaves_the_run_as_it_was(tmp_path):
    train(tiny_config("train.iters=4"), tmp_path, tensorboard=False)
    before = (tmp_path / "config.toml").read_bytes()
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--iters", "2"])
    one_line(result, "--iters is 2, but the run is at step 4; give a value above 4")
    assert (tmp_path / "config.toml").read_bytes() == before
    # Resuming a finished run with its own iters is no error: it is done.
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume"])
    assert result.exit_code == 0 and "done: step 4" in result.output, result.output


def test_an_override_given_on_resume_is_accepted_by_the_next_resume(tmp_path):
    """A resume with an override writes config.toml at once; stopped before its first checkpoint,
    it leaves config.toml and the checkpoint apart. The next resume, with another override, must
    still go: pegasus recognises its own write. An edit by hand is still refused."""
    from pegasus.run.layout import RunDir

    train(tiny_config("train.iters=4"), tmp_path, tensorboard=False)
    run = RunDir(tmp_path)
    run.write_config(tiny_config("train.iters=6"))  # what a resume --iters 6 killed at once leaves
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--iters", "8"])
    assert result.exit_code == 0 and "done: step 8" in result.output, result.output
    text = run.config.read_text().replace("lr = 0.001", "lr = 0.5")
    run.config.write_text(text)  # by hand
    one_line(runner.invoke(app, ["train", "--run", str(tmp_path), "--resume", "--iters", "9"]),
             "no longer matches")


def _train_second(path, arrived, wait_for, results):
    """The second trainer: it comes to the lock first, then takes it only once the first
    trainer has finished its run."""
    from pegasus.errors import UserError
    from pegasus.run import lock

    enter = lock.RunLock.__enter__

    def late(self):
        arrived.set()
        wait_for.wait(60)
        return enter(self)

    lock.RunLock.__enter__ = late
    try:
        train(tiny_config("train.iters=2"), path, tensorboard=False)
        results.put("trained")
    except UserError as e:
        results.put(f"refused: {e}")


def test_a_second_trainer_reaching_the_lock_after_the_first_finished_does_not_retrain(tmp_path):
    """Two `train --run R` at once: the checks that the folder holds no trained run run under the
    lock, so the one that gets it second is refused even when the first has finished by then."""
    import multiprocessing

    # spawn, not fork: a process forked after torch's thread pools started can hang in them.
    ctx = multiprocessing.get_context("spawn")
    arrived, finished, results = ctx.Event(), ctx.Event(), ctx.Queue()
    second = ctx.Process(target=_train_second, args=(tmp_path, arrived, finished, results))
    second.start()
    assert arrived.wait(120)  # the second is at the lock, every check before it done
    first = train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    trained_at = first.checkpoint.stat().st_mtime_ns
    finished.set()
    outcome = results.get(timeout=120)
    second.join(30)
    assert outcome.startswith("refused:") and "already holds a trained run" in outcome, outcome
    assert first.checkpoint.stat().st_mtime_ns == trained_at


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_a_real_full_disk_is_one_line_naming_the_file_and_the_room_a_run_needs(tmp_path):
    """torch's zip writer reports a full disk as its own RuntimeError; on a real 3 MB tmpfs the
    first checkpoint (about 20 MiB) cannot be written, and the command says so in one line."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        sets = [a for s in TINY if not s.startswith("model.width") for a in ("--set", s)]
        result = runner.invoke(app, ["train", "--run", str(disk / "run"), *sets,
                                     "--set", "model.width=32", "--set", "train.iters=2"])
        one_line(result, "No space left on device")
        line = next(x for x in result.output.splitlines() if x.startswith("error:"))
        assert "checkpoint-00000002.pt" in line
        assert "train.keep = 3 needs room for 3 checkpoints of about" in line
        assert "intact (none yet)" in line
        assert not list((disk / "run" / "checkpoints").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)])


def _copy_run(source: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(source, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def test_a_run_writes_only_its_own_real_files(tmp_path, trained):
    """The audit resumed through a checkpoints/ linked into another run: it wrote that run's
    checkpoints and rotated two away. Linked parts are refused before anything is written."""
    other = _copy_run(trained, tmp_path / "other")
    before = sorted(p.name for p in (other / "checkpoints").iterdir())
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "checkpoints").symlink_to(other / "checkpoints")
    (linked / "config.toml").write_bytes((other / "config.toml").read_bytes())
    one_line(runner.invoke(app, ["train", "--run", str(linked), "--resume", *SETS,
                                 "--set", "train.iters=4"]), "is a link to")
    assert sorted(p.name for p in (other / "checkpoints").iterdir()) == before
    # One checkpoint linked to another run's file: resumed, it would be rotated and overwritten.
    mixed = _copy_run(trained, tmp_path / "mixed")
    newest = latest_checkpoint(mixed / "checkpoints")
    newest.unlink()
    newest.symlink_to(latest_checkpoint(other / "checkpoints"))
    one_line(runner.invoke(app, ["train", "--run", str(mixed), "--resume", *SETS,
                                 "--set", "train.iters=4"]), f"{newest.name} is a link to")
    for verb in (["train-guide", "--iters", "1"], ["export"]):
        one_line(runner.invoke(app, [*verb, "--run", str(mixed)]), "is a link to")


def test_reading_what_is_not_the_runs_own_is_named_in_a_note(tmp_path, trained):
    """Sampling from a run whose checkpoint is another run's file, or from another run's
    checkpoint beside a run folder, is legitimate: it is named. Exporting another run's
    checkpoint into this run's exports/ is not."""
    other = _copy_run(trained, tmp_path / "other")
    theirs = latest_checkpoint(other / "checkpoints")
    said = runner.invoke(app, ["sample", "--run", str(trained), "--checkpoint", str(theirs),
                               "--num", "2", "--steps", "3", "--sampler", "heun",
                               "--out", str(tmp_path / "g.png")])
    assert said.exit_code == 0, said.output
    assert f"is not run {trained}'s own file" in " ".join(said.output.split())
    mine = runner.invoke(app, ["sample", "--run", str(other), "--num", "2", "--steps", "3",
                               "--sampler", "heun", "--out", str(tmp_path / "h.png")])
    assert mine.exit_code == 0 and "own file" not in mine.output
    one_line(runner.invoke(app, ["export", "--run", str(trained), "--checkpoint", str(theirs)]),
             "--out is needed")
    exported = runner.invoke(app, ["export", "--run", str(trained), "--checkpoint", str(theirs),
                                   "--out", str(tmp_path / "w.safetensors")])
    assert exported.exit_code == 0, exported.output
    # A folder of samples drawn from the other run, scored against this one.
    drawn = runner.invoke(app, ["sample", "--run", str(other), "--num", "2", "--steps", "3",
                                "--sampler", "heun", "--folder", str(tmp_path / "s")])
    assert drawn.exit_code == 0, drawn.output
    from pegasus.run.folder import SampleFolder

    assert SampleFolder(tmp_path / "s").source() == theirs.resolve()
    judged = runner.invoke(app, ["train-judge", "--run", str(trained), "--iters", "1"])
    assert judged.exit_code == 0, judged.output
    from pegasus.errors import PegasusWarning

    with pytest.warns(PegasusWarning, match=f"was drawn from {theirs.resolve()}, not from run"):
        scored = runner.invoke(app, ["eval", "--run", str(trained), "--samples", str(tmp_path / "s")])
    assert scored.exit_code == 0, scored.output
    assert "no precision or recall: they need more than 3 samples" in " ".join(scored.output.split())


STUCK_RANK = """
import os, signal, time
from pegasus.training.stops import StopOnSignal
with StopOnSignal(grace=1.0) as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # as a rank blocked in a collective: the loop never sees the flag
"""


def test_a_rank_that_cannot_stop_after_a_signal_is_ended_after_its_grace(tmp_path):
    """The audit's orphaned workers ignored SIGTERM for 28 minutes, blocked in a collective."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK_RANK], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "RANK": "1"})
    assert done.returncode == 128 + signal.SIGTERM and time.monotonic() - start < 20
    assert done.stderr.strip() == ("error: rank 1: still running 1 s after signal 15 (blocked "
                                   "waiting for the other ranks); ending it now")
    # A call that ends in time leaves no watchdog behind, and the usual handlers come back.
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal(grace=0.1) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    assert stop.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is before
    time.sleep(0.3)  # past the grace: had the watchdog lived on, this process would be gone
