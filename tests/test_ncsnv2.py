"""Checkpoints of the reference NCSNv2 code (ermongroup/ncsnv2): the shared fixture, written by
that code itself, imports exactly; export gives the reference's own files back; every file that
is not one is refused in one line, and nothing in a YAML file runs."""

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import pegasus
from pegasus.cli import app
from pegasus.interop.ncsnv2_names import CLASSES, reference_name, registration_key
from pegasus.run.checkpoint import latest_checkpoint, load_checkpoint
from test_errors import one_line

runner = CliRunner()
FIXTURES = Path(os.environ.get("PEGASUS_FIXTURES", Path(__file__).resolve().parents[2] / "shared"
                                / "fixtures")) / "ncsnv2" / "cifar10-ngf8-32px"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"the shared fixture {FIXTURES} "
                                                              f"is not beside this checkout")


def reference():
    return torch.load(FIXTURES / "checkpoint_40.pth", weights_only=True)


def imported(tmp_path, *extra) -> Path:
    run = tmp_path / "run"
    result = runner.invoke(app, ["import", "ncsnv2", str(FIXTURES / "checkpoint_40.pth"),
                                 "--run", str(run), *extra])
    assert result.exit_code == 0, result.output
    return run


def copy_of(tmp_path, states=None, config=None, name="checkpoint_40.pth") -> Path:
    """A reference log folder in tmp_path: the fixture's checkpoint (or `states`) and config.yml
    (or `config`, a dict written as plain YAML)."""
    folder = tmp_path / "logs" / "doc"
    folder.mkdir(parents=True, exist_ok=True)
    if states is None:
        shutil.copy(FIXTURES / "checkpoint_40.pth", folder / name)
    else:
        torch.save(states, folder / name)
    if config is None:
        shutil.copy(FIXTURES / "config.yml", folder / "config.yml")
    else:
        (folder / "config.yml").write_text(yaml.safe_dump(config))
    return folder / name


def plain_config() -> dict:
    from pegasus.interop.ncsnv2_config import read_reference_config

    return read_reference_config(FIXTURES / "config.yml")


def test_the_fixture_imports_and_scores_as_the_reference_network_does(tmp_path):
    probe = torch.load(FIXTURES / "probe.pt", weights_only=True)
    run = imported(tmp_path)
    for model in (pegasus.load(run), pegasus.load(FIXTURES / "checkpoint_40.pth")):
        score = model.score(probe["x"], probe["sigmas"][probe["labels"]])
        error = (score - probe["score"]).abs().max() / probe["score"].abs().max()
        assert error < 1e-5, error
        assert model.step == 40 and torch.equal(model.trained.sigmas, probe["sigmas"])
        assert model.config.noise.eps == 6.2e-6 and model.config.noise.steps_per_level == 5
        assert model.config.model.options == {"ngf": 8, "stages": "ncsnv2", "dropout": 0.0}
    images = pegasus.load(run).job(num=2, sampler="cas", steps=9).images(0)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_the_adam_state_is_the_reference_one_and_a_resumed_run_trains_on(tmp_path):
    from pegasus.model.build import build_score_model
    from pegasus.run.load import config_of

    ref = reference()
    run = imported(tmp_path)
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    config = config_of(state, run)
    names = [n for n, _ in build_score_model(config, device="meta")[0].named_parameters()]
    order = [k.removeprefix("module.") for k in ref[0] if k != "module.sigmas"]
    for j, name in enumerate(names):  # pegasus's index j holds the reference's state of that weight
        theirs = ref[1]["state"][order.index(reference_name(name, "ncsnv2"))]
        ours = state["optimizer"]["state"][j]
        assert all(torch.equal(ours[k], theirs[k]) for k in ("exp_avg", "exp_avg_sq", "step")), name
    assert state["optimizer"]["param_groups"][0]["lr"] == ref[1]["param_groups"][0]["lr"]
    # Fine-tuning on other data (here sprites, offline) continues the step count and Adam.
    result = runner.invoke(app, ["train", "--run", str(run), "--resume", "--dataset", "sprites",
                                 "--classes", "horse,bird", "--iters", "43", "--device", "cpu"])
    assert result.exit_code == 0 and "done: step 43" in result.output, result.output
    after = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert after["step"] == 43
    assert all(float(s["step"]) == 43 for s in after["optimizer"]["state"].values())


def test_import_export_import_is_bit_exact_and_export_is_the_reference_file(tmp_path):
    run = imported(tmp_path)
    out = tmp_path / "exported" / "checkpoint_40.pth"
    result = runner.invoke(app, ["export", "--run", str(run), "--format", "ncsnv2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ref, back = reference(), torch.load(out, weights_only=True)
    # What the reference runner saved: the same keys (strict=True loads it), the same tensors,
    # Adam's state at the reference's own parameter indices, epoch, step and the EMA shadow.
    assert list(back[0]) == list(ref[0]) or set(back[0]) == set(ref[0])
    assert all(torch.equal(back[0][k], ref[0][k]) for k in ref[0])
    assert set(back[1]["state"]) == set(ref[1]["state"])
    for i, s in ref[1]["state"].items():
        assert all(torch.equal(back[1]["state"][i][k], s[k]) for k in s), i
    assert back[2:4] == ref[2:4] and set(back[4]) == set(ref[4])
    assert all(torch.equal(back[4][k], ref[4][k]) for k in ref[4])
    config = yaml.safe_load((out.parent / "config.yml").read_text())  # plain YAML
    assert config["model"]["ngf"] == 8 and config["data"]["dataset"] == "CIFAR10"
    again = imported(tmp_path / "again", "--config", str(out.parent / "config.yml"))
    a = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(again / "checkpoints"))
    a.pop("imported"), b.pop("imported")  # the file each came from

    def same(x, y):
        if isinstance(x, torch.Tensor):
            return torch.equal(x, y) and x.dtype == y.dtype
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list | tuple):
            return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
        return x == y

    assert same(a, b)


def test_an_export_stopped_between_its_two_files_is_refused_on_import(tmp_path):
    """The config lands first and names its step: an old checkpoint beside a new config (a kill
    between the two writes) is one line on import; a half-written temporary is cleaned up."""
    run = imported(tmp_path)
    out = tmp_path / "exported" / "checkpoint_40.pth"
    export = ["export", "--run", str(run), "--format", "ncsnv2", "--out", str(out)]
    assert runner.invoke(app, export).exit_code == 0
    config = out.parent / "config.yml"
    assert config.read_text().startswith("# Written by pegasus")
    config.write_text(config.read_text().replace(" at step 40 ", " at step 50 ", 1))
    result = runner.invoke(app, ["import", "ncsnv2", str(out), "--run", str(tmp_path / "r")])
    assert result.exit_code == 2 and "written for step 50" in result.output, result.output
    half = out.parent / f".{out.name}.x1y2.tmp"
    half.write_bytes(b"part of a checkpoint")
    assert runner.invoke(app, export).exit_code == 0 and not half.exists()
    assert runner.invoke(app, ["import", "ncsnv2", str(out), "--run",
                               str(tmp_path / "r")]).exit_code == 0


def test_plain_and_namespace_yaml_both_import(tmp_path):
    checkpoint = copy_of(tmp_path, config=plain_config())
    result = runner.invoke(app, ["import", "ncsnv2", str(checkpoint), "--run", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "!!python/object:argparse.Namespace" in (FIXTURES / "config.yml").read_text()


def test_a_hostile_yaml_is_refused_and_runs_nothing(tmp_path):
    made = tmp_path / "made-by-yaml"
    hostile = f"!!python/object/apply:os.mkdir [{str(tmp_path / 'proof')!r}]\n"
    yaml.unsafe_load(hostile)  # an unsafe loader does run it:
    assert (tmp_path / "proof").is_dir()
    checkpoint = copy_of(tmp_path)
    text = (FIXTURES / "config.yml").read_text()
    (checkpoint.parent / "config.yml").write_text(
        text + f"extra: !!python/object/apply:os.mkdir [{str(made)!r}]\n")
    one_line(runner.invoke(app, ["import", "ncsnv2", str(checkpoint), "--run", str(tmp_path / "r")]),
             "holds YAML pegasus will not build")
    assert not made.exists() and not (tmp_path / "r").exists()


def _edited(config: dict, name: str, value) -> dict:
    section, field = name.split(".")
    config[section][field] = value
    return config


@pytest.mark.parametrize("name,value,needle", [
    ("model.spec_norm", True, "model.spec_norm is True; pegasus's RefineNet has no spectral"),
    ("model.normalization", "BatchNorm", "model.normalization is 'BatchNorm'"),
    ("model.nonlinearity", "swish", "model.nonlinearity is 'swish'"),
    ("data.logit_transform", True, "data.logit_transform is True"),
    ("data.rescaled", True, "data.rescaled is True"),
    ("data.image_size", 28, "data.image_size is 28"),
    ("data.dataset", "LSUN", "holds the tensors of NCSNv2, but its config (LSUN) names NCSNv2Deeper"),
])
def test_what_pegasus_lacks_is_refused_naming_the_field(tmp_path, name, value, needle):
    checkpoint = copy_of(tmp_path, config=_edited(plain_config(), name, value))
    one_line(runner.invoke(app, ["import", "ncsnv2", str(checkpoint), "--run", str(tmp_path / "r")]),
             needle)
    assert not (tmp_path / "r").exists()


def test_bad_files_are_one_line_each(tmp_path):
    ref = reference()
    config = plain_config()
    del config["sampling"]["step_lr"]
    cases = [(copy_of(tmp_path / "a", config=config), "field sampling.step_lr is missing")]
    wrong = [dict(ref[0]), *ref[1:]]
    wrong[0]["module.res2.0.conv1.weight"] = torch.zeros(8, 8, 1, 1)
    cases.append((copy_of(tmp_path / "b", wrong), "res2.0.conv1.weight is (8, 8, 1, 1)"))
    truncated = copy_of(tmp_path / "c")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    cases.append((truncated, "is truncated or corrupt ("))
    alone = tmp_path / "d" / "checkpoint_40.pth"
    alone.parent.mkdir()
    shutil.copy(FIXTURES / "checkpoint_40.pth", alone)
    cases.append((alone, "no config.yml beside"))
    cases.append((copy_of(tmp_path / "e", {"not": "a list"}), "its runner saves a list"))
    for checkpoint, needle in cases:
        run = checkpoint.parent / "run"
        one_line(runner.invoke(app, ["import", "ncsnv2", str(checkpoint), "--run", str(run)]),
                 needle)
        assert not run.exists()
    # A preset stands in for a missing config.yml.
    result = runner.invoke(app, ["import", "ncsnv2", str(alone), "--run", str(tmp_path / "p"),
                                 "--config", "cifar10"])
    assert result.exit_code == 0, result.output


def test_a_checkpoint_without_ema_imports_its_raw_weights_with_a_warning(tmp_path):
    ref = reference()
    config = _edited(plain_config(), "model.ema", False)
    checkpoint = copy_of(tmp_path, ref[:4], config)
    result = runner.invoke(app, ["import", "ncsnv2", str(checkpoint), "--run", str(tmp_path / "r")])
    assert result.exit_code == 0 and "holds no EMA shadow" in result.output, result.output
    state = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints"))
    assert all(torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])


@pytest.mark.parametrize("stages,res", [("ncsnv2", 64), ("deeper", 96), ("deepest", 256)])
def test_every_stage_list_maps_one_to_one_onto_the_reference_names(stages, res):
    """Beyond the fixture's class: the names of NCSNv2Deeper and NCSNv2Deepest (res31 after
    res3, refine31 between refine2 and refine3 in the forward pass, registered after refine3)."""
    from pegasus.config import build_config
    from pegasus.model.build import build_score_model

    config = build_config(None, overrides=['model.backbone="refinenet"', "model.ngf=4",
                                           f'model.stages="{stages}"', f"data.res={res}"])
    model, _ = build_score_model(config, device="meta")
    names = {reference_name(n, stages): tuple(p.shape) for n, p in model.state_dict().items()}
    assert len(names) == len(model.state_dict())  # one to one
    res_names, refines = CLASSES[stages]
    assert {n.split(".")[0] for n in names} == {"begin_conv", "normalizer", "end_conv",
                                                *res_names, *refines}
    if stages == "deepest":
        assert names["res31.0.conv1.weight"] == (8, 8, 3, 3)  # 2 ngf, downsampling
        assert names["refine31.msf.convs.0.weight"] == (8, 8, 3, 3)
        assert names["res4.0.shortcut.weight"] == (16, 8, 3, 3)  # dilated, widening to 4 ngf
        order = sorted(names, key=lambda n: registration_key(n, stages))
        firsts = [next(i for i, n in enumerate(order) if n.startswith(b + ".")) for b in
                  ("res3", "res31", "res4", "refine2", "refine3", "refine31", "refine4")]
        assert firsts == sorted(firsts)
    if stages == "deeper":
        assert names["refine2.output_convs.1_1_conv.weight"] == (8, 8, 3, 3)  # 4 ngf -> 2 ngf
