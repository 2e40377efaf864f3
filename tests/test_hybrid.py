"""pegasus hybrid: the region above the back of a base image's silhouette regenerated toward the
other class, the body kept exactly, the best candidate by the run's guide; seeded per image;
bad input refused in one line before any work."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

import pegasus
from pegasus.cli import app
from pegasus.tasks.hybrid import FULL_COVERAGE, HybridScores, hybrid_scores
from pegasus.tasks.regions import above_back, background, silhouette

runner = CliRunner()


def _gradient_with_box(top: int, bottom: int, left: int, right: int, res: int = 16):
    """A vertical gradient from 0.9 to 0.6 with a dark box rows top..bottom-1, columns
    left..right-1: the sprites' layout in closed form."""
    rows = torch.linspace(0.9, 0.6, res).view(1, 1, res, 1)
    image = rows.expand(1, 3, res, res).clone()
    image[..., top:bottom, left:right] = 0.1
    return image


def test_the_silhouette_is_the_object_and_the_region_sits_above_its_back():
    image = _gradient_with_box(8, 12, 5, 12)
    assert torch.equal(background(image)[0, :, :, 0], image[0, :, :, 0])  # rows under half covered
    shape = silhouette(image)
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 8:12, 5:12] = 1
    assert torch.equal(shape, expected)
    region = above_back(shape, span=0.5, height=0.25)
    # The torso: the middle half of columns 5..11 (centre 8, half-width 1.75: 7..9), widened
    # by one pixel; from the top row of the object (8) up 4 rows (0.25 x 16).
    want = torch.zeros(1, 1, 16, 16)
    want[..., 4:9, 6:11] = 1
    assert torch.equal(region, want)


def test_an_image_without_an_object_gets_the_top_half():
    plain = _gradient_with_box(0, 0, 0, 0)
    region = above_back(silhouette(plain))
    assert region[..., :8, :].eq(1).all() and region[..., 8:, :].eq(0).all()


def test_hybrid_scores_read_the_body_and_the_region_apart():
    image = _gradient_with_box(8, 12, 5, 12)
    region = torch.zeros(1, 1, 16, 16)
    region[..., 0:8, 4:12] = 1  # nothing of the object there: coverage 0
    seen = []

    def log_prob(x):
        seen.append(x.clone())
        return torch.log(torch.tensor([[0.8, 0.2]]))

    scores = hybrid_scores(image, region, log_prob, base=0, parts=1)
    assert scores.body.item() == pytest.approx(0.8) and scores.parts.item() == pytest.approx(0.2)
    assert scores.coverage.item() == 0 and scores.hybrid.item() == 0
    body, grown = seen
    assert torch.equal(body, image)  # the region held only background
    assert torch.allclose(grown, background(image).expand_as(image))
    full = HybridScores(torch.tensor([0.64]), torch.tensor([0.25]), torch.tensor([FULL_COVERAGE]))
    assert full.hybrid.item() == pytest.approx(0.4)  # sqrt(0.64 x 0.25)


@pytest.fixture(scope="module")
def guided_run(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("guided") / "run"
    shutil.copytree(run, path)
    result = runner.invoke(app, ["train-guide", "--run", str(path), "--iters", "2"])
    assert result.exit_code == 0, result.output
    return path


def test_hybrids_keep_the_body_and_image_i_is_the_same_whatever_num_and_batch(guided_run):
    model = pegasus.load(guided_run)
    three = model.hybrid(num=3, seed=5, candidates=2)
    two = model.hybrid(num=2, seed=5, candidates=2, batch_size=1)
    assert three.images.shape == (3, 3, 16, 16) and three.sampler == "als"
    assert torch.allclose(three.images[:2], two.images, atol=1e-4)  # batches round apart
    outside = three.regions.expand_as(three.images) < 0.5
    assert torch.equal(three.images[outside], three.bases[outside])  # the body, exactly
    assert three.regions.sum() > 0 and torch.isfinite(three.images).all()
    assert ((three.scores.hybrid >= 0) & (three.scores.hybrid <= 1)).all()
    assert three.evaluations == 3 * model.trained.plan().evaluations  # base + 2 candidates
    # More candidates can only raise each image's score: the first two are among them.
    four = model.hybrid(num=3, seed=5, candidates=4)
    assert (four.scores.hybrid >= three.scores.hybrid - 1e-6).all()


def test_the_cli_writes_a_grid_or_a_folder(guided_run, tmp_path):
    out = tmp_path / "hybrids.png"
    result = runner.invoke(app, ["hybrid", "--run", str(guided_run), "--num", "2",
                                 "--candidates", "1", "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "wrote 2 hybrids" in result.output and "by the run's guide" in result.output
    folder = tmp_path / "pegasi"
    result = runner.invoke(app, ["hybrid", "--run", str(guided_run), "--num", "2",
                                 "--candidates", "1", "--folder", str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png"]
    again = runner.invoke(app, ["hybrid", "--run", str(guided_run), "--folder", str(folder)])
    assert again.exit_code == 2 and "is not empty" in again.output


@pytest.mark.parametrize("args,needle", [
    (["--base", "zebra"], "unknown class 'zebra'"),
    (["--base", "horse", "--with", "horse"], "both 'horse'"),
    (["--sampler", "heun"], "a hybrid fits its regenerated region"),
    (["--guidance", "0"], "--guidance must be above 0"),
    (["--guidance", "1e30"], "--guidance must be a number from 0 to 1000"),
    (["--candidates", "65"], "--candidates must be from 1 to 64"),
])
def test_bad_input_is_one_line_before_any_work(guided_run, tmp_path, args, needle):
    out = tmp_path / "h.png"
    result = runner.invoke(app, ["hybrid", "--run", str(guided_run), "--out", str(out), *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_run_without_its_guide_says_which_command_trains_it(run, tmp_path):
    out = tmp_path / "h.png"
    result = runner.invoke(app, ["hybrid", "--run", str(run), "--out", str(out)])
    assert result.exit_code == 2 and "pegasus train-guide" in result.output, result.output
    assert not out.exists()
