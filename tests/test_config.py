import tomllib

import pytest
import tomli_w

from pegasus.config import (
    Config,
    ConfigError,
    build_config,
    find_preset,
    list_presets,
    parse_value,
    resolve_model_options,
)


def test_default_schedule_is_planned_from_the_data_and_the_rest_is_published():
    """No fixed schedule fits every resolution, so sigma_1, L and eps default to "auto"
    (Techniques 1, 2, 4 at the start of training); sigma_L, T and the optimiser are NCSNv2's."""
    c = build_config()
    assert (c.noise.sigma_max, c.noise.levels, c.noise.eps) == ("auto", "auto", "auto")
    assert not c.noise.planned
    assert (c.noise.sigma_min, c.noise.steps_per_level) == (0.01, 5)
    assert (c.train.lr, c.train.ema) == (1e-4, 0.999)
    assert c.model.options == {"ngf": 128, "stages": "auto", "dropout": 0.0}


def test_every_preset_loads_and_validates():
    assert {"cifar10", "sprites-demo"} <= set(list_presets())
    for name in list_presets():
        build_config(name)


def test_cifar10_preset_matches_notes():
    c = build_config("cifar10")
    assert (c.noise.sigma_max, c.noise.levels, c.noise.steps_per_level, c.noise.eps) == (
        50.0, 232, 5, 6.2e-6)
    assert c.data.res == 32 and c.train.batch_size == 128


@pytest.mark.parametrize("override,message", [
    ("data.nope=1", "data.nope: unknown key"),
    ("nope.x=1", "nope: unknown key"),
    ("data.res=big", "data.res: expected an integer"),
    ("train.ema=1.5", "ema must be in"),
    ("model.ngff=3", "model.ngff: unknown key"),
    ("model.stages=wide", "expected one of"),
    ("noise.levels=1", "levels must be at least 2"),
    ("train.batch_size=0", "batch_size must be positive"),
    ("data.res", "expected SECTION.FIELD=VALUE"),
    # A union names each kind it takes, once: one line, not one clause per member.
    ("train.compile=maybe", r"^train.compile: expected true or false or 'auto', got 'maybe'$"),
    ("noise.sigma_max=[1]", r"^noise.sigma_max: expected a number or 'auto', got \[1\]$"),
])
def test_bad_fields_name_the_culprit(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=[override])


def test_set_reaches_backbone_options_and_parses_toml_values():
    c = build_config(overrides=["model.ngf=64", "train.lr=3e-4", "data.flip=false"])
    assert c.model.options["ngf"] == 64 and c.train.lr == 3e-4 and c.data.flip is False
    assert parse_value("horse") == "horse" and parse_value("[1, 2]") == [1, 2]


def test_flags_then_overrides_and_switching_backbone_drops_foreign_options():
    c = build_config(preset="cifar10", flags={"model.backbone": "unet", "data.res": 48,
                                               "data.classes": "horse,bird"},
                     overrides=["model.width=32"])
    assert c.model.backbone == "unet" and c.model.options["width"] == 32
    assert c.data.res == 48 and c.data.classes == ["horse", "bird"]


def test_config_round_trips_through_toml():
    c = build_config("sprites-demo")
    again = resolve_model_options(Config.from_dict(tomllib.loads(tomli_w.dumps(c.to_dict()))))
    assert again == c


def test_malformed_toml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nres = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(str(bad))
    with pytest.raises(ConfigError, match="no preset named"):
        find_preset("no-such-preset")


def test_resume_keeps_the_run_config(tmp_path):
    saved = build_config()
    c = build_config(flags={"train.iters": 10}, saved=saved)
    assert c.train.iters == 10
    with pytest.raises(ConfigError, match="cannot change data.res"):
        build_config(flags={"data.res": 64}, saved=saved)
    with pytest.raises(ConfigError, match="cannot change the noise section"):
        build_config(overrides=["noise.levels=9"], saved=saved)
    # Fine-tuning on other data: the classes and the dataset may change.
    c = build_config(flags={"data.classes": ["cat", "dog"], "data.dataset": "cifar10"}, saved=saved)
    assert c.data.classes == ["cat", "dog"] and c.model == saved.model


@pytest.mark.parametrize("name,dataset,res,batch,images", [
    ("winged-horses-cifar10", "cifar10", 32, 128, 2 * 5000),  # docs/science.md: 5000 per class
    ("winged-horses-stl10-48", "stl10", 48, 64, 2 * (500 + 800)),  # train and test merged
    ("winged-horses-stl10-64", "stl10", 64, 64, 2 * (500 + 800)),
])
def test_winged_horses_presets_follow_the_text(name, dataset, res, batch, images):
    """The text's runs: the U-Net on horse and bird with flips, Adam 1e-4, T = 5, the batch size
    it gives per dataset, and 5000 epochs; the schedule is left to the planner."""
    import torch

    from pegasus.model.build import build_score_model

    c = build_config(name)
    assert (c.data.dataset, c.data.res, c.data.flip) == (dataset, res, True)
    assert c.data.classes == ["horse", "bird"]
    assert c.model.backbone == "unet" and len(c.model.options["mults"]) == 3
    assert (c.train.lr, c.train.batch_size, c.noise.steps_per_level) == (1e-4, batch, 5)
    assert c.train.iters * batch == 5000 * images
    assert not c.noise.planned
    model, _ = build_score_model(c)
    with torch.no_grad():
        out = model(torch.rand(1, 3, res, res), torch.tensor([1.0]))
    assert out.shape == (1, 3, res, res) and torch.isfinite(out).all()
