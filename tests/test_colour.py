"""Colour drift (the winged-horses text's third limitation): the per-channel figures, and the
trainer's monitor on grids that hold the data's colours or drift on purpose."""

import pytest
import torch

from pegasus.colour import DRIFT_WARNING, ColourStats, ColourTally, Drift


def test_channel_figures_are_the_closed_form_and_batches_add_up():
    g = torch.Generator().manual_seed(0)
    means, stds = torch.tensor([0.2, 0.5, 0.7]), torch.tensor([0.05, 0.1, 0.02])
    x = means.view(1, 3, 1, 1) + stds.view(1, 3, 1, 1) * torch.randn(400, 3, 8, 8, generator=g)
    stats = ColourStats.of(x)
    assert stats.mean == pytest.approx(means.tolist(), abs=2e-3)
    assert stats.std == pytest.approx(stds.tolist(), rel=2e-2)
    split = ColourTally().add(x[:150]).add(x[150:]).stats()
    assert split.mean == pytest.approx(stats.mean, abs=1e-12)
    assert split.std == pytest.approx(stats.std, abs=1e-12)
    # Ranks' shares (one of them empty), merged as eval does under torchrun.
    shares = [ColourTally().add(x[:150]), ColourTally(), ColourTally().add(x[150:])]
    merged = ColourTally.merged([(t.count, t.sum, t.square) for t in shares]).stats()
    assert merged.mean == pytest.approx(stats.mean, abs=1e-12)
    assert merged.std == pytest.approx(stats.std, abs=1e-12)
    as_bytes = ColourStats.of((x.clamp(0, 1) * 255).round().to(torch.uint8))
    assert as_bytes.mean == pytest.approx(ColourStats.of(x.clamp(0, 1)).mean, abs=2e-3)
    shifted = Drift(ColourStats.of(x + torch.tensor([0.0, 0.06, 0.0]).view(1, 3, 1, 1)), stats)
    assert shifted.mean_gap == pytest.approx(0.06) and shifted.drifting
    assert shifted.distance == pytest.approx(0.06, abs=1e-6) and shifted.std_gap < 1e-9
    assert not Drift(stats, stats).drifting and 0.06 > DRIFT_WARNING


def test_a_gap_within_the_grids_own_noise_does_not_warn():
    """The same 0.06 gap in green: from 16 images that all hold it, a drift; from 16 whose own
    greens are 0.35 and 0.85 half and half, a chance the grid's standard error (0.258 / 4, the
    closed form) covers."""
    from pegasus.colour import NOISE_MARGIN, mean_noise

    data = ColourStats([0.5, 0.54, 0.5], [0.2, 0.2, 0.2])
    even = torch.full((16, 3, 4, 4), 0.5)
    even[:, 1] = 0.6
    mixed = even.clone()
    mixed[:8, 1], mixed[8:, 1] = 0.35, 0.85
    assert mean_noise(even) == pytest.approx(0.0, abs=1e-12)
    assert mean_noise(mixed) == pytest.approx((0.25 * 0.25 * 16 / 15) ** 0.5 / 4, rel=1e-6)
    assert NOISE_MARGIN * mean_noise(mixed) > 0.06 > DRIFT_WARNING
    for images, drifting in [(even, True), (mixed, False)]:
        drift = Drift(ColourStats.of(images), data, mean_noise(images))
        assert drift.mean_gap == pytest.approx(0.06) and drift.drifting is drifting
    assert mean_noise(even[:1]) == 0.0
    assert mean_noise((mixed * 255).round().to(torch.uint8)) == pytest.approx(mean_noise(mixed), rel=1e-2)


@pytest.mark.parametrize("offset,warned", [(0.0, False), (0.25, True)])
def test_training_warns_once_of_grids_whose_colours_drift(tmp_path, monkeypatch, offset, warned):
    """The grids are the training images themselves, shifted by `offset` in the green channel:
    the monitor logs each grid's gap and warns once, at the first that drifts."""
    from pegasus.data import load_images
    from pegasus.run.job import SamplingJob
    from pegasus.training import train
    from tiny import tiny_config

    config = tiny_config("train.iters=4", "train.sample_every=2", "train.grid=12")
    data = load_images(config.data).images[:12].float() / 255
    shift = torch.tensor([0.0, offset, 0.0]).view(1, 3, 1, 1)
    monkeypatch.setattr(SamplingJob, "images", lambda self, seed: (data + shift).clamp(0, 1))
    notes = []
    result = train(config, tmp_path / "run", tensorboard=False, notify=notes.append)
    drift_notes = [n for n in notes if "colours drift" in n]
    assert [step for step, _ in result.colour] == [2, 4]
    assert len(drift_notes) == int(warned)
    whole = ColourStats.of(load_images(config.data).images)
    expected = Drift(ColourStats.of((data + shift).clamp(0, 1)), whole).mean_gap
    assert result.colour[0][1] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("training,sampler", [("levels", "als"), ("log-normal", "cas")])
def test_grids_start_where_the_run_trained(tmp_path, monkeypatch, training, sampler):
    """A run trained on NCSNv2's levels draws its grids by annealed Langevin (the reference's);
    one trained on log-normal sigmas by cas, which starts at the data's mean + sigma_1 z rather
    than from uniform noise at a sigma it seldom trained on (trainer.grid_sampler)."""
    from pegasus.run.job import SamplingJob
    from pegasus.training import train
    from tiny import tiny_config

    config = tiny_config("train.iters=2", "train.sample_every=2", "train.grid=4",
                         f'noise.training="{training}"')
    drawn = []
    original = SamplingJob.images

    def images(self, seed):
        drawn.append(self.plan.name)
        return original(self, seed)

    monkeypatch.setattr(SamplingJob, "images", images)
    train(config, tmp_path / "run", tensorboard=False)
    assert drawn == [sampler]
