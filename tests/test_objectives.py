"""Training objectives as objects (pegasus/objectives/): the config names one, the trainer calls
it without knowing which, a plugin adds one with a module and a registration, configs written
before objectives had names still load, and a run's default sampler follows how it trained."""

import math
import re
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch

import pegasus.registry
from pegasus.config import Config, build_config
from pegasus.errors import ConfigError
from pegasus.model.build import build_score_model
from pegasus.noise.schedule import Schedule
from pegasus.registry import load_registry
from pegasus.run.trained import TrainedRun, default_sampler
from pegasus.training import train
from tiny import tiny_config

# A third party's objective, as its package would ship it: one module, one registration. It
# trains a network to predict the clean image (x0 parameterisation, a plain MSE) and counts its
# calls, so the test can see the trainer call it.
PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    import pegasus

    CALLS = []

    @dataclass(frozen=True)
    class Options:
        scale: float = 1.0

    class CleanImage:
        def __init__(self, options, *, config, sigmas, model):
            self.scale, self.sigmas = options.scale, sigmas

        def __call__(self, net, x, *, step, generator=None):
            import torch
            from pegasus.hookspecs import Loss

            CALLS.append(step)
            levels = torch.randint(len(self.sigmas), (len(x),), generator=generator)
            sigma = self.sigmas[levels].view(-1, 1, 1, 1)
            noisy = x + sigma * torch.randn(x.shape, generator=generator)
            clean = noisy + sigma.square() * net(noisy, sigma.flatten())
            per_sample = self.scale * (clean - x).square().flatten(1).sum(1)
            return Loss(per_sample.mean(), per_sample, levels)

    @pegasus.hookimpl
    def register_objectives(register):
        register(pegasus.Objective(name="clean-image", description="x0 MSE", factory=CleanImage,
                                   config=Options, held_out=False))
''')


@pytest.fixture
def plugin_objective(tmp_path, monkeypatch):
    """The registry with the plugin above installed, as every part of pegasus sees it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "clean_image_plugin.py").write_text(PLUGIN)
    entry = metadata.EntryPoint(name="clean_image_plugin", value="clean_image_plugin",
                                group="pegasus")
    loaded = load_registry(entry_points=[entry], env={})
    monkeypatch.setattr(pegasus.registry, "registry", lambda: loaded)
    import clean_image_plugin

    return clean_image_plugin


def test_a_plugins_objective_trains_a_run_through_the_same_trainer(tmp_path, plugin_objective):
    config = tiny_config('objective.name="clean-image"', "objective.scale=2.0", "train.iters=3")
    assert config.objective.options == {"scale": 2.0}
    result = train(config, tmp_path / "run", tensorboard=False)
    assert plugin_objective.CALLS == [0, 1, 2]  # one call a step, at the step it is at
    assert result.step == 3 and result.held_out == []  # it declares no held-out loss
    assert all(math.isfinite(loss) for _, loss in result.losses)
    saved = Config.from_dict(torch.load(result.checkpoint, weights_only=True)["config"])
    assert saved.objective.name == "clean-image" and saved.objective.options == {"scale": 2.0}
    with pytest.raises(ConfigError, match="objective 'clean-image': objective.speed: unknown key"):
        tiny_config('objective.name="clean-image"', "objective.speed=2")


def test_the_trainer_names_no_objective():
    """What an objective is and does lives in its module: the trainer only calls it."""
    source = (Path(pegasus.registry.__file__).parent / "training" / "trainer.py").read_text()
    names = set(load_registry(entry_points=[], env={}).objectives) | {"consistency", "DSM"}
    assert names >= {"dsm", "ect"}
    named = [n for n in names if re.search(rf"\b{re.escape(n)}\b", source, re.IGNORECASE)]
    assert not named, named


def test_an_unknown_objective_and_a_tuning_objective_from_scratch_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown objective 'sliced'; available: dsm, ect"):
        tiny_config('objective.name="sliced"')
    with pytest.raises(ConfigError, match="ect tunes a trained run"):
        train(tiny_config('objective.name="ect"'), tmp_path / "a", tensorboard=False)
    with pytest.raises(ConfigError, match="objective.source: pegasus tune writes it"):
        train(tiny_config('objective.source="/etc"'), tmp_path / "b", tensorboard=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("field,value,needle", [
    ("c", "nan", "c must be a finite number"), ("k", "inf", "k must be a finite number"),
    ("q", "1.0", "q must be above 1"), ("p_std", "0.0", "p_std must be above 0"),
    ("p_mean", "40.0", "p_mean must be within"), ("stage_every", "0", "stage_every must be at"),
    ("c", "-1.0", "k, b and c must be 0 or more"),
    ("boundary", "0.0", "boundary must be a sigma above 0"),
    ("denoise", "1.5", "denoise must be a share from 0 to 1")])
def test_ect_options_are_checked_when_the_config_is_made(field, value, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        tiny_config('objective.name="ect"', f"objective.{field}={value}")


def test_a_config_written_before_objectives_had_names_loads_as_its_objective():
    data = tiny_config().to_dict()
    del data["objective"]
    data["consistency"] = {"tuned": True, "source": "runs/demo", "stage_every": 75, "q": 4.0,
                           "k": 8.0, "b": 1.0, "c": 0.0, "p_mean": -1.79, "p_std": 2.0}
    old = Config.from_dict(data)
    assert old.objective.name == "ect" and old.objective.source == "runs/demo"
    assert old.objective.options["stage_every"] == 75
    assert old.objective.options["weight"] == "edm"  # the weight it tuned on, before the choice
    assert old.objective.options["boundary"] == old.noise.sigma_min  # and its f's boundary
    assert old.objective.options["denoise"] == 0.0  # and no pairs kept denoising
    data["consistency"]["weight"] = "gap"
    assert Config.from_dict(data).objective.options["weight"] == "gap"
    written = tiny_config('objective.name="ect"', 'objective.weight="gap"').to_dict()
    assert Config.from_dict(written).objective.options["weight"] == "gap"  # a new run's own
    assert Config.from_dict(written).objective.options["boundary"] == "sigma_L"
    assert Config.from_dict(written).objective.options["denoise"] == 0.3
    data["consistency"] = {"tuned": False, "source": "", "stage_every": 300}
    assert Config.from_dict(data).objective.name == "dsm"
    data["objective"] = {"name": "dsm"}
    with pytest.raises(ConfigError, match="consistency"):  # both: which one holds is unclear
        Config.from_dict(data)


def _trained(*overrides) -> TrainedRun:
    config = build_config(overrides=['model.backbone="unet"', "model.width=8", "model.emb_dim=16",
                                     "model.heads=2", "model.head_dim=8", "data.res=16",
                                     "noise.sigma_max=10.0", "noise.levels=20",
                                     "noise.eps=1e-5", *overrides])
    return TrainedRun(config, build_score_model(config, device="meta")[0],
                      Schedule.from_noise(config.noise), 0, Path("x"), torch.device("cpu"))


@pytest.mark.parametrize("overrides,sampler,evaluations,budget", [
    ((), "als", 20 * 5 + 1, 41),  # NCSNv2's levels: the reference's sampler on its schedule
    (('noise.training="log-normal"',), "cas", 32, 12),  # a continuum: not annealed Langevin
    (('noise.training="log-uniform"',), "cas", 32, 12),
    (('objective.name="ect"',), "consistency", 2, 4)])
def test_a_runs_default_sampler_follows_how_it_trained(overrides, sampler, evaluations, budget):
    trained = _trained(*overrides)
    plan = trained.plan()
    assert (plan.name, plan.evaluations) == (sampler, evaluations)
    assert default_sampler(trained.config)[0] == sampler
    kept = trained.plan(steps=budget)  # a budget given is kept for the default sampler
    assert kept.name == sampler and kept.evaluations <= budget


def test_a_continuous_run_grids_by_its_default_sampler(tmp_path, monkeypatch):
    """Training grids plan through the same door: a log-normal run's grid is drawn by cas."""
    seen = []
    real = TrainedRun.plan

    def spy(self, *args, **kwargs):
        plan = real(self, *args, **kwargs)
        seen.append(plan.name)
        return plan

    monkeypatch.setattr(TrainedRun, "plan", spy)
    train(tiny_config('noise.training="log-normal"', "train.iters=2", "train.sample_every=2"),
          tmp_path, tensorboard=False)
    assert seen == ["cas"] and (tmp_path / "samples" / "step-00000002.png").is_file()


def test_the_model_answers_which_sigmas_it_knows():
    levels = _trained().model
    assert not levels.knows_every_sigma
    sigma = torch.tensor([9.0, 0.5, 0.0105])
    rounded = levels.round_sigma(sigma)
    assert set(rounded.tolist()) <= set(_trained().schedule.sigmas().tolist())
    assert torch.equal(levels.round_sigma(rounded), rounded)
    continuous = _trained('noise.training="log-normal"').model
    assert continuous.knows_every_sigma and torch.equal(continuous.round_sigma(sigma), sigma)
    refinenet = build_score_model(build_config(overrides=["model.ngf=8", "noise.sigma_max=10.0",
                                                          "noise.levels=20", "noise.eps=1e-5"]),
                                  device="meta")[0]
    assert refinenet.knows_every_sigma  # its sigma input interpolates
