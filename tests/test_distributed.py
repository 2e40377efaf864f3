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
