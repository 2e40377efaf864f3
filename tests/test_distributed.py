"""DDP under torchrun on CPU (gloo): two ranks, each on its own shard; rank 0 checkpoints."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pegasus.run.checkpoint import latest_checkpoint, load_checkpoint
from pegasus.training.batches import EpochSampler
from tiny import TINY

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def test_ranks_see_disjoint_shards_that_cover_the_epoch():
    ranks = [EpochSampler(16, 4, seed=0, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([s.indices(step) for step in range(2)]) for s in ranks]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(16))


def _torchrun(run: Path, *extra: str):
    sets = [a for s in TINY for a in ("--set", s)]
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "pegasus", "train",
           "--run-dir", str(run), *sets, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_torchrun_two_ranks_train_and_resume(tmp_path):
    # With the probe on, rank 0 times the layouts and both ranks take its choice (a collective
    # every rank must reach, or the run hangs).
    first = _torchrun(tmp_path, "--set", "train.iters=4", "--set", "train.probe=true")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (first.stdout + first.stderr).count("fast path timed on cpu") == 1
    assert len(json.loads((tmp_path / "fast-path.json").read_text())) == 1
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["step"] == 4 and state["world_size"] == 2
    assert len(state["rng"]["generators"]) == 2
    assert not torch.equal(state["rng"]["generators"][0], state["rng"]["generators"][1])
    again = _torchrun(tmp_path, "--set", "train.iters=6", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 6


def test_a_restarted_torchrun_job_resumes_only_its_own_checkpoints(tmp_path, monkeypatch):
    from pegasus.run.layout import RunDir
    from pegasus.training import _record_job, _restarted_job, train
    from tiny import tiny_config

    train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    run = RunDir(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert not _restarted_job(run)  # a first attempt never resumes by itself
    _record_job(run)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert _restarted_job(run)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")  # another job's checkpoints
    assert not _restarted_job(run)


FAILING_RANK = """
import sys
import torch.distributed as dist
from pegasus import distributed
with distributed.group("cpu") as ctx:
    if ctx.rank == 1:
        raise SystemExit(3)  # a check that only rank 1 failed
    dist.all_gather_object([None, None], "ok")  # a collective that rank 1 never reaches
"""


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_a_rank_failing_alone_ends_the_job_instead_of_hanging_it(tmp_path):
    # Rank 1 leaving through the group's clean exit would wait at its barrier for rank 0,
    # which waits at another: the job would hang until gloo's 30-minute timeout.
    script = tmp_path / "job.py"
    script.write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "exitcode  : 3" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_ranks_write_the_folder_one_process_writes(tmp_path):
    from pegasus.training import train
    from tiny import tiny_config

    train(tiny_config("train.iters=2"), tmp_path / "run", tensorboard=False)
    job = ["sample", "--run", str(tmp_path / "run"), "--num", "9", "--batch-size", "2",
           "--sampler", "heun", "--steps", "5", "--folder"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "pegasus",
                          "--", *job, str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "pegasus", *job, str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 9
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    assert all((tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes()
               for n in names)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of rank `rank` that torchrun process `parent` started."""
    for p in Path("/proc").iterdir():
        try:
            if not p.name.isdigit() or int((p / "stat").read_text().split()[3]) != parent:
                continue
            if f"RANK={rank}".encode() in (p / "environ").read_bytes().split(b"\0"):
                return int(p.name)
        except OSError:
            continue
    return None


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None or not Path("/proc").is_dir(),
                    reason="needs torchrun and /proc")
def test_a_rank_killed_mid_training_restarts_and_ends_as_an_uninterrupted_run(tmp_path):
    import signal
    import time

    sets = [a for s in TINY + ["train.iters=60", "train.checkpoint_every=5"] for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(run, *extra):
        return [TORCHRUN, "--standalone", "--nproc_per_node", "2", *extra, "-m", "pegasus", "--",
                "train", "--run", str(run), *sets]

    job = subprocess.Popen(command(tmp_path / "killed", "--max-restarts", "1"), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, deadline = False, time.time() + 300
    while job.poll() is None and time.time() < deadline:
        found = latest_checkpoint(tmp_path / "killed" / "checkpoints")
        if not killed and found is not None and int(found.stem.split("-")[1]) >= 10:
            pid = _rank_pid(job.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    _, err = job.communicate(timeout=60)
    assert killed and job.returncode == 0, err[-3000:]
    whole = subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints"))
    assert a["step"] == b["step"] == 60
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"])
