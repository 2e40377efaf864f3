"""DDP under torchrun on CPU (gloo): two ranks, each on its own shard; rank 0 checkpoints."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pegasus.run.checkpoint import latest_checkpoint, load_checkpoint
from pegasus.training.batches import EpochSampler
from tiny import TINY

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("n,block,world", [(9, 1, 2), (9, 256, 2), (600, 256, 2), (1000, 256, 3),
                                            (5, 2, 4)])
def test_shares_are_whole_blocks_in_rank_order_that_cover_the_items(n, block, world):
    from pegasus.distributed import Context, share

    shares = [share(Context(r, world, torch.device("cpu"), False), n, block) for r in range(world)]
    assert shares[0][0] == 0 and shares[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
    assert all(lo % block == 0 for lo, hi in shares if lo < hi)
    counts = sorted(-(-(hi - lo) // block) for lo, hi in shares)
    assert counts[-1] - counts[0] <= 1  # the blocks are shared out evenly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launchers(args, nodes: int, extra=()) -> list[list[str]]:
    """torchrun command lines running `pegasus ARGS` as 2 ranks: one launcher of 2 processes,
    or two launchers ("nodes") of 1 process each meeting at a c10d rendezvous on localhost."""
    if nodes == 1:
        return [[TORCHRUN, "--standalone", "--nproc_per_node", "2", *extra, "-m", "pegasus", "--",
                 *args]]
    port = _free_port()
    return [[TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc_per_node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
             "--rdzv-id", f"pegasus-test-{port}", "--local-addr", "127.0.0.1", *extra,
             "-m", "pegasus", "--", *args] for rank in range(2)]


def _start(command: list[str]) -> subprocess.Popen:
    # A session of its own, so that a launcher past its time is killed with its workers.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)


def _finish(job: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The job's stdout and stderr once it has ended well; a job still running after `timeout`
    seconds is killed, workers and all, and fails the test instead of hanging it."""
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"still running after {timeout} s: {' '.join(job.args)}\n{err[-3000:]}")
    assert job.returncode == 0, err[-3000:]
    return out, err


def _two_ranks(args, nodes: int = 1, timeout: float = 240, extra=()) -> str:
    """`pegasus ARGS` on 2 ranks; what all the launchers printed."""
    jobs = [_start(c) for c in _launchers(args, nodes, extra)]
    return "".join(o + e for o, e in (_finish(j, timeout) for j in jobs))


def test_ranks_see_disjoint_shards_that_cover_the_epoch():
    ranks = [EpochSampler(16, 4, seed=0, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([s.indices(step) for step in range(2)]) for s in ranks]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(16))


def _train(run: Path, *sets: str, resume: bool = False, nodes: int = 1) -> str:
    return _two_ranks(["train", "--run-dir", str(run), *(["--resume"] if resume else []),
                       *[a for s in [*TINY, *sets] for a in ("--set", s)]], nodes)


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_nodes_train_and_two_ranks_of_one_node_resume(tmp_path):
    # With the probe on, rank 0 times the layouts and both ranks take its choice (a collective
    # every rank must reach, or the run hangs).
    said = _train(tmp_path, "train.iters=4", "train.probe=true", nodes=2)
    assert said.count("fast path timed on cpu") == 1
    assert len(json.loads((tmp_path / "fast-path.json").read_text())) == 1
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["step"] == 4 and state["world_size"] == 2
    assert len(state["rng"]["generators"]) == 2
    assert not torch.equal(state["rng"]["generators"][0], state["rng"]["generators"][1])
    _train(tmp_path, "train.iters=6", resume=True)
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 6


def test_a_process_outside_torchrun_that_cannot_join_its_group_is_one_line(run, tmp_path):
    from typer.testing import CliRunner

    from pegasus.cli import app
    from test_errors import one_line

    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": None}
    one_line(CliRunner().invoke(app, ["sample", "--run", str(run), "--num", "2", "--folder",
                                      str(tmp_path / "f")], env=env),
             "cannot join the group of 2 processes")


def test_a_restarted_torchrun_job_resumes_only_its_own_checkpoints(tmp_path, monkeypatch):
    from pegasus.run.layout import RunDir
    from pegasus.training import _record_job, restarted_job, train
    from tiny import tiny_config

    train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    run = RunDir(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert not restarted_job(run)  # a first attempt never resumes by itself
    _record_job(run)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert restarted_job(run)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")  # another job's checkpoints
    assert not restarted_job(run)


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
    job = _start([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script)])
    with pytest.raises(AssertionError) as failed:
        _finish(job, timeout=60)
    # Which rank torchrun names as the root cause is a race: rank 0's collective fails too
    # once rank 1's connection closes.
    assert "job.py FAILED" in str(failed.value)


def _same_folders(a: Path, b: Path, num: int) -> None:
    names = sorted(p.name for p in a.glob("*.png"))
    assert len(names) == num and names == sorted(p.name for p in b.glob("*.png"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def _scores(said: str) -> tuple[float, float]:
    text = " ".join(said.split())
    return float(text.split("KID ")[1].split(" ± ")[0]), float(text.split("FID ")[1].split()[0])


@pytest.fixture
def one_thread():
    """This process on one CPU thread, as each torchrun worker is (OMP_NUM_THREADS=1): the
    thread count decides a CPU image's bytes, and folders record it (run/folder.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_ranks_write_the_folder_one_process_writes_and_continue_any_stopped_job(tmp_path,
                                                                                 one_thread):
    from typer.testing import CliRunner

    from pegasus.cli import app
    from pegasus.training import train
    from tiny import tiny_config

    run = tmp_path / "run"
    train(tiny_config("train.iters=2"), run, tensorboard=False)
    job = ["sample", "--run", str(run), "--num", "9", "--batch-size", "2", "--sampler", "heun",
           "--steps", "5", "--folder"]
    one, two = tmp_path / "one", tmp_path / "two"
    runner = CliRunner()
    alone = runner.invoke(app, [*job, str(one)])  # one process: this one
    assert alone.exit_code == 0, alone.output
    _two_ranks([*job, str(two)], nodes=2)  # two nodes of one process each
    _same_folders(one, two, 9)
    # What a job stopped at a random moment leaves: images missing here and there (each is
    # written whole) and a half-written one, continued here on 1 process (2 restarted ranks
    # continue one in test_a_rank_killed_while_sampling_a_folder_...).
    for name in random.Random(0).sample(sorted(p.name for p in two.glob("*.png")), 4):
        (two / name).unlink()
    (two / ".000004.png.x1y2.tmp").write_bytes(b"half an image")
    assert runner.invoke(app, [*job, str(two)]).exit_code == 0
    _same_folders(one, two, 9)
    assert not list(two.glob(".*.tmp"))
    # eval on 2 ranks: each extracts its share of the features, rank 0 scores them once.
    assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "2"]).exit_code == 0
    alone = runner.invoke(app, ["eval", "--run", str(run), "--samples", str(one)])
    assert alone.exit_code == 0, alone.output
    shared = _two_ranks(["eval", "--run", str(run), "--samples", str(one)])
    assert _scores(shared) == pytest.approx(_scores(alone.output), rel=1e-3, abs=1e-6)
    known = [" ".join(said.split()).split("the judge recognises ")[1].split("%")[0]
             for said in (shared, alone.output)]
    assert known[0] == known[1]  # the ranks' counts summed


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


def _kill_rank_when(job: subprocess.Popen, rank: int, ready, timeout: float = 240) -> str:
    """SIGKILL the worker of `rank` of torchrun `job` once `ready()` holds, then let the job
    finish (torchrun restarts the group); what it printed."""
    killed, deadline = False, time.time() + timeout
    while not killed and job.poll() is None and time.time() < deadline:
        pid = _rank_pid(job.pid, rank) if ready() else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    out, err = _finish(job, timeout)
    assert killed, "the job ended before its rank could be killed"
    return out + err


KILLABLE = pytest.mark.skipif(TORCHRUN is None or not Path("/proc").is_dir(),
                              reason="needs torchrun and /proc")


@pytest.mark.slow
@KILLABLE
def test_a_rank_killed_mid_training_restarts_and_ends_as_an_uninterrupted_run(tmp_path):
    sets = ["train.iters=30", "train.checkpoint_every=5"]
    killed = tmp_path / "killed"
    job = _start(_launchers(["train", "--run", str(killed),
                             *[a for s in [*TINY, *sets] for a in ("--set", s)]], 1,
                            ("--max-restarts", "1"))[0])

    def past_step_10() -> bool:
        found = latest_checkpoint(killed / "checkpoints")
        return found is not None and int(found.stem.split("-")[1]) >= 10

    _kill_rank_when(job, 1, past_step_10)
    _train(tmp_path / "whole", *sets)
    a = load_checkpoint(latest_checkpoint(killed / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints"))
    assert a["step"] == b["step"] == 30
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"])


@pytest.mark.slow
@KILLABLE
def test_a_rank_killed_while_sampling_a_folder_restarts_and_completes_the_same_images(tmp_path):
    from typer.testing import CliRunner

    from pegasus.cli import app
    from pegasus.training import train
    from tiny import tiny_config

    run = tmp_path / "run"
    # Continuous noise levels, so that heun takes the budget asked for (not the few trained
    # levels): blocks of one image at 101 evaluations, slow enough for rank 1 to be mid-job.
    train(tiny_config("train.iters=2", 'noise.training="log-uniform"'), run, tensorboard=False)
    job = ["sample", "--run", str(run), "--num", "8", "--batch-size", "1", "--sampler", "heun",
           "--steps", "101", "--folder"]
    killed, one = tmp_path / "killed", tmp_path / "one"
    launched = _start(_launchers([*job, str(killed)], 1, ("--max-restarts", "1"))[0])
    _kill_rank_when(launched, 1, lambda: any(killed.glob("0*.png")))
    alone = CliRunner().invoke(app, [*job, str(one)])  # one process: this one
    assert alone.exit_code == 0, alone.output
    _same_folders(one, killed, 8)
    assert not list(killed.glob(".*.tmp"))  # what the killed rank was writing, removed


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_ranks_tune_a_run_that_then_samples(tmp_path):
    """`pegasus tune` under torchrun is DDP training from the source's EMA. (Ranks share a
    folder's images whatever the sampler: test_ranks_write_the_folder_one_process_writes_...)"""
    from typer.testing import CliRunner

    from pegasus.cli import app
    from pegasus.training import train
    from tiny import tiny_config

    source, tuned = tmp_path / "run", tmp_path / "ct"
    train(tiny_config("train.iters=2"), source, tensorboard=False)
    _two_ranks(["tune", "--run", str(source), "--to", str(tuned), "--iters", "4"])
    state = load_checkpoint(latest_checkpoint(tuned / "checkpoints"))
    assert state["step"] == 4 and state["world_size"] == 2
    assert state["config"]["objective"]["name"] == "ect"
    before = load_checkpoint(latest_checkpoint(source / "checkpoints"))["ema"]
    assert any(not torch.equal(before[k], w) for k, w in state["ema"].items())  # it trained
    alone = CliRunner().invoke(app, ["sample", "--run", str(tuned), "--num", "5", "--sampler",
                                     "consistency", "--steps", "2", "--folder",
                                     str(tmp_path / "one")])
    assert alone.exit_code == 0, alone.output
    assert len(list((tmp_path / "one").glob("*.png"))) == 5


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_ranks_started_differently_are_refused_before_any_work(tmp_path):
    """The audit's hang: rank 0 given train.iters=10 and rank 1 train.iters=20 blocked forever.
    The ranks agree on the resolved request first: both end with code 2 and rank 0's one line
    names the field; nothing is written."""
    launchers = _launchers(["train", "--run-dir", str(tmp_path / "r"),
                            *[a for s in TINY for a in ("--set", s)]], nodes=2)
    for rank, launcher in enumerate(launchers):
        launcher.extend(["--set", f"train.iters={10 * (rank + 1)}"])
    jobs = [_start(c) for c in launchers]
    said = []
    for job in jobs:
        try:
            said.append(job.communicate(timeout=120))
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            pytest.fail("ranks started differently hung")
        assert job.returncode != 0
    rank0_out, rank0_err = said[0]
    errors = [line for line in rank0_err.splitlines() if line.startswith("error:")]
    assert errors == ["error: the ranks were started differently: train.iters is 10 on rank 0 "
                      "but 20 on rank 1; start every rank with the same command"], rank0_err
    # torchrun reports its failed workers with a traceback of its own; pegasus's code none.
    assert "pegasus/" not in rank0_err + said[1][1] and "gloo" not in rank0_err + said[1][1]
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_agreement_names_the_first_difference_and_passes_equal_requests(monkeypatch):
    from pegasus import distributed
    from pegasus.errors import UserError

    ctx = distributed.Context(0, 2, torch.device("cpu"), False)
    config = {"train": {"iters": 10, "lr": 2e-4}, "run folder": "runs/a"}
    other = {"train": {"iters": 10, "lr": 1e-4}, "run folder": "runs/a"}
    monkeypatch.setattr(distributed, "gather", lambda ctx, mine: [mine, dict(
        distributed._flat(other))])
    with pytest.raises(UserError, match="train.lr is 0.0002 on rank 0 but 0.0001 on rank 1") as e:
        distributed.agree(ctx, config)
    assert e.value.shared  # every rank raises it: rank 0 alone says it
    other["train"]["lr"] = 2e-4
    distributed.agree(ctx, config)
    distributed.agree(distributed.alone(torch.device("cpu")), config)  # one process: no collective


@pytest.mark.parametrize("raised,said", [
    ("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting "
     "3000ms for send operation to complete", "the other ranks did not answer within 3 s (Timed "
     "out waiting 3000ms for send operation to complete); one is stuck or gone"),
    ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
     "[127.0.0.1]:19868. This is typically caused by a remote worker crashing. GLHF!",
     "the group broke off (Connection closed by peer [127.0.0.1]:19868): another rank stopped"),
])
def test_a_broken_group_ends_the_rank_with_one_line(monkeypatch, raised, said):
    from pegasus import distributed
    from pegasus.errors import UserError

    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "3")
    monkeypatch.setattr(distributed, "setup",
                        lambda device: distributed.Context(1, 2, torch.device("cpu"), False))
    monkeypatch.setattr(distributed, "agree", lambda ctx, request: None)
    with pytest.raises(UserError) as e, distributed.group("cpu"):
        raise RuntimeError(raised)
    assert str(e.value).startswith(f"rank 1: {said}") and "\n" not in str(e.value)
    with pytest.raises(ZeroDivisionError), distributed.group("cpu"):  # not the group's: as it is
        raise ZeroDivisionError
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(UserError, match="PEGASUS_COLLECTIVE_TIMEOUT must be a number of seconds"):
        distributed.collective_timeout()


def test_a_rank_given_a_bad_option_alone_says_so_itself(run, monkeypatch, capsys):
    """Rank 0 cannot hear of an option refused on another rank before the group forms: that
    rank says it, its rank first. What every rank raised alike stays rank 0's to say."""
    from typer.testing import CliRunner

    from pegasus.cli import app

    cli = sys.modules["pegasus.cli.app"]
    monkeypatch.setattr(cli, "_QUIET", True)
    monkeypatch.setattr(cli, "_RANK", "1")
    result = CliRunner().invoke(app, ["sample", "--run", str(run), "--num", "0", "--folder", "f"])
    assert result.exit_code == 2 and "error: rank 1: " in result.output, result.output
    capsys.readouterr()
    cli.error_line("said by every rank", shared=True)
    cli.error_line("said by rank 1 alone")
    assert capsys.readouterr().err.split() == "error: rank 1: said by rank 1 alone".split()
