"""Which column of a strip is its pegasus, and the report's strip scores, on strips whose
properties are known by construction."""

import pytest
import torch
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.errors import FieldError
from pegasus.tasks.strips import (
    StripScores,
    crossing_columns,
    default_column,
    monotonicity,
    resolve_column,
    smoothness,
)

runner = CliRunner()


def test_the_default_column_is_9_at_n_15_and_inside_every_strip():
    assert default_column(15) == 9
    for n in range(1, 200):
        assert 1 <= resolve_column(None, n) <= n
    assert resolve_column("4", 5) == 4 and resolve_column("auto", 5) == "auto"
    for bad in ("7", "-1", "middle"):
        with pytest.raises(FieldError, match="k"):
            resolve_column(bad, 5)


def test_auto_takes_the_crossing_column_or_the_most_balanced_one():
    p = torch.tensor([
        [1.0, 0.9, 0.8, 0.6, 0.45, 0.2, 0.1, 0.0],  # crosses between 3 and 4; 4 is nearer 1/2
        [1.0, 0.9, 0.7, 0.55, 0.3, 0.2, 0.1, 0.0],  # between 3 and 4; 3 is nearer
        [1.0, 0.40, 0.6, 0.6, 0.6, 0.6, 0.6, 0.0],  # never crosses from above inside: balanced
        [0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 1.0],  # never crosses: its most balanced, column 6
    ])
    assert crossing_columns(p).tolist() == [4, 3, 1, 6]


def test_monotonicity_is_one_for_a_ramp_and_negative_for_a_reversed_strip():
    ramp = torch.linspace(0, 1, 17)[None]
    assert monotonicity(ramp).item() == pytest.approx(1.0)
    assert monotonicity(ramp.flip(1)).item() == pytest.approx(-1.0)
    shuffled = ramp[:, torch.randperm(17, generator=torch.Generator().manual_seed(0))]
    assert -1 < monotonicity(shuffled).item() < 1


def test_a_strip_that_jumps_at_one_column_is_less_smooth_than_an_even_ramp():
    """Both go from 0 to 1 in 16 steps (the same path length over the strip)."""
    even = torch.linspace(0, 1, 17)[None, :, None].repeat(1, 1, 4)
    jump = (torch.arange(17) >= 9).float()[None, :, None].repeat(1, 1, 4)
    (even_mean, even_spread), (jump_mean, jump_spread) = smoothness(even), smoothness(jump)
    assert even_mean.item() == pytest.approx(jump_mean.item())
    assert even_spread.item() == pytest.approx(0.0, abs=1e-12) and jump_spread.item() > 0.4
    scores = StripScores.of(torch.tensor([[1.0, 0.5, 0.0]]), torch.tensor([[0.0, 0.5, 1.0]]),
                            even[:, :3], torch.tensor([1]))
    assert scores.columns == [1] and scores.balance == 0.0
    assert scores.monotonicity == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_every_n_blends_with_the_default_k(run, tmp_path, n):
    result = runner.invoke(app, ["blend", "--run", str(run), "--n", str(n), "--strips", "1",
                                 "--sampler", "cas", "--steps", "8", "--out",
                                 str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    assert f"k={resolve_column(None, n)} images" in result.output


def test_auto_columns_are_seeded_reported_and_need_the_judge(run, tmp_path):
    args = ["blend", "--run", str(run), "--n", "5", "--strips", "3", "--k", "auto", "--sampler",
            "cas", "--steps", "8", "--out", str(tmp_path / "b.png")]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "no judge" in missing.output
    assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "2"]).exit_code == 0
    first = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    line = next(x for x in first.output.splitlines() if x.startswith("W=0: columns k="))
    columns = [int(c) for c in line.split("k=")[1].split(",")]
    assert len(columns) in (1, 3) and all(1 <= c <= 5 for c in columns)
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert line in again.output  # seeded: the same strips, the same columns
    assert "monotonicity" in first.output and "balance at k" in first.output
