"""The RefineNet at every published size: exact parameter counts of the reference networks
(NCSNv2, NCSNv2Deeper, NCSNv2Deepest at ngf 128), the layout of the block that differed, shapes
and finiteness at every resolution, and every preset building its model."""

import pytest
import torch

from pegasus.backbones.refinenet import RefineNet, auto_stages, stages_for
from pegasus.config import build_config, list_presets
from pegasus.errors import DatasetError
from pegasus.model.build import build_score_model
from pegasus.model.score import ScoreModel
from pegasus.registry import get_backbone
from pegasus.run.resume import training_start

PUBLISHED = {"ncsnv2": 29_694_083, "deeper": 83_445_379, "deepest": 94_132_611}


def _count(stages: str) -> int:
    # On the meta device: shapes only, no memory, so even the 94 M network costs nothing here.
    with torch.device("meta"):
        model = RefineNet(3, 128, stages_for(stages, 32))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("stages", sorted(PUBLISHED))
def test_parameter_counts_equal_the_published_networks(stages):
    assert _count(stages) == PUBLISHED[stages]


@pytest.mark.parametrize("res,stages", [(32, "ncsnv2"), (48, "ncsnv2"), (64, "ncsnv2"),
                                        (96, "deeper"), (128, "deeper"), (256, "deepest")])
def test_auto_chooses_as_the_paper_does(res, stages):
    assert auto_stages(res) == stages
    assert _count(auto_stages(res)) == PUBLISHED[stages]


def test_the_widening_dilated_block_keeps_its_input_width_first():
    """The reference's first block of the 4ngf stage (downsample, dilation 2): conv1 cin -> cin,
    norm2 on cin, conv2 cin -> cout, a dilated 3x3 shortcut cin -> cout."""
    with torch.device("meta"):
        model = RefineNet(3, 128, stages_for("deeper", 96))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("stages.3.0.")}
    assert shapes == {
        "stages.3.0.norm1.gamma": (256,), "stages.3.0.norm1.alpha": (256,),
        "stages.3.0.norm1.beta": (256,),
        "stages.3.0.conv1.weight": (256, 256, 3, 3), "stages.3.0.conv1.bias": (256,),
        "stages.3.0.norm2.gamma": (256,), "stages.3.0.norm2.alpha": (256,),
        "stages.3.0.norm2.beta": (256,),
        "stages.3.0.conv2.weight": (512, 256, 3, 3), "stages.3.0.conv2.bias": (512,),
        "stages.3.0.shortcut.weight": (512, 256, 3, 3), "stages.3.0.shortcut.bias": (512,),
    }
    assert model.stages[3][0].conv1.dilation == (2, 2) and model.stages[4][0].conv1.dilation == (4, 4)


@pytest.mark.parametrize("res", [32, 48, 64, 96, 128, 256])
def test_shapes_and_finite_outputs_at_every_size(res):
    spec, _ = get_backbone("refinenet")
    model = ScoreModel(spec.build({"ngf": 4}, res=res))
    x = torch.rand(1, 3, res, res)
    with torch.no_grad():
        out = model(x, torch.tensor([5.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_any_stage_list_can_be_asked_for():
    """LSUN church trains the deeper network at 64 px in the reference code."""
    spec, _ = get_backbone("refinenet")
    net = spec.build({"ngf": 4, "stages": "deeper"}, res=64)
    assert len(net.stages) == 5


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates_and_builds_its_model(name):
    config = build_config(name, overrides=[f"model.{k}={v}" for k, v in _small(build_config(name)).items()])
    model, _ = build_score_model(config)
    res = config.data.res
    with torch.no_grad():
        out = model(torch.rand(1, 3, res, res), torch.tensor([1.0]))
    assert out.shape == (1, 3, res, res) and torch.isfinite(out).all()


def _small(config):
    return {"ngf": 4} if config.model.backbone == "refinenet" else {"width": 4, "emb_dim": 8,
                                                                    "head_dim": 4, "heads": 1}


@pytest.mark.parametrize("name,sigma,levels,steps,eps,batch,adam_eps,res", [
    ("celeba", 90, 500, 5, 3.3e-6, 128, 1e-8, 64), ("church", 140, 788, 4, 4.9e-6, 128, 1e-8, 64),
    ("tower", 190, 1086, 3, 1.8e-6, 128, 1e-8, 128), ("bedroom", 190, 1086, 3, 1.8e-6, 128, 1e-8, 128),
    ("ffhq", 348, 2311, 3, 9e-7, 32, 1e-3, 256),
])
def test_published_presets(name, sigma, levels, steps, eps, batch, adam_eps, res):
    c = build_config(name)
    assert (c.noise.sigma_max, c.noise.levels, c.noise.steps_per_level, c.noise.eps) == (
        sigma, levels, steps, eps)
    assert (c.train.batch_size, c.train.adam_eps, c.data.res, c.train.lr, c.train.ema) == (
        batch, adam_eps, res, 1e-4, 0.999)
    assert c.data.dataset.startswith("folder:") and c.model.options["ngf"] == 128


def test_a_preset_whose_folder_is_missing_names_itself_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match=r"preset 'ffhq' reads folder:~/data/ffhq.*faces/"):
        training_start(tmp_path / "run", preset="ffhq")


def test_stl10_96_presets_keep_the_native_size():
    for name in ("winged-horses-stl10-96", "ncsnv2-stl10-96", "ncsnv2-stl10-64"):
        c = build_config(name)
        assert c.data.dataset == "stl10" and c.data.classes == ["horse", "bird"]
    assert build_config("ncsnv2-stl10-96").data.res == 96 == build_config("winged-horses-stl10-96").data.res


def test_largest_training_batch_arithmetic():
    from pegasus.fastpath.memory import largest_batch

    assert largest_batch(per_image=10, fixed=100, free=1000, fraction=1.0) == 90
    assert largest_batch(per_image=10, fixed=100, free=1000, fraction=0.5) == 40
    assert largest_batch(per_image=10, fixed=2000, free=1000) == 0
