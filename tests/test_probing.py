"""Probing the fast path's uncompiled modes where the work runs (pegasus/fastpath/probe.py): the
choice rule, the candidates, timing with a mode made slow on purpose, the record in the run
folder, and the probe in sampling and training (forced on this CPU)."""

import json
import time

import pytest
import torch
from torch import nn

from pegasus.config import TrainConfig
from pegasus.fastpath import probe as probing
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.rules import Execution, FastPath
from pegasus.run.job import SamplingJob
from pegasus.run.layout import RunDir
from pegasus.run.load import load_trained_run
from pegasus.training import train
from tiny import tiny_config

PLAIN, CL = FastPath(False, False, False), FastPath(False, True, False)
KEY = WorkKey("sample", "slow-in", "{}", 4, 2)
BF16, BF16_CL = FastPath(True, False, False), FastPath(True, True, False)


def test_the_fastest_wins_only_by_more_than_the_margin():
    assert probing.fastest({PLAIN: 1.0, CL: 0.5, BF16: 0.8}) == CL
    assert probing.fastest({PLAIN: 1.0, BF16: 0.98}) == PLAIN  # within timing noise
    assert probing.fastest({PLAIN: 1.0, BF16: 1.2}) == PLAIN  # never slower than float32
    assert probing.fastest({PLAIN: float("inf"), BF16: 2.0}) == BF16  # float32 did not fit
    assert probing.fastest({PLAIN: float("inf"), BF16: float("inf")}) == PLAIN


def test_only_the_switches_left_at_auto_are_tried(monkeypatch):
    from pegasus.fastpath import rules as compiling

    monkeypatch.setattr(compiling, "cuda_capability", lambda d: (9, 0))
    cuda = torch.device("cuda")
    declared = FastPath.for_training(cuda, True, TrainConfig(), 10)
    assert declared == BF16_CL
    assert probing.candidates(declared, cuda, amp="auto", channels_last="auto") == [
        PLAIN, CL, BF16, BF16_CL]
    assert probing.candidates(declared, cuda, amp="bf16", channels_last="auto") == [BF16, BF16_CL]
    assert probing.candidates(declared, cuda, amp="auto", channels_last=True) == [CL, BF16_CL]
    monkeypatch.setattr(compiling, "cuda_capability", lambda d: (7, 5))  # no bf16 tensor cores
    assert probing.candidates(CL, cuda, amp="auto", channels_last="auto") == [PLAIN, CL]
    # train.probe: auto probes uncompiled work on CUDA, true on any device, false never;
    # compiled work is never probed.
    cpu = torch.device("cpu")
    assert probing.probes(cuda, BF16) and not probing.probes(cuda, FastPath(True, True, True))
    assert not probing.probes(cpu, BF16) and probing.probes(cpu, BF16, True)
    assert not probing.probes(cuda, BF16, False)
    assert not probing.probes(cpu, FastPath(False, False, True), True)


class SlowIn(nn.Module):
    """A score network that sleeps when its input comes in one memory format."""

    def __init__(self, slow_channels_last: bool) -> None:
        super().__init__()
        self.slow_channels_last = slow_channels_last
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x, sigma):
        channels_last = not x.is_contiguous()  # contiguous in channels_last instead
        if channels_last == self.slow_channels_last:
            time.sleep(0.02)
        return self.conv(x) / sigma[:, None, None, None]


@pytest.mark.parametrize("slow_channels_last", [True, False])
def test_the_probe_picks_the_faster_layout_and_records_it(tmp_path, slow_channels_last):
    model, cpu, record = SlowIn(slow_channels_last), torch.device("cpu"), tmp_path / "fast-path.json"
    heard = []
    workload = probing.sampling_workload(model, 2, (3, 4, 4), cpu)
    chosen = probing.probe([PLAIN, CL], workload, model, cpu, record=record, key=KEY,
                           notify=heard.append)
    assert chosen == (PLAIN if slow_channels_last else CL)
    assert model.conv.weight.is_contiguous()  # left contiguous: the caller lays it out
    (entry,) = json.loads(record.read_text()).values()
    assert entry["chosen"] == chosen.describe() and set(entry["ms"]) == {"eager float32",
                                                                         "channels_last"}
    assert heard[0].startswith("fast path timed on cpu: eager float32 ") and \
        heard[0].endswith(f"; chosen: {chosen.describe()}")

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    # Once per run folder: the same key on the same device reads the record.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probing, "time_candidates", no_timing)
        assert probing.probe([PLAIN, CL], workload, model, cpu, record=record, key=KEY) == chosen
    # A damaged record costs a probe, not the work.
    for damaged in ("{not json", "[1, 2]", json.dumps({next(iter(json.loads(record.read_text()))): 3})):
        record.write_text(damaged)
        assert probing.probe([PLAIN, CL], workload, model, cpu, record=record, key=KEY) == chosen


def test_a_slow_start_does_not_count_against_the_first_candidate_timed(monkeypatch):
    """A GPU's clock ramps up, and the first candidate is timed first: interleaved rounds, the
    best of each counting, give two equal modes equal times (on a clock the calls advance)."""
    clock = [0.0]
    monkeypatch.setattr(probing.time, "perf_counter", lambda: clock[0])
    calls = []

    def workload(path):
        def call():
            calls.append(path)
            clock[0] += 20.0 if len(calls) <= 5 else 1.0  # the first five calls run slow
        return call

    times = probing.time_candidates([PLAIN, CL], workload, torch.device("cpu"))
    assert times == {PLAIN: 1.0, CL: 1.0} and probing.fastest(times) == PLAIN
    assert calls[:5] == [PLAIN] * 5  # without the second round, PLAIN would time 20x slower


def test_a_mode_that_runs_out_of_memory_is_never_chosen(tmp_path):
    heard = []

    def workload(path):
        def call():
            if not path.amp:  # float32 needs the most memory
                raise torch.OutOfMemoryError("CUDA out of memory")
            time.sleep(0.001)
        return call

    model = nn.Linear(1, 1)
    chosen = probing.probe([PLAIN, BF16], workload, model, torch.device("cpu"), key=KEY,
                           notify=heard.append)
    assert chosen == BF16 and "eager float32 out of memory" in heard[0]


class DropoutBatchNorm(nn.Module):
    """A score network with what a third-party backbone may have: dropout (global random
    stream) and batch norm (running statistics that training passes move)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.drop = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Dropout(0.5)

    def forward(self, x, sigma):
        return self.drop(self.norm(self.conv(x))) / sigma[:, None, None, None]


def test_the_training_probe_leaves_random_streams_and_buffers_as_they_were():
    model, cpu = DropoutBatchNorm().train(), torch.device("cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    workload = probing.training_workload(model, 4, (3, 4, 4), torch.tensor([1.0, 0.5]))
    torch.manual_seed(7)
    probing.probe([PLAIN, CL], workload, model, cpu, key=KEY)
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))  # the stream the run goes on drawing from
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # running mean, var, batches tracked


def test_sampling_probes_once_per_run_folder(run, monkeypatch):
    """Forced on this CPU, the run's tiny U-Net has one switch to try (channels_last; bf16
    does not pay on a CPU), so two candidates are timed, once."""
    monkeypatch.setattr(probing, "probes", lambda device, path, setting: not path.compile)
    RunDir(run).probes.unlink(missing_ok=True)
    heard = []
    trained = load_trained_run(run, device="cpu", notify=heard.append)
    path = SamplingJob.make(trained, trained.plan("heun", 5), num=3, execution=Execution(compile="off")).path
    assert path in (PLAIN, CL) and len(heard) == 1 and "chosen: " in heard[0]
    (key,) = json.loads(RunDir(run).probes.read_text())
    assert key.startswith("cpu | torch ") and "sample, unet, " in key and "batch 3" in key
    again = load_trained_run(run, device="cpu", notify=heard.append)
    job = SamplingJob.make(again, again.plan("heun", 5), num=3, execution=Execution(compile="off"))
    assert job.path == path and len(heard) == 1
    assert torch.isfinite(job.images(0)).all()


def test_sampling_times_the_layout_but_never_bf16_against_float32(run, monkeypatch):
    """bf16 changes the images; a seed's images must not hang on a timing. On a GPU with bf16
    tensor cores (faked), sampling's candidates all keep the rule's bf16."""
    from pegasus.fastpath import rules as compiling

    monkeypatch.setattr(compiling, "cuda_capability", lambda d: (9, 0))
    monkeypatch.setattr(probing, "probes", lambda device, path, setting: not path.compile)
    offered = []
    monkeypatch.setattr(probing, "probe", lambda paths, *a, **k: offered.extend(paths) or paths[0])
    trained = load_trained_run(run, device="cpu")
    heun = trained.plan("heun", 5)
    assert SamplingJob.make(trained, heun, num=2,
                            execution=Execution(compile="off", amp="auto")).path == BF16
    assert offered == [BF16, BF16_CL]  # amp as the rule says; both layouts timed
    offered.clear()
    assert SamplingJob.make(trained, heun, num=2,
                            execution=Execution(compile="off", amp="off")).path == PLAIN
    assert offered == [PLAIN, CL]


def test_training_probes_without_touching_the_runs_random_streams(tmp_path, monkeypatch):
    """The probe's forward and backward passes use a generator of their own and leave no
    gradient behind: a probed run that keeps the declared path trains exactly as an unprobed one."""
    plain = train(tiny_config(), tmp_path / "plain", tensorboard=False)
    monkeypatch.setattr(probing, "fastest", lambda times: next(iter(times)))  # the declared one
    heard, started = [], []
    probed = train(tiny_config("train.probe=true"), tmp_path / "probed", tensorboard=False,
                   notify=heard.append,
                   on_start=lambda config, parameters, fast: started.append(fast))
    assert started == [PLAIN] and len(heard) == 1 and heard[0].startswith("fast path timed on cpu")
    (key,) = json.loads(RunDir(tmp_path / "probed").probes.read_text())
    assert "train, unet, " in key
    assert probed.losses == plain.losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_and_sampling_probe_on_cuda(tmp_path):
    """On a GPU the probe runs unforced: training times its candidates once and records them,
    a resumed run reads the record, and sampling probes for itself."""
    heard = []
    config = tiny_config('train.device="cuda"', "train.batch_size=8")
    train(config, tmp_path / "r", tensorboard=False, notify=heard.append)
    assert [line for line in heard if line.startswith("fast path timed on ")]
    record = json.loads(RunDir(tmp_path / "r").probes.read_text())
    assert any("| train, " in key for key in record)
    heard.clear()
    train(tiny_config('train.device="cuda"', "train.batch_size=8", "train.iters=8"),
          tmp_path / "r", resume=True, tensorboard=False, notify=heard.append)
    assert not [line for line in heard if line.startswith("fast path timed on ")]
    trained = load_trained_run(tmp_path / "r", device="cuda", notify=heard.append)
    images = SamplingJob.make(trained, trained.plan("heun", 5), num=4, batch_size=8,
                              execution=Execution(compile="off")).images(0)
    assert torch.isfinite(images).all() and images.shape == (4, 3, 16, 16)
    assert any("| sample, " in key for key in json.loads(RunDir(tmp_path / "r").probes.read_text()))


def test_pegasus_device_shows_the_rules_and_what_a_run_keeps(run, monkeypatch):
    from typer.testing import CliRunner

    from pegasus.cli import app

    runner = CliRunner()
    monkeypatch.setattr(probing, "probes", lambda device, path, setting: not path.compile)
    RunDir(run).probes.unlink(missing_ok=True)
    trained = load_trained_run(run, device="cpu")
    SamplingJob.make(trained, trained.plan("heun", 5), num=2, execution=Execution(compile="off"))
    result = runner.invoke(app, ["device", "--run", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "device: cpu" in text and "amp auto: off" in text and "compile auto: off" in text
    assert "fast path timings: 1" in text and "for sample, unet, " in text and "eager float32 " in text
    assert "compiled networks cached: " in text and "/pegasus/compiled)" in text
    report = json.loads(runner.invoke(app, ["device", "--run", str(run), "--device", "cpu",
                                            "--json"]).output)
    assert report["device"] == "cpu" and set(report["auto"]) == {"amp", "compile", "channels_last"}
    assert report["compile cache"]["path"].endswith("pegasus/compiled")
    (entry,) = report["run"]["timed"]
    assert entry["gpu"] == "cpu" and entry["chosen"] in entry["ms"]
    assert runner.invoke(app, ["device", "--run", str(run / "missing")]).exit_code == 2


def test_the_auto_rules_say_why_per_gpu(monkeypatch):
    from pegasus.fastpath import rules as compiling

    for capability, amp, compile in (((9, 0), "on:", "on for long work"),
                                      ((7, 5), "off: compute capability 7.5", "on for long work"),
                                      ((6, 0), "off: compute capability 6.0", "off: Triton")):
        monkeypatch.setattr(compiling, "cuda_capability", lambda d, c=capability: c)
        rules = compiling.auto_rules(torch.device("cuda"))
        assert rules["amp"].startswith(amp) and rules["compile"].startswith(compile), rules
        assert "timed once per run" in rules["channels_last"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pegasus_device_names_the_gpu_on_cuda():
    from pegasus.devices import device_facts

    facts = device_facts(torch.device("cuda"))
    major, minor = torch.cuda.get_device_capability()
    assert facts["gpu"] == torch.cuda.get_device_name() and facts["compute capability"] == f"{major}.{minor}"
    assert facts["memory"].endswith(" GiB") and facts["cuda"] == torch.version.cuda
