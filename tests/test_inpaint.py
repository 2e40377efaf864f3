"""Inpainting: on a Gaussian data model the regenerated pixels follow the exact conditional
distribution given the kept ones; kept pixels come out exactly as given; masks and bad input."""

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.errors import FieldError, UserError
from pegasus.noise.schedule import Schedule
from pegasus.noise.techniques import choose_eps
from pegasus.run.job import SamplingJob
from pegasus.samplers.plan import plan_sampler
from pegasus.tasks.inpaint import inpaint
from pegasus.tasks.inputs import builtin_mask, read_mask
from test_errors import one_line

runner = CliRunner()

# A correlated 4-D Gaussian: pixels 0 and 1 kept (about one standard deviation off their means),
# 2 and 3 regenerated. Conditioning by re-noising the kept pixels is an approximation (the
# others see them noisy at the levels where they mix); its error grows with the correlation
# between kept and regenerated pixels, so the model's correlations are moderate, as neighbouring
# pixels' are once an image's mean is known.
MEAN = torch.tensor([0.5, 0.4, 0.6, 0.3], dtype=torch.float64)
A = torch.tensor([[0.3, 0.0, 0.0, 0.0], [0.05, 0.2, 0.0, 0.0], [0.1, 0.05, 0.15, 0.0],
                  [0.03, -0.06, 0.05, 0.15]], dtype=torch.float64)
COV = A @ A.T
MASK = torch.tensor([0.0, 0.0, 1.0, 1.0])
GIVEN = torch.tensor([0.65, 0.3, 0.0, 0.0])
SCHEDULE = Schedule(3.0, 0.01, 60, 5, choose_eps((3.0 / 0.01) ** (1 / 59), 0.01, 5))


def gaussian_score(x, sigma):
    """-(Sigma + sigma^2 I)^-1 (x - mu): the exact score of the perturbed data."""
    x64, s = x.double(), sigma.double()
    prec = torch.linalg.inv(COV[None] + s.view(-1, 1, 1) ** 2 * torch.eye(4, dtype=torch.float64))
    return -(prec @ (x64 - MEAN)[..., None])[..., 0].float()


def conditional():
    k, u = [0, 1], [2, 3]
    gain = COV[u][:, k] @ torch.linalg.inv(COV[k][:, k])
    mean = MEAN[u] + gain @ (GIVEN.double()[k] - MEAN[k])
    cov = COV[u][:, u] - gain @ COV[k][:, u]
    return mean, cov.diagonal()


@pytest.mark.parametrize("name,steps,options", [("als", None, {}),
                                                ("pc", 300, {"corrector_steps": 4})])
def test_regenerated_pixels_follow_the_exact_conditional(name, steps, options):
    """Mean within 0.015 (the prior's is 0.05 away for pixel 3; 4000 samples give a standard
    error of 0.0025) and variance within 20% of the conditional's (the prior's is 18-55% larger)."""
    plan = plan_sampler(name, SCHEDULE, steps, **options)
    out = inpaint(gaussian_score, GIVEN, MASK, plan, num=4000, seed=0)
    mean, var = conditional()
    got_mean, got_var = out[:, 2:].double().mean(0), out[:, 2:].double().var(0)
    assert torch.allclose(got_mean, mean, atol=0.015), (got_mean, mean)
    assert torch.allclose(got_var / var, torch.ones(2, dtype=torch.float64), atol=0.2), (got_var, var)
    assert torch.equal(out[:, :2], GIVEN[:2].expand(4000, 2))  # kept exactly


@pytest.mark.parametrize("name", ["heun", "cas"])
def test_samplers_without_langevin_steps_are_refused(name):
    with pytest.raises(FieldError, match="Langevin"):
        inpaint(gaussian_score, GIVEN, MASK, plan_sampler(name, SCHEDULE, 20), num=2, seed=0)


def test_inpainting_is_seeded():
    plan = plan_sampler("pc", SCHEDULE, 50)
    a = inpaint(gaussian_score, GIVEN, MASK, plan, num=16, seed=3)
    assert torch.equal(a, inpaint(gaussian_score, GIVEN, MASK, plan, num=16, seed=3))
    assert not torch.equal(a, inpaint(gaussian_score, GIVEN, MASK, plan, num=16, seed=4))


@pytest.mark.parametrize("name,region", [
    ("right-half", (slice(None), slice(4, 8))), ("left-half", (slice(None), slice(0, 4))),
    ("top", (slice(0, 4), slice(None))), ("bottom", (slice(4, 8), slice(None))),
    ("centre", (slice(2, 6), slice(2, 6))), ("box:1,2,5,7", (slice(2, 7), slice(1, 5))),
])
def test_builtin_masks(name, region):
    mask = builtin_mask(name, 8)
    expected = torch.zeros(1, 8, 8)
    expected[(slice(None), *region)] = 1
    assert torch.equal(mask, expected)


def test_bad_masks():
    with pytest.raises(FieldError, match="not inside"):
        builtin_mask("box:0,0,9,4", 8)
    with pytest.raises(FieldError, match="neither a file nor"):
        builtin_mask("wings", 8)
    plan = plan_sampler("pc", SCHEDULE, 20)
    with pytest.raises(UserError, match="empty"):
        inpaint(gaussian_score, GIVEN, torch.zeros(4), plan, num=1, seed=0)
    with pytest.raises(UserError, match="whole image"):
        inpaint(gaussian_score, GIVEN, torch.ones(4), plan, num=1, seed=0)


def test_mask_files(tmp_path):
    square = Image.new("L", (32, 32), 0)
    square.paste(255, (16, 0, 32, 32))
    square.save(tmp_path / "m.png")
    assert torch.equal(read_mask(tmp_path / "m.png", 16), builtin_mask("right-half", 16))
    Image.new("L", (40, 20), 128).save(tmp_path / "grey.png")
    with pytest.raises(UserError, match="square mask or one the size"):
        read_mask(tmp_path / "grey.png", 16)
    Image.new("L", (20, 20), 128).save(tmp_path / "grey.png")
    with pytest.raises(UserError, match="not black and white"):
        read_mask(tmp_path / "grey.png", 16)
    # The size of a non-square image: cropped as the image is.
    wide = Image.new("L", (40, 20), 0)
    wide.paste(255, (20, 0, 30, 20))
    wide.save(tmp_path / "wide.png")
    assert torch.equal(read_mask(tmp_path / "wide.png", 16, image_size=(40, 20)),
                       builtin_mask("right-half", 16))


def test_inpaint_cli(run, tmp_path):
    Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / "horse.png")
    out = tmp_path / "out.png"
    for image, mask in ((str(tmp_path / "horse.png"), "right-half"), ("sample:3", "box:2,2,10,8")):
        result = runner.invoke(app, ["inpaint", "--run", str(run), "--image", image, "--mask", mask,
                                     "--num", "3", "--sampler", "pc", "--steps", "6", "--out", str(out)])
        assert result.exit_code == 0, result.output
        # input, mask, kept, 3 completions, each 16 px enlarged to 64 px so it can be seen
        assert Image.open(out).size == (6 * 66 + 2, 68)
    base = ["inpaint", "--run", str(run), "--out", str(out), "--steps", "6", "--sampler", "pc"]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for args, needle in (([str(tmp_path / "bad.png")], "cannot read image"),
                         (["sample:3", "--mask", "box:0,0,16,16"], "whole image"),
                         (["sample:x"], "--image"), (["missing.png"], "neither an image file")):
        result = runner.invoke(app, [*base, "--image", *args])
        one_line(result, needle)
        assert result.output.startswith("error:"), result.output  # before any progress bar
    one_line(runner.invoke(app, [*base]), "give the image")
    result = runner.invoke(app, ["blend", "--run", str(run), "--n", "2", "--k", "1", "--strips", "2",
                                 "--image", "sample:3", "--mask", "right-half", "--out",
                                 str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    one_line(runner.invoke(app, ["blend", "--run", str(run), "--mask", "top", "--out",
                                 str(tmp_path / "c.png")]), "both --image and --mask")


def test_a_masked_blend_keeps_the_image_outside_the_mask_in_every_column(run):
    from pegasus.run.load import load_trained_run
    from pegasus.tasks.blend import BlendRequest, blend

    trained = load_trained_run(run, device="cpu")
    image = SamplingJob.make(trained, trained.plan(), num=1).images(3)[0]  # what sample:3 names
    mask = builtin_mask("top", 16)
    strips = blend(trained, BlendRequest(n=3, k=1, strips=2, image="sample:3", mask="top")).strips
    kept = (mask == 0).expand(3, 16, 16)
    for column in strips.flatten(0, 1):
        assert torch.equal(column[kept], image[kept])
    assert not torch.equal(strips[0, 0][~kept], strips[0, -1][~kept])  # the blended region moves
    with pytest.raises(FieldError, match="Langevin"):
        blend(trained, BlendRequest(n=3, k=1, strips=2, image="sample:3", mask="top",
                                    sampler="cas", steps=6))
