import os
import shutil
import signal

import pytest
import torch
import torch._dynamo

from pegasus.noise.schedule import Schedule
from pegasus.run.checkpoint import latest_checkpoint, load_checkpoint
from pegasus.run.load import load_trained_run
from pegasus.training import train
from pegasus.training.batches import EpochSampler
from tiny import sample_images, tiny_config


def test_resumed_run_continues_the_same_loss_sequence(tmp_path):
    config = tiny_config()
    whole = train(config, tmp_path / "whole", tensorboard=False)
    first = train(config, tmp_path / "split", tensorboard=False, stop_after=3)
    assert first.step == 3
    second = train(config, tmp_path / "split", resume=True, tensorboard=False)
    assert second.step == 6
    assert [s for s, _ in whole.losses] == [1, 2, 3, 4, 5, 6]
    assert first.losses + second.losses == whole.losses
    a = load_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    def progress(step, total, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(tiny_config(), tmp_path, tensorboard=False, progress=progress)
    assert result.interrupted == signal.SIGTERM and result.step == 2
    assert load_checkpoint(result.checkpoint)["step"] == 2
    # The handler is gone afterwards.
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler)


def test_run_directory_holds_config_checkpoint_samples_and_logs(tmp_path):
    train(tiny_config("train.sample_every=3", "train.iters=3"), tmp_path, tensorboard=True)
    assert (tmp_path / "config.toml").is_file()
    assert (tmp_path / "samples" / "step-00000003.png").is_file()
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["backbone"]["name"] == "unet" and state["backbone"]["distribution"] == "pegasus-score"
    assert set(state) >= {"config", "sigmas", "model", "ema", "optimizer", "step", "rng"}


def test_samples_from_a_run_are_seeded(tmp_path):
    train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    run = load_trained_run(tmp_path, device="cpu")
    kw = dict(num=3, res=16, seed=5)
    a = sample_images(run.model, run.schedule, **kw)
    assert torch.equal(a, sample_images(run.model, run.schedule, **kw))
    assert a.shape == (3, 3, 16, 16) and a.min() >= 0 and a.max() <= 1


def test_epoch_sampler_visits_every_image_once_per_epoch():
    sampler = EpochSampler(10, 4, seed=0)
    seen = torch.cat([sampler.indices(s) for s in range(5)])  # 20 indices = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(EpochSampler(10, 4, seed=0).indices(3), sampler.indices(3))


def test_an_image_depends_on_its_seed_and_index_only(tmp_path):
    """Image i comes from its own stream: the batch size and the number drawn change nothing
    (`pegasus sample --num 4` is the first 4 of `--num 64`)."""
    def check(score, equal):
        whole = sample_images(score, run.schedule, num=7, res=16, seed=1, batch_size=7)
        parts = sample_images(score, run.schedule, num=7, res=16, seed=1, batch_size=3)
        first = sample_images(score, run.schedule, num=4, res=16, seed=1)
        assert equal(parts, whole) and equal(first, whole[:4])
        assert not torch.equal(whole[0], whole[1])  # each image its own stream
        assert not torch.equal(sample_images(score, run.schedule, num=4, res=16, seed=2), first)

    train(tiny_config("train.iters=1"), tmp_path, tensorboard=False)
    run = load_trained_run(tmp_path, device="cpu")
    # A score that treats every image on its own gives bit-identical images: the starting points
    # and all the noise are the same.
    check(lambda x, sigma: -(x - 0.5) / (0.01 + sigma.view(-1, 1, 1, 1) ** 2), torch.equal)
    # A network's convolutions pick kernels by batch size, which moves the last float bits
    # (about 3e-6 per evaluation here); after the whole chain the images agree far below one
    # 8-bit grey level.
    check(run.model, lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-4))


def test_every_batch_of_a_job_has_one_shape():
    """A compiled network compiles once per input shape: 7 images in batches of at most 3 run
    as 3 batches of 3, the last padded with images 7 and 8 and returned without them."""
    from pegasus.run.job import equal_batches

    assert equal_batches(7, 3) == (3, 3) and equal_batches(10, 4) == (3, 4)
    assert equal_batches(9, 4) == (3, 3) and equal_batches(5, 5) == (1, 5)
    seen = []

    def score(x, sigma):
        seen.append(x.shape[0])
        return -(x - 0.5) / (0.01 + sigma.view(-1, 1, 1, 1) ** 2)

    schedule = Schedule(sigma_max=1.0, sigma_min=0.1, levels=3, steps_per_level=2, eps=1e-3)
    parts = sample_images(score, schedule, num=7, res=4, seed=1, batch_size=3)
    assert set(seen) == {3} and parts.shape[0] == 7
    torch.testing.assert_close(parts, sample_images(score, schedule, num=7, res=4, seed=1),
                               rtol=0, atol=0)


def test_a_signal_during_start_up_stops_cleanly_without_saving(tmp_path, monkeypatch):
    import pegasus.training.trainer as training

    real = training.load_images

    def load_then_interrupt(config):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the data is loading
        return real(config)

    monkeypatch.setattr(training, "load_images", load_then_interrupt)
    result = train(tiny_config(), tmp_path, tensorboard=False)
    assert result.interrupted == signal.SIGINT and result.step == 0
    assert result.checkpoint is None and latest_checkpoint(tmp_path / "checkpoints") is None


@pytest.mark.slow
def test_compiled_training_learns_like_eager_and_saves_plain_weights(tmp_path, monkeypatch):
    """`train.compile` traces the network with dynamo and AOTAutograd. The aot_eager backend
    skips only the code generation (Inductor's C++ build costs about 90 s cold on the 2-core CI
    machine), so the tracing, the compiled backward and the checkpoint wiring are all exercised."""
    from pegasus.fastpath.cache import compile_folder, signed

    shutil.rmtree(compile_folder(), ignore_errors=True)  # other tests' files
    eager = train(tiny_config(), tmp_path / "eager", tensorboard=False)
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compile(*a, **{**k, "backend": "aot_eager"}))
    saved, loaded = [], []  # aot_eager makes no artifacts: torch's artifact calls stood in for
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: saved.append(1) or (b"k", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", loaded.append)
    started, notices = [], []
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):  # one compile for the whole run
        compiled = train(tiny_config("train.compile=true"), tmp_path / "compiled", tensorboard=False,
                         on_start=lambda config, parameters, fast: started.append(fast),
                         notify=notices.append)
    assert started[0].compile and saved == [1] and not loaded
    assert len(notices) == 1 and notices[0].startswith("compiling the network for batch")
    # A resumed run loads the compile cached after the first step instead of compiling afresh.
    cached = list(compile_folder().glob("*.bin"))  # the user's, never the run folder's
    assert [signed(f) and f.read_bytes().endswith(b"k") for f in cached] == [True]
    assert not any(p.suffix == ".bin" for p in (tmp_path / "compiled").rglob("*"))
    train(tiny_config("train.compile=true", "train.iters=8"), tmp_path / "compiled", resume=True,
          tensorboard=False, notify=notices.append)
    assert loaded == [b"k"] and saved == [1]
    assert notices[1].startswith("loading the network compiled for batch")
    assert [s for s, _ in compiled.losses] == [s for s, _ in eager.losses]
    for (_, a), (_, b) in zip(compiled.losses, eager.losses, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    # The checkpoints hold the plain module's weights (no "_orig_mod." prefix), so they load
    # into an uncompiled model for sampling.
    state = load_checkpoint(latest_checkpoint(tmp_path / "compiled" / "checkpoints"))
    assert not any("_orig_mod" in key for key in state["model"])
    run = load_trained_run(tmp_path / "compiled", device="cpu")
    assert torch.isfinite(sample_images(run.model, run.schedule, num=2, res=16, seed=0)).all()


def test_a_compiler_that_fails_costs_a_warning_not_the_run(tmp_path, monkeypatch):
    """torch.compile failing on the machine (here a backend that raises, as inductor does without
    a C++ compiler or on a GPU Triton does not support) leaves the run to train uncompiled, the
    failed step drawn again with the same noise: the losses are the eager run's."""
    from torch._dynamo import register_backend

    from pegasus.errors import PegasusWarning
    from pegasus.fastpath.cache import compile_folder

    @register_backend(name="pegasus_test_broken_training")
    def broken(graph, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")


    eager = train(tiny_config(), tmp_path / "eager", tensorboard=False)
    shutil.rmtree(compile_folder(), ignore_errors=True)  # other tests' files
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compile(
        *a, **{**k, "backend": "pegasus_test_broken_training"}))
    torch._dynamo.reset()
    with pytest.warns(PegasusWarning, match="torch.compile failed .*C\\+\\+ compiler") as caught:
        failed = train(tiny_config("train.compile=true"), tmp_path / "failed", tensorboard=False)
    assert len(caught) == 1
    assert failed.losses == eager.losses
    assert not list(compile_folder().glob("*.bin"))  # nothing compiled, so nothing cached


def test_the_run_records_its_data_mean_and_samplers_start_there(tmp_path):
    """The checkpoint keeps the training images' per-channel mean; the trained run's centre is
    it, exported weights carry it, and a checkpoint without one (written before pegasus kept it)
    falls back to 0.5 with a note once a sampler that starts at the noisiest level is planned."""
    from pegasus.data import load_images
    from pegasus.run.export import export_run

    config = tiny_config("train.iters=2")
    train(config, tmp_path / "r", tensorboard=False)
    images = load_images(config.data).images
    mean = images.double().mean(dim=(0, 2, 3)) / 255
    state = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints"))
    torch.testing.assert_close(state["data_mean"], mean.float())
    run = load_trained_run(tmp_path / "r", device="cpu")
    assert run.centre_recorded and torch.equal(run.centre.flatten(), state["data_mean"])
    plan = run.plan("heun", 9)
    z = torch.randn(2, *images.shape[1:])
    torch.testing.assert_close(plan.start_point(None, z, run.centre),
                               run.centre + float(plan.sigmas[0]) * z)
    shared = load_trained_run(weights=export_run(tmp_path / "r", tmp_path / "w.safetensors"),
                              device="cpu")
    assert shared.centre_recorded and torch.equal(shared.centre, run.centre)

    del state["data_mean"]
    torch.save(state, tmp_path / "old.pt")
    notes = []
    old = load_trained_run(checkpoint=tmp_path / "old.pt", device="cpu", notify=notes.append)
    assert not old.centre_recorded and torch.equal(old.centre, torch.full((3, 1, 1), 0.5))
    old.plan("als")
    assert notes == []  # annealed Langevin starts from uniform noise
    old.plan("heun", 9)
    assert len(notes) == 1 and "0.5 + sigma_1 z" in notes[0]


def test_shifts_move_each_image_by_whole_pixels_within_the_bound():
    """data.shift: every image is the original moved by (dy, dx) in [-2, 2]^2, its interior
    equal to the original's shifted interior; over many images every move occurs; seeded; and
    with shift 0 the flips drawn are the ones drawn before shifts existed."""
    from pegasus.training.batches import batch_of

    images = torch.randint(0, 256, (200, 3, 16, 16), dtype=torch.uint8)
    every = torch.arange(200)
    x = batch_of(images, every, flip=False, channels_last=False, shift=2,
                 generator=torch.Generator().manual_seed(0))
    original = images.float() / 255
    moves = set()
    for got, want in zip(x, original, strict=True):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(got[:, 2:-2, 2:-2], want[:, 2 - dy:14 - dy, 2 - dx:14 - dx])]
        assert len(found) == 1
        moves.add(found[0])
    assert len(moves) == 25
    again = batch_of(images, every, flip=False, channels_last=False, shift=2,
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    # The flips come first from the generator: shift 0 leaves a run's batches as they were.
    g = torch.Generator().manual_seed(3)
    flips = torch.rand(200, generator=g) < 0.5
    plain = batch_of(images, every, flip=True, channels_last=False,
                     generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.where(flips[:, None, None, None], original.flip(-1), original))


def test_a_shift_longer_than_an_eighth_of_the_picture_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from pegasus.cli import app
    from test_errors import one_line
    from tiny import TINY

    result = CliRunner().invoke(app, ["train", "--run", str(tmp_path / "run"),
                                      *[a for s in [*TINY, "data.shift=3"] for a in ("--set", s)]])
    one_line(result, "shift must be between 0 and res / 8 = 2 px at 16 px, got 3")
    assert not (tmp_path / "run").exists()


def test_training_moves_its_batches_by_data_shift(tmp_path, monkeypatch):
    import pegasus.training.trainer as trainer

    seen, real = [], trainer.batch_of

    def recording(*args, **kwargs):
        seen.append(kwargs["shift"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "batch_of", recording)
    train(tiny_config("train.iters=2", "data.shift=1"), tmp_path / "run", tensorboard=False)
    assert seen == [1, 1]


def test_a_resume_reads_its_checkpoint_once_and_builds_its_network_once(tmp_path, monkeypatch):
    """`train --resume`: the config and the starting point come from one read of the checkpoint
    (run/resume.training_start), and the network is built once on its device, after a shapes-only
    build on the meta device that checks it fits."""
    from pathlib import Path

    from typer.testing import CliRunner

    import pegasus.training as training
    from pegasus.cli import app
    from pegasus.run import checkpoint

    train(tiny_config("train.iters=2"), tmp_path, tensorboard=False)
    reads, builds = [], []
    read, build = checkpoint.read_torch_file, training.build_score_model
    monkeypatch.setattr(checkpoint, "read_torch_file",
                        lambda path, *a, **k: reads.append(Path(path).name) or read(path, *a, **k))

    def counted(config, *args, device=None, **kwargs):
        builds.append(str(device))
        return build(config, *args, device=device, **kwargs)

    monkeypatch.setattr(training, "build_score_model", counted)
    result = CliRunner().invoke(app, ["train", "--run", str(tmp_path), "--resume", "--iters", "4"])
    assert result.exit_code == 0, result.output
    assert reads == ["checkpoint-00000002.pt"]
    assert builds == ["meta", "None"]  # the shapes, then the network on its device
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 4
