"""The sampling fast path (bf16 autocast, channels_last, torch.compile with a cache in the run
folder) and streaming many samples to a folder or an .npz, on CPU."""

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.compiling import AUTO_MIN_EVALUATIONS, FastPath
from pegasus.runs import load_trained_run
from test_errors import one_line

runner = CliRunner()


def test_auto_compiles_only_long_work_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert FastPath.choose(cuda, True, AUTO_MIN_EVALUATIONS) == FastPath(True, True, True)
    assert FastPath.choose(cuda, False, AUTO_MIN_EVALUATIONS - 1) == FastPath(True, False, False)
    assert FastPath.choose(cpu, True, 10**6) == FastPath(False, False, False)
    assert FastPath.choose(cpu, True, 1, compile_="on", amp="on") == FastPath(True, False, True)


def test_compiled_bf16_sampling_matches_eager_within_bf16_rounding(run):
    """The aot_eager backend traces with dynamo and AOTAutograd, as inductor does, without its
    C++ build (minutes on a 2-core machine)."""
    trained = load_trained_run(run, device="cpu")
    plan = trained.plan("heun", 9)
    eager = trained.sample(4, 0, plan=plan)
    path, score = trained.fast_score(plan.evaluations, compile_="on", amp="off", backend="aot_eager")
    assert path.compile and not path.amp
    torch.testing.assert_close(trained.sample(4, 0, plan=plan, score=score), eager, rtol=1e-4, atol=1e-4)
    _, bf16 = trained.fast_score(plan.evaluations, compile_="off", amp="on")
    assert (trained.sample(4, 0, plan=plan, score=bf16) - eager).abs().mean() < 0.05


def test_many_samples_stream_to_a_folder_or_an_npz(run, tmp_path):
    folder = tmp_path / "fid"
    result = runner.invoke(app, ["sample", "--run", str(run), "--num", "5", "--batch-size", "2",
                                 "--sampler", "heun", "--steps", "5", "--folder", str(folder)])
    assert result.exit_code == 0, result.output
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    npz = tmp_path / "s.npz"
    result = runner.invoke(app, ["sample", "--run", str(run), "--num", "5", "--sampler", "heun",
                                 "--steps", "5", "--out", str(npz)])
    assert result.exit_code == 0, result.output
    arr = np.load(npz)["arr_0"]
    assert arr.shape == (5, 16, 16, 3) and arr.dtype == np.uint8
    # The same images either way, batch size notwithstanding (up to one grey level).
    assert np.abs(arr[3].astype(int) - np.asarray(Image.open(files[3])).astype(int)).max() <= 1
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--folder", str(folder)]),
             "not an empty folder")
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--compile", "maybe"]), "--compile")
