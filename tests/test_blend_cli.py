"""`pegasus blend`, `train-guide` and `train-judge` on a tiny trained run."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app

runner = CliRunner()


def _blend(run, *args, env=None):
    return runner.invoke(app, ["blend", "--run", str(run), "--n", "3", "--k", "2", "--strips", "2",
                               *args], env=env)


@pytest.mark.parametrize("args,needle", [
    (["--k", "5"], "--k must be between 0 and N+1 = 4"),
    (["--k", "-1"], "--k must be between 0 and N+1"),
    (["--n", "0", "--k", "0"], "--n must be at least 1"),
    (["--from", "cat", "--guidance", "1"], "unknown class 'cat'"),
    (["--guidance", "1"], "this run has no guide"),
    (["--report"], "this run has no judge"),
])
def test_bad_input_is_one_clear_line(run, args, needle):
    result = _blend(run, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], result.output


def test_blend_writes_the_kth_images_and_labelled_strips(run, tmp_path):
    out = tmp_path / "b.png"
    result = _blend(run, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 0
    strips = Image.open(tmp_path / "b-strips.png")
    assert strips.size[0] > strips.size[1]  # 5 columns (k = 0..4) by 2 strips, plus a header


def test_guide_judge_and_report(run, tmp_path):
    for command in ("train-guide", "train-judge"):
        result = runner.invoke(app, [command, "--run", str(run), "--iters", "3", "--batch-size", "8"])
        assert result.exit_code == 0, result.output
        assert "held-out accuracy" in result.output
    result = _blend(run, "--from", "bird", "--to", "horse", "--guidance", "2", "--report",
                    "--out", str(tmp_path / "g.png"), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "bird left and horse right" in result.output
    assert "copies of training images" in result.output and "KID x 1e3 at k" in result.output
    assert "hybrid at k" in result.output  # how hybrid the columns are, by the judge
    assert result.output.count("%") >= 4  # a guided and an unguided row, two shares each
    assert result.output.count("±") >= 4  # each row's smoothness and KID, with their spreads
    # The scored strips carry the judge's numbers: a line under each image, a verdict beside.
    from PIL import Image

    plain = _blend(run, "--out", str(tmp_path / "p.png"))
    assert plain.exit_code == 0, plain.output
    scored, unscored = (Image.open(tmp_path / f"{name}-strips.png").size for name in ("g", "p"))
    assert scored[0] == unscored[0] + 96 and scored[1] == unscored[1] + 2 * 10
