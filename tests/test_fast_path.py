"""The sampling fast path (bf16 autocast, channels_last, torch.compile with a cache in the run
folder), on CPU."""

import dataclasses
import os
import shutil

import pytest
import torch
import torch._dynamo
from typer.testing import CliRunner

from pegasus import fastpath
from pegasus.cli import app
from pegasus.config import TrainConfig
from pegasus.fastpath.rules import AUTO_MIN_EVALUATIONS, TRAIN_AUTO_MIN_STEPS, Execution, FastPath
from pegasus.run.job import SamplingJob
from pegasus.run.load import load_trained_run
from pegasus.tasks.blend import BlendRequest, blend
from pegasus.tasks.inpaint import InpaintRequest, inpaint_run
from test_errors import one_line

runner = CliRunner()


@pytest.fixture
def gpu(monkeypatch):
    """torch.device("cuda") on this CPU machine, as a GPU of a given compute capability."""
    from pegasus.fastpath import rules as compiling

    def as_capability(capability):
        monkeypatch.setattr(compiling, "cuda_capability",
                            lambda d: capability if d.type == "cuda" else None)
        return torch.device("cuda")

    return as_capability


def test_auto_compiles_only_long_work_on_a_gpu(gpu):
    cuda, cpu = gpu((9, 0)), torch.device("cpu")
    assert FastPath.choose(cuda, True, AUTO_MIN_EVALUATIONS) == FastPath(True, True, True)
    assert FastPath.choose(cuda, False, AUTO_MIN_EVALUATIONS - 1) == FastPath(True, False, False)
    assert FastPath.choose(cpu, False, 10**6) == FastPath(False, False, False)
    # channels_last as declared on a CPU too (oneDNN's NHWC convolutions: bench/README.md)
    on = Execution(compile="on", amp="on")
    assert FastPath.choose(cpu, True, 1, on) == FastPath(True, True, True)
    # train.amp's word for on is accepted by sampling's switch too.
    assert (FastPath.choose(cpu, True, 1, Execution(amp="bf16"))
            == FastPath.choose(cpu, True, 1, Execution(amp="on")))


def test_auto_keeps_older_gpus_on_what_they_run_fast(gpu):
    """bf16 autocast needs bf16 tensor cores (compute capability 8.0), torch.compile Triton
    (7.0): a T4 (7.5) compiles in float32, a P100 (6.0) runs eager float32; asked for, each
    switch is still honoured."""
    t4 = gpu((7, 5))
    assert FastPath.choose(t4, True, 10**6) == FastPath(False, True, True)
    assert FastPath.for_training(t4, True, TrainConfig(), 10**6) == FastPath(False, True, True)
    p100 = gpu((6, 0))
    assert FastPath.choose(p100, False, 10**6) == FastPath(False, False, False)
    assert FastPath.for_training(p100, True, TrainConfig(), 10**6) == FastPath(False, True, False)
    on = Execution(compile="on", amp="on")
    assert FastPath.choose(p100, False, 1, on) == FastPath(True, False, True)


def test_channels_last_only_where_a_backbone_declares_it_pays(gpu):
    """NHWC made the U-Net slower on an H100 (0.80x) and the RefineNet faster: each built-in
    declares what was measured, and a backbone that declares nothing stays NCHW."""
    from pegasus.hookspecs import Backbone
    from pegasus.registry import get_backbone

    cuda = gpu((9, 0))
    declared = {name: get_backbone(name)[0].channels_last for name in ("refinenet", "unet")}
    assert declared == {"refinenet": True, "unet": False}
    undeclared = Backbone(name="mine", description="", factory=lambda config, res, channels: None)
    assert not FastPath.choose(cuda, undeclared.channels_last, 10**6).channels_last
    assert FastPath.choose(cuda, declared["refinenet"], 10**6).channels_last


def test_a_channels_last_refinenet_scores_as_the_plain_one_on_a_cpu():
    """The RefineNet declares channels_last, which the fast path now uses on a CPU too (oneDNN's
    NHWC convolutions were 1.3-1.6x faster per evaluation there): the same scores, to float
    rounding, and the module keeps its parameters' values."""
    import copy

    from pegasus.fastpath.compile import fast_score
    from pegasus.model.score import ScoreModel
    from pegasus.registry import get_backbone

    spec, _ = get_backbone("refinenet")
    torch.manual_seed(0)
    model = ScoreModel(spec.build({"ngf": 8}, res=32)).eval()
    cpu = torch.device("cpu")
    path = FastPath.choose(cpu, spec.channels_last, 10**6)
    assert path == FastPath(amp=False, channels_last=True, compile=False)
    x, sigma = torch.rand(3, 3, 32, 32), torch.tensor([5.0, 1.0, 0.1])
    with torch.no_grad():
        fast = fast_score(copy.deepcopy(model), cpu, path)(x, sigma)
        torch.testing.assert_close(fast, model(x, sigma), rtol=1e-4, atol=1e-4)


def test_cudnn_searches_its_algorithms_on_cuda_only_and_only_for_the_duration():
    from pegasus.fastpath.rules import conv_autotuning

    before = torch.backends.cudnn.benchmark
    with conv_autotuning(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    torch.backends.cudnn.benchmark = False
    try:
        with conv_autotuning(torch.device("cpu")):
            assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


def test_training_compiles_long_runs_on_a_gpu_unless_told(gpu):
    cuda, cpu = gpu((9, 0)), torch.device("cpu")
    auto = TrainConfig()
    assert FastPath.for_training(cuda, False, auto, TRAIN_AUTO_MIN_STEPS).compile
    assert not FastPath.for_training(cuda, False, auto, TRAIN_AUTO_MIN_STEPS - 1).compile
    assert not FastPath.for_training(cpu, False, auto, 10**6).compile
    assert FastPath.for_training(cpu, False, TrainConfig(compile=True), 1).compile
    assert not FastPath.for_training(cuda, False, TrainConfig(compile=False), 10**6).compile


def test_training_compiles_shorter_runs_once_the_compile_is_cached(gpu):
    """A resumed run whose compile the run folder holds loads it instead of compiling: "auto"
    then compiles for TRAIN_CACHED_MIN_STEPS steps left, not TRAIN_AUTO_MIN_STEPS."""
    from pegasus.fastpath.rules import TRAIN_CACHED_MIN_STEPS

    cuda, cpu, auto = gpu((9, 0)), torch.device("cpu"), TrainConfig()
    asked = []

    def cached(path):
        asked.append(path)
        return True

    path = FastPath.for_training(cuda, True, auto, TRAIN_CACHED_MIN_STEPS, cached)
    assert path == FastPath(True, True, True) and asked == [path]  # the very path it compiles
    assert not FastPath.for_training(cuda, True, auto, TRAIN_CACHED_MIN_STEPS,
                                     lambda path: False).compile
    assert not FastPath.for_training(cuda, True, auto, TRAIN_CACHED_MIN_STEPS - 1, cached).compile
    assert not FastPath.for_training(cpu, True, auto, 10**6, cached).compile
    assert not FastPath.for_training(cuda, True, TrainConfig(compile=False), 10**6, cached).compile
    assert not FastPath.for_training(gpu((6, 0)), True, auto, 10**6, cached).compile  # no Triton


def test_training_and_sampling_settle_auto_by_the_same_rules(gpu):
    """train.amp, train.channels_last: bf16 where it pays, channels_last as the backbone
    declares, each overridable, as sampling's switches are."""
    cuda, cpu = gpu((9, 0)), torch.device("cpu")
    for device in (cuda, cpu):
        for declared in (True, False):
            trains = FastPath.for_training(device, declared, TrainConfig(), 10**6)
            samples = FastPath.choose(device, declared, 10**6)
            assert (trains.amp, trains.channels_last) == (samples.amp, samples.channels_last)
    told = FastPath.for_training(cuda, True, TrainConfig(amp="off", channels_last=False), 1)
    assert told == FastPath(False, False, False)
    told = FastPath.for_training(cpu, False, TrainConfig(amp="bf16", channels_last=True), 1)
    assert told == FastPath(True, True, False)


COMPILED = FastPath(amp=False, channels_last=False, compile=True, backend="aot_eager")


@pytest.fixture
def on_path(monkeypatch):
    """Sampling jobs run on the fast path given, whatever the rules would choose. The aot_eager
    backend traces with dynamo and AOTAutograd, as inductor does, without its C++ build
    (minutes on a 2-core machine)."""
    def use(path: FastPath) -> FastPath:
        monkeypatch.setattr(fastpath, "for_sampling", lambda *args, **kwargs: path)
        return path

    return use


def test_compiled_bf16_sampling_matches_eager_within_bf16_rounding(run, on_path):
    trained = load_trained_run(run, device="cpu")
    plan = trained.plan("heun", 9)
    eager = SamplingJob.make(trained, plan, num=4).images(0)
    on_path(COMPILED)
    job = SamplingJob.make(trained, plan, num=4)
    assert job.path.compile and not job.path.amp
    assert SamplingJob.make(trained, plan, num=4).score is job.score  # compiled once per process
    torch.testing.assert_close(job.images(0), eager, rtol=1e-4, atol=1e-4)
    on_path(FastPath(amp=True, channels_last=False, compile=False))
    assert (SamplingJob.make(trained, plan, num=4).images(0) - eager).abs().mean() < 0.05


def test_a_compile_is_cached_for_the_user_and_loaded_by_the_next_process(run, monkeypatch,
                                                                         on_path):
    """aot_eager makes no artifacts to cache (inductor's C++ build is too slow for this suite), so
    torch's artifact calls are stood in for: what pegasus saves, where and when, and that the
    next start loads it before compiling."""
    from pegasus.fastpath import cache

    saved, loaded = [], []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts",
                        lambda: saved.append(1) or (b"kernels", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", loaded.append)
    shutil.rmtree(cache.compile_folder(), ignore_errors=True)  # other tests' files
    notices = []
    trained = load_trained_run(run, device="cpu", notify=notices.append)
    on_path(COMPILED)
    plan = trained.plan("heun", 5)
    job = SamplingJob.make(trained, plan, num=2)
    files = lambda: sorted(cache.compile_folder().glob("*.bin"))  # noqa: E731
    assert not files() and not loaded and not notices  # nothing compiles before the first evaluation
    job.images(0)
    assert saved == [1] and [cache.signed(f) for f in files()] == [True]
    assert files()[0].read_bytes().endswith(b"kernels")
    # The user hears of the wait once, and whether it is a compile or a load.
    assert notices == ["compiling the network for batch 2, once: it is kept in your compile "
                       "cache for the next run"]
    # The run folder holds data only: no compile, which is pickled code, ever lands there.
    assert not any(p.suffix == ".bin" for p in run.rglob("*"))
    again = load_trained_run(run, device="cpu", notify=notices.append)  # a second `pegasus sample`
    SamplingJob.make(again, plan, num=2).images(0)
    assert loaded == [b"kernels"] and saved == [1]  # loaded, not saved again
    assert notices[1:] == ["loading the network compiled for batch 2 from your compile cache"]
    # Another fast path (here bf16) or another batch size is another compile: its own file, by
    # the key the job named this one by (the test of a hostile cache below writes that file).
    from pegasus.fastpath.keys import WorkKey

    key = WorkKey.of("sample", trained.config)
    named = {key.compile_file(torch.device("cpu"), path, (n, 3, 16, 16))
             for path, n in ((COMPILED, 2), (dataclasses.replace(COMPILED, amp=True), 2),
                             (COMPILED, 3))}
    assert len(named) == 3 and files()[0] in named


@pytest.mark.parametrize("graphed", [False, True], ids=["launched", "graphed"])
def test_one_compile_serves_every_sampler(run, monkeypatch, on_path, graphed):
    """A recompile is a second compile (tens of seconds on a GPU): every call of every sampler
    must meet the same guards (shapes, strides, dtypes), so that one compiled network serves
    them all, as in a blend report or bench/sample_quality.py; the static buffers a graphed
    network is called with too (fastpath/graphs.py, here with a stand-in for the capture)."""
    if graphed:
        from test_langevin_and_graphs import _CountingCapture

        from pegasus.fastpath import graphs

        monkeypatch.setattr(graphs, "default_capture", lambda device: _CountingCapture())
    torch._dynamo.reset()
    trained = load_trained_run(run, device="cpu")
    on_path(COMPILED)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for sampler in ("als", "heun", "pc", "cas"):
            x = SamplingJob.make(trained, trained.plan(sampler, 8), num=2).images(0)
            assert torch.isfinite(x).all(), sampler


def test_a_cache_that_cannot_be_saved_costs_a_warning_not_the_work(run, monkeypatch, capsys,
                                                                   on_path):
    import warnings

    from pegasus.cli.app import show_library_warnings
    from pegasus.errors import PegasusWarning
    from pegasus.fastpath import cache

    def fail():
        raise OSError("disk full")

    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", fail)
    shutil.rmtree(cache.compile_folder(), ignore_errors=True)  # other tests' files
    trained = load_trained_run(run, device="cpu")
    on_path(COMPILED)
    with pytest.warns(PegasusWarning, match="the compile was not cached .*disk full"):
        images = SamplingJob.make(trained, trained.plan("heun", 5), num=2).images(0)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    # The CLI prints such a warning as its own one-line warnings; others keep Python's form.
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    show_library_warnings()
    warnings.showwarning(PegasusWarning("the compile was not cached"), PegasusWarning, "f.py", 1)
    assert "warning: the compile was not cached" in capsys.readouterr().err


def test_a_compiler_that_fails_costs_a_warning_not_the_work(run, monkeypatch, on_path):
    """torch.compile can fail on a machine (no C++ compiler, a GPU Triton does not support):
    the sampling then goes on uncompiled, with the eager images, and one warning."""
    from torch._dynamo import register_backend

    from pegasus.errors import PegasusWarning

    @register_backend(name="pegasus_test_broken")
    def broken(graph, example_inputs):
        raise RuntimeError("Found Tesla P100 which is too old for the triton GPU compiler")

    saved = []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: saved.append(1))
    trained = load_trained_run(run, device="cpu")
    eager = SamplingJob.make(trained, trained.plan("heun", 5), num=2).images(0)
    on_path(dataclasses.replace(COMPILED, backend="pegasus_test_broken"))
    with pytest.warns(PegasusWarning, match="torch.compile failed .*too old") as caught:
        images = SamplingJob.make(trained, trained.plan("heun", 5), num=2).images(0)
    assert len(caught) == 1  # once, not once per evaluation
    torch.testing.assert_close(images, eager, rtol=0, atol=0)
    assert not saved  # nothing was compiled, so nothing is cached


def test_guided_blends_and_inpainting_run_compiled_like_eager(run, on_path, tmp_path):
    """A guided step differentiates the guide: compiled, that backward goes through AOTAutograd,
    and the chain must be the eager one up to float rounding."""
    result = runner.invoke(app, ["train-guide", "--run", str(run), "--iters", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    trained = load_trained_run(run, device="cpu")
    request = BlendRequest(n=2, k=1, strips=2, guidance=5.0, sampler="als", steps=10)
    eager = blend(trained, request).strips
    # A picture of the blend's batch of images (its 2 strips of n + 2), so that one trace of the
    # network serves both; `sample:i` would draw its image at a batch of 1, a second trace.
    assert runner.invoke(app, ["sample", "--run", str(run), "--num", "1", "--folder",
                               str(tmp_path)]).exit_code == 0
    painting = InpaintRequest(image=str(next(tmp_path.glob("*.png"))), steps=10, num=8)
    eager_inpainting = inpaint_run(trained, painting).completions
    unguided = blend(trained, dataclasses.replace(request, guidance=0.0)).strips
    assert (unguided - eager).abs().max() > 1e-3  # the guidance term took part
    on_path(COMPILED)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):  # each network compiled once
        compiled = blend(trained, request).strips
        completions = inpaint_run(trained, painting).completions
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(completions, eager_inpainting, rtol=1e-4, atol=1e-4)


def test_a_bad_fast_path_switch_is_refused_in_one_line(run):
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--compile", "maybe"]), "--compile")
    for args in (["blend"], ["inpaint", "--image", "sample:0"], ["eval"]):
        one_line(runner.invoke(app, [*args, "--run", str(run), "--amp", "fp8"]),
                 "--amp must be auto, on (or bf16) or off")
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--compile", "bf16"]),
             "--compile must be auto, on or off")


class _Touch:
    """A pickle that, when loaded, creates a file: what a hostile compile cache could carry."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_a_compile_cache_from_elsewhere_runs_nothing_and_the_run_still_samples(run, tmp_path,
                                                                              on_path, monkeypatch):
    """A cache file is pickled code to torch. One this user did not sign (dropped into a cache
    folder shared by mistake, say) is ignored with one warning, its code never reached, and the
    network compiles afresh; the file is then replaced by this user's own signed cache."""
    import pickle

    from pegasus.errors import PegasusWarning
    from pegasus.fastpath.cache import MAGIC, load_artifacts, signed
    from pegasus.fastpath.keys import WorkKey

    proof = tmp_path / "the-payload-is-live"
    pickle.loads(pickle.dumps(_Touch(proof)))
    assert proof.exists()  # loading this payload does run code
    marker = tmp_path / "ran"
    trained = load_trained_run(run, device="cpu")
    on_path(COMPILED)
    file = WorkKey.of("sample", trained.config).compile_file(
        torch.device("cpu"), COMPILED, (2, 3, 16, 16))
    file.parent.mkdir(parents=True, exist_ok=True)
    for hostile in (pickle.dumps(_Touch(marker)), MAGIC + b"\0" * 32 + pickle.dumps(_Touch(marker))):
        file.write_bytes(hostile)
        with pytest.warns(PegasusWarning, match="not signed by this user"):
            assert not load_artifacts(file)
        assert not marker.exists()
    # aot_eager makes no artifacts of its own: torch's call stood in for, as in the test above.
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", None))
    torch._dynamo.reset()
    with pytest.warns(PegasusWarning, match="not signed by this user"):
        images = SamplingJob.make(trained, trained.plan("heun", 5), num=2).images(0)
    assert torch.isfinite(images).all() and not marker.exists()
    assert signed(file)  # this user's compile now


def test_the_signing_key_is_whole_or_made_again(tmp_path, monkeypatch):
    """The audit's attack: a full disk left the key file empty, and a cache signed with the
    empty key was loaded. A key of the wrong length is made again, so that such a file fails
    its check; a key that cannot be written at all means nothing is loaded."""
    import hashlib
    import hmac
    import pickle

    from pegasus.errors import PegasusWarning
    from pegasus.fastpath import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    key_file = cache.user_cache_dir() / cache.KEY_FILE
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(b"")  # what the full disk left
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(marker))
    file = cache.compiled_file("a network")
    file.parent.mkdir(parents=True)
    forged = hmac.new(b"", file.name.encode() + b"\0" + payload, hashlib.sha256).digest()
    file.write_bytes(cache.MAGIC + forged + payload)
    with pytest.warns(PegasusWarning, match="not signed by this user"):
        assert not cache.load_artifacts(file)
    assert not marker.exists()
    key = key_file.read_bytes()
    assert len(key) == cache.KEY_BYTES and cache.user_key() == key  # made once, then kept
    assert not [p for p in key_file.parent.iterdir() if p.name.endswith(".tmp")]
    # A second process that finds the key made meanwhile takes it, not one of its own.
    key_file.unlink()
    monkeypatch.setattr(cache.os, "link", lambda src, dst: (_ for _ in ()).throw(FileExistsError()))
    key_file.write_bytes(b"k" * cache.KEY_BYTES)  # the other process's, already in place
    assert cache.user_key() == b"k" * cache.KEY_BYTES
    # No key can be written (a full disk): nothing is trusted, nothing is saved.
    monkeypatch.setattr(cache, "_make_key", lambda path, replace: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    key_file.write_bytes(b"short")
    assert not cache.signed(file)
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", None))
    with pytest.warns(PegasusWarning, match="the compile was not cached .*No space"):
        cache.save_artifacts(cache.compiled_file("another"))
    assert not cache.compiled_file("another").exists()


def test_the_compile_cache_keeps_the_newest_files_only(tmp_path, monkeypatch):
    from pegasus.fastpath import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache, "KEEP", 3)
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", None))
    for i in range(5):
        cache.save_artifacts(cache.compiled_file(f"network {i}"))
        os.utime(cache.compiled_file(f"network {i}"), (i, i))  # a clock for the order
    kept = {f.name for f in cache.compile_folder().glob("*.bin")}
    assert kept == {cache.compiled_file(f"network {i}").name for i in (2, 3, 4)}
