"""Is it new? Nearest neighbours, the memorisation rule, precision and recall on point sets whose
answers are known; then a run's samples, a folder of copied training images, the held-out loss
and early stopping."""

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.config import DataConfig
from pegasus.data import load_held_out, load_images
from pegasus.tasks.novelty import memorisation, nearest, novelty, precision_recall

runner = CliRunner()


def _points(n, seed, d=16, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_nearest_in_chunks_is_the_brute_force_answer_and_can_skip_itself():
    a, b = _points(300, 0), _points(200, 1)
    d, i = nearest(a, b, k=3, chunk=64)
    full = torch.cdist(a.double(), b.double())
    assert torch.equal(i, full.topk(3, dim=1, largest=False).indices)
    assert torch.allclose(d, full.topk(3, dim=1, largest=False).values)
    d_self, i_self = nearest(a, a, k=1, chunk=64, skip_self=True)
    assert (i_self[:, 0] != torch.arange(300)).all() and (d_self > 0).all()


def test_copies_are_memorised_and_fresh_draws_are_not():
    train, held = _points(2000, 0), _points(500, 1)
    fresh = _points(1000, 2)
    share, se, ratio, threshold = memorisation(fresh, train, held)
    # The threshold is the held-out images' 1st percentile: about 1% of fresh draws fall below it.
    assert share < 0.03 and 0.9 < ratio < 1.1 and threshold > 0, (share, ratio)
    copies = train[:1000] + 1e-3 * _points(1000, 3)
    share, se, ratio, _ = memorisation(copies, train, held)
    assert share == 1.0 and se == 0.0 and ratio < 0.01
    half = torch.cat([fresh[:500], copies[:500]])
    share, se, _, _ = memorisation(half, train, held)
    assert abs(share - 0.5) < 0.02 and se == pytest.approx((0.25 / 1000) ** 0.5, rel=0.05)


def test_precision_and_recall_tell_a_shift_from_a_collapse():
    real = torch.cat([_points(300, 0, shift=-4.0), _points(300, 1, shift=4.0)])
    same = torch.cat([_points(300, 2, shift=-4.0), _points(300, 3, shift=4.0)])
    scores = precision_recall(real, same)
    assert min(scores["precision"], scores["recall"], scores["coverage"]) > 0.75, scores
    assert 0.7 < scores["density"] < 1.3, scores
    far = precision_recall(real, same + 50.0)
    assert max(far.values()) == 0.0, far
    # One of the two modes only: every sample realistic, half of the real images missed.
    collapsed = precision_recall(real, _points(600, 4, shift=4.0))
    assert collapsed["precision"] > 0.75 and collapsed["recall"] < 0.6, collapsed
    assert 0.4 < collapsed["coverage"] < 0.6, collapsed


def test_novelty_reports_its_spreads_and_is_seeded():
    train, held, fresh = _points(1000, 0), _points(300, 1), _points(400, 2)
    a, b = (novelty(fresh, train, held, features="test", seed=5) for _ in range(2))
    assert a == b
    assert set(a.spreads) == set(a.scores) and all(0 < v < 0.1 for v in a.spreads.values())
    assert "memorised" in a.describe() and "400 samples" in a.describe()


def _disk_dataset(tmp_path, per_class=6):
    for c, colour in (("horse", (200, 10, 10)), ("bird", (10, 10, 200))):
        (tmp_path / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (colour[0], i * 20, colour[2])).save(tmp_path / c / f"{i}.png")
    return f"folder:{tmp_path}"


def test_limit_and_held_out_split_a_dataset_on_disk(tmp_path):
    dataset = _disk_dataset(tmp_path)
    base = dict(dataset=dataset, classes=["horse", "bird"], res=16)
    every = load_images(DataConfig(**base))
    assert len(every.images) == 12
    trained = load_images(DataConfig(**base, held_out=2))
    held = load_held_out(DataConfig(**base, held_out=2))
    assert len(trained.images) == 8 and len(held.images) == 4
    # The two sets are disjoint and make up every image.
    joined = torch.cat([trained.images, held.images]).flatten(1)
    assert len(torch.unique(joined, dim=0)) == 12
    assert len(load_images(DataConfig(**base, limit=3)).images) == 6
    assert len(load_held_out(DataConfig(**base)).images) == 0  # nothing kept out
    # The built-in sprites draw theirs with another seed: none is a training image.
    sprites = DataConfig(dataset="sprites", res=16, size=20)
    seen, unseen = load_images(sprites).images, load_held_out(sprites).images
    assert len(unseen) == 128  # 64 of each class, more than the 20 it trains on
    assert torch.cdist(unseen.flatten(1).float(), seen.flatten(1).float()).min() > 0
    # So data.held_out takes none of their training images (it once took them all: 100 of 20).
    assert torch.equal(load_images(DataConfig(dataset="sprites", res=16, size=20,
                                              held_out=100)).images, seen)


def test_holding_out_every_image_of_a_class_is_one_line_before_training(tmp_path):
    from test_errors import one_line
    from tiny import TINY

    dataset = _disk_dataset(tmp_path / "data", per_class=6)
    sets = [*TINY, f'data.dataset="{dataset}"', 'data.classes=["horse", "bird"]', "data.held_out=6"]
    result = runner.invoke(app, ["train", "--run", str(tmp_path / "run"),
                                 *[a for s in sets for a in ("--set", s)]])
    one_line(result, "data.held_out = 6 keeps every horse image out of training (6 in all)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_reports_novelty_and_draws_the_neighbours(run, tmp_path):
    if not (run / "judge.pt").exists():
        assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "3"]).exit_code == 0
    out = tmp_path / "copies.png"
    result = runner.invoke(app, ["eval", "--run", str(run), "--num", "8", "--sampler", "heun",
                                 "--steps", "5", "--neighbours", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "memorised" in text and "precision" in text and "recall" in text
    # 8 rows of (sample + 3 pixel neighbours, a gap, sample + 3 feature neighbours), 16 px
    # pictures shown 3 times larger, 2 px apart.
    assert Image.open(out).size == (9 * (48 + 2) + 2, 8 * (48 + 2) + 2)


def test_eval_of_a_checkpoint_finds_its_run_folder_and_judge(run, tmp_path):
    """A run's earlier checkpoints are scored with the run's judge, so memorisation is followed
    step by step; a folder of samples is scored against a run folder only."""
    from pegasus.run.checkpoint import latest_checkpoint
    from test_errors import one_line

    if not (run / "judge.pt").exists():
        assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "3"]).exit_code == 0
    checkpoint = latest_checkpoint(run / "checkpoints")
    result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--num", "4",
                                 "--sampler", "heun", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "of step 2's weights" in " ".join(result.output.split())
    one_line(runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--samples",
                                 str(tmp_path)]),
             "--samples are scored against a run folder's images and judge: give --run, "
             "without --checkpoint")


def test_a_folder_of_training_images_is_flagged_as_copies(run, tmp_path):
    """A model that copies: its samples replaced by training images, which eval --samples then
    finds memorised, every one."""
    from tiny import tiny_config

    if not (run / "judge.pt").exists():
        assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "3"]).exit_code == 0
    folder = tmp_path / "fid"
    assert runner.invoke(app, ["sample", "--run", str(run), "--num", "10", "--sampler", "heun",
                               "--steps", "5", "--folder", str(folder)]).exit_code == 0
    training = load_images(tiny_config().data).images
    for i, image in enumerate(training[:10]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    result = runner.invoke(app, ["eval", "--run", str(run), "--samples", str(folder)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "memorised 100.0% ± 0.0% of 10 samples" in text
    # KID against the training images, and against 1,000 sprites it never saw.
    assert "against 24 training images" in text
    assert "against 1000 held-out images (sprites drawn with another seed)" in text


def test_only_images_a_run_never_saw_give_a_held_out_kid(tmp_path):
    """A tenth of the training images kept out of the reference tells copies, but the model saw
    them: the KID against them would be one more KID against training images."""
    from pegasus.config import build_config
    from pegasus.tasks.neighbours import Reference

    dataset = _disk_dataset(tmp_path / "data", per_class=6)
    base = [f'data.dataset="{dataset}"', 'data.classes=["horse", "bird"]', "data.res=8"]
    flat = lambda x: x.flatten(1)  # noqa: E731
    kept = Reference.of(build_config(overrides=base + ["data.held_out=2"]), flat, 0)
    assert kept.unseen and len(kept.held) == 4 and len(kept.images) == 8
    tenth = Reference.of(build_config(overrides=base), flat, 0)
    assert not tenth.unseen and len(tenth.held) + len(tenth.images) == 12


def test_the_held_out_loss_is_logged_and_stops_a_run_that_stopped_improving(tmp_path, monkeypatch):

    import pegasus.training.heldout as heldout
    from pegasus.training import train
    from tiny import tiny_config

    logged = train(tiny_config("train.iters=3"), tmp_path / "a", tensorboard=False)
    assert [s for s, _ in logged.held_out] == [1, 2, 3]
    assert all(0 < v < float("inf") for _, v in logged.held_out)
    assert logged.stopped_early is None
    # A held-out loss that falls, then twice fails to reach its low: patience 2 ends the run at
    # the 4th log (step 4 of 20), which keeps its checkpoint.
    values = iter([3.0, 2.0, 2.5, 2.25, 1.0, 0.5])
    monkeypatch.setattr(heldout.HeldOut, "measure", lambda *a: next(values))
    result = train(tiny_config("train.iters=20", "train.early_stop=2"), tmp_path / "b",
                   tensorboard=False)
    assert result.stopped_early == 4 and result.step == 4 and result.interrupted is None
    assert [v for _, v in result.held_out] == [3.0, 2.0, 2.5, 2.25]
    assert result.checkpoint is not None and result.checkpoint.exists()
    # The command line names the step of the low, which the user may want to sample instead.
    from tiny import TINY

    values = iter([3.0, 2.0, 2.5, 2.25, 1.0, 0.5])
    sets = [*TINY, "train.iters=20", "train.early_stop=2"]
    said = runner.invoke(app, ["train", "--run", str(tmp_path / "c"),
                               *[a for s in sets for a in ("--set", s)]])
    assert said.exit_code == 0, said.output
    assert ("stopped early at step 4: the held-out DSM loss has not fallen for 2 logs "
            "(train.early_stop) since its low of 2 at step 2") in " ".join(said.output.split())
