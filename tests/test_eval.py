"""KID and FID through torchmetrics, on judge features; the sampler options of the CLI."""

import pytest
import torch
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.config import DataConfig
from pegasus.data import load_images
from pegasus.model.classifier import Classifier, ClassifierSpec
from pegasus.tasks.evaluate import measure
from pegasus.tasks.features import JudgeFeatures
from test_errors import one_line

runner = CliRunner()


def _sprites(seed: int, n: int = 300) -> torch.Tensor:
    data = load_images(DataConfig(dataset="sprites", res=16, size=n // 2, seed=seed))
    return data.images.float() / 255


def test_kid_of_a_set_against_itself_is_near_zero_and_a_shift_is_far():
    torch.manual_seed(0)
    spec = ClassifierSpec(["horse", "bird"], 16, noise_conditional=False)
    features = JudgeFeatures(Classifier(spec).eval())
    a, b = _sprites(1), _sprites(2)
    same_kid, same_std, same_fid = measure(a, b, features)
    shifted_kid, shifted_std, shifted_fid = measure(a, (b + 0.3).clamp(0, 1), features)
    assert abs(same_kid) < 3 * same_std + 1e-4
    assert shifted_kid > 10 * max(same_kid, same_std) and shifted_fid > 5 * same_fid
    assert measure(a, b, features) == (same_kid, same_std, same_fid)  # seeded subsets
    # Streamed batch by batch (as drawn or read from a folder): the same figures.
    streamed = measure(a, iter(b.split(70)), features)
    assert streamed == pytest.approx((same_kid, same_std, same_fid), rel=1e-4, abs=1e-6)


def test_eval_cli_with_judge_features(run, tmp_path):
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--num", "8"]), "this run has no judge")
    assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "3"]).exit_code == 0
    result = runner.invoke(app, ["eval", "--run", str(run), "--num", "8", "--sampler", "heun",
                                 "--steps", "5"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "KID" in text and "FID" in text and "judge features" in text and "heun at 5 evaluations" in text
    assert "colour: channel means" in text and "largest gaps" in text
    assert "the judge recognises " in text and "% of the samples (its top class at p >= 0.9)" in text


def test_the_share_the_judge_recognises_counts_top_classes_at_09():
    import torch

    from pegasus.tasks.evaluate import recognised
    from pegasus.tasks.features import JudgeFeatures

    class Judge(torch.nn.Module):  # its head maps features given as log p(class) to logits
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(2, 2)
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(2))
                self.head.bias.zero_()

    features = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.02, 0.98], [0.89, 0.11]]).log()
    assert recognised(JudgeFeatures(Judge()), features) == 0.5
    assert recognised(2048, features) is None  # Inception's features: no judge to ask


def test_eval_bad_input(run, tmp_path):
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--features", "inception",
                                 "--inception-weights", str(tmp_path / "missing.pth")]),
             "missing.pth does not exist")
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--features", "clip"]), "--features")


@pytest.mark.parametrize("args,needle", [(["--sampler", "ddim"], "--sampler 'ddim' is not one of"),
                                         (["--steps", "0"], "--steps"),
                                         (["--sampler", "heun", "--steps", "2"], "too few")])
def test_sample_sampler_options_bad_input(run, tmp_path, args, needle):
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--out", str(tmp_path / "x.png"),
                                 *args]), needle)


def test_sample_and_blend_with_each_sampler(run, tmp_path):
    for sampler, steps in (("heun", "9"), ("pc", "8"), ("cas", "6"), ("als", "9")):
        result = runner.invoke(app, ["sample", "--run", str(run), "--num", "3", "--sampler", sampler,
                                     "--steps", steps, "--out", str(tmp_path / f"{sampler}.png")])
        assert result.exit_code == 0, result.output
        assert f"({sampler}, " in result.output
    blend = ["blend", "--run", str(run), "--n", "2", "--k", "1", "--strips", "2"]
    result = runner.invoke(app, [*blend, "--sampler", "pc", "--steps", "8", "--out",
                                 str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    one_line(runner.invoke(app, [*blend, "--sampler", "heun", "--out", str(tmp_path / "c.png")]),
             "deterministic")
    result = runner.invoke(app, [*blend, "--sampler", "heun", "--steps", "9", "--mode", "slerp",
                                 "--out", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    one_line(runner.invoke(app, [*blend, "--mode", "slerp", "--sampler", "als", "--out",
                                 str(tmp_path / "e.png")]), "--mode")
    # Without a sampler, slerp takes an ODE (the run's als injects noise): heun.
    result = runner.invoke(app, [*blend, "--mode", "slerp", "--steps", "9", "--out",
                                 str(tmp_path / "f.png")])
    assert result.exit_code == 0 and (tmp_path / "f.png").is_file(), result.output


def test_eval_scores_a_sample_folder_as_the_samples_drawn_directly(run, tmp_path):
    if not (run / "judge.pt").exists():
        assert runner.invoke(app, ["train-judge", "--run", str(run), "--iters", "3"]).exit_code == 0
    folder = tmp_path / "fid"
    draw = ["--sampler", "heun", "--steps", "5"]
    assert runner.invoke(app, ["sample", "--run", str(run), "--num", "12", *draw, "--folder",
                               str(folder)]).exit_code == 0

    def scores(*args):
        result = runner.invoke(app, ["eval", "--run", str(run), *args])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "12 samples by heun at 5 evaluations" in text
        kid, fid = text.split("KID ")[1].split(" ± ")[0], text.split("FID ")[1].split(" ")[0]
        known = text.split("the judge recognises ")[1].split("%")[0]
        return float(kid), float(fid), float(known) / 100

    read, drawn = scores("--samples", str(folder)), scores("--num", "12", *draw)
    assert read[2] == pytest.approx(drawn[2], abs=1 / 12)  # the share recognised, image for image
    # The same images, up to their rounding to 8-bit pixels in the PNGs.
    assert read[:2] == pytest.approx(drawn[:2], rel=0.05, abs=1e-3)
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--samples", str(folder), "--num",
                                 "13"]), "--num must be between 2 and the 12 images")
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--samples", str(tmp_path)]),
             "holds no pegasus-samples.json")
    (folder / "000003.png").write_bytes(b"not a png")
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--samples", str(folder)]),
             "cannot read")
