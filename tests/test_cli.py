"""The command line: bad input is one line on stderr, exit code 2, no traceback."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pegasus.cli import app
from tiny import TINY

runner = CliRunner()


def _one_clear_line(result, needle):
    text = result.output  # stdout and stderr together
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], text


def _train(tmp_path, *args):
    sets = [a for s in TINY for a in ("--set", s)]
    return runner.invoke(app, ["train", "--run", str(tmp_path / "run"), *sets, *args])


def test_unknown_backbone(tmp_path):
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--backbone", "nope"])
    _one_clear_line(result, "unknown backbone 'nope'")


def test_unknown_class(tmp_path):
    _one_clear_line(_train(tmp_path, "--classes", "horse,cat"), "unknown class 'cat'")


def test_resolution_the_backbone_does_not_support(tmp_path):
    result = runner.invoke(app, ["train", "--run", str(tmp_path), "--dataset", "sprites", "--res", "20",
                                 "--set", "model.ngf=4", "--set", "data.size=2"])
    _one_clear_line(result, "does not support 20 px")


def test_missing_run_directory(tmp_path):
    result = runner.invoke(app, ["sample", "--run", str(tmp_path / "missing")])
    _one_clear_line(result, "does not exist")


def test_malformed_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\niters = 'many'\n")
    _one_clear_line(runner.invoke(app, ["train", "--config", str(bad)]), "train.iters")
    bad.write_text("[train\n")
    _one_clear_line(runner.invoke(app, ["train", "--config", str(bad)]), "not valid TOML")


def test_resume_without_checkpoint(tmp_path):
    _one_clear_line(_train(tmp_path, "--resume"), "cannot resume")


def test_train_then_sample_is_reproducible(tmp_path):
    result = _train(tmp_path)
    assert result.exit_code == 0, result.output
    out_a, out_b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (out_a, out_b):
        r = runner.invoke(app, ["sample", "--run", str(tmp_path / "run"), "--num", "4",
                                "--seed", "3", "--out", str(out)])
        assert r.exit_code == 0, r.output
    assert out_a.read_bytes() == out_b.read_bytes()


def test_plugins_and_backbones_listings():
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0 and '"builtin"' in result.output and "refinenet" in result.output
    result = runner.invoke(app, ["backbones"])
    assert result.exit_code == 0 and "unet" in result.output and "ngf=128" in result.output


@pytest.mark.slow
def test_console_entry_point_help_and_module_form():
    for cmd in (["pegasus", "--help"], [sys.executable, "-m", "pegasus", "--help"]):
        exe = cmd if cmd[0] != "pegasus" else [sys.executable, "-c",
                                               "from pegasus.cli import main; main()", "--help"]
        done = subprocess.run(exe, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "train" in done.stdout and "blend" in done.stdout


def test_train_announces_the_schedule_it_planned(tmp_path):
    import tomllib

    auto = ["--set", 'noise.sigma_max="auto"', "--set", 'noise.levels="auto"', "--set", 'noise.eps="auto"']
    result = _train(tmp_path, *auto, "--set", "train.iters=1")
    assert result.exit_code == 0, result.output
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["noise"]
    assert isinstance(saved["levels"], int) and saved["levels"] >= 2
    assert (f"noise: sigma_1 {saved['sigma_max']:.4g}, sigma_L 0.01, L {saved['levels']}, T 2, "
            f"eps {saved['eps']:.3g} (planned from the data") in " ".join(result.output.split())
    # and the fast path it trains on: on CPU, "auto" turns everything off (and is recorded as
    # "auto", so the same run resumed on a GPU compiles).
    assert "fast path: eager float32" in result.output
    train = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["train"]
    assert train["compile"] == "auto"


def test_the_allocator_keeps_freed_blocks_on_glibc():
    """pegasus raises glibc's mmap and trim thresholds once (pegasus/allocator.py): a chain's
    large activations are then reused instead of handed back to the kernel at every step."""
    import platform

    from pegasus import allocator

    done = allocator.keep_freed_memory()
    assert done is (platform.libc_ver()[0] == "glibc")
    assert allocator.keep_freed_memory() is done  # once per process, idempotent


SAMPLE_AND_LIST = """
import runpy, sys
sys.argv = ["pegasus", *sys.argv[1:]]
try:
    runpy.run_module("pegasus", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
print(sorted(m for m in ("torch._dynamo", "torchvision") if m in sys.modules))
"""


@pytest.mark.slow
def test_a_sampling_job_imports_neither_torchs_compiler_nor_torchvision(run, tmp_path):
    # Each costs every CLI call seconds before any work (1.4 s and 2.7 s here): building the
    # network on the meta device (out-of-place arithmetic there runs torch's Python meta
    # kernels, which import the compiler) and a grid by torchvision's make_grid once did.
    done = subprocess.run([sys.executable, "-c", SAMPLE_AND_LIST, "sample", "--run", str(run),
                           "--num", "4", "--sampler", "heun", "--steps", "3", "--out",
                           str(tmp_path / "grid.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "grid.png").is_file()


def test_a_sampler_takes_its_options_on_the_command_line(run, tmp_path):
    from PIL import Image

    from test_errors import one_line

    def pixels(sampler, name, seed="0"):
        out = tmp_path / f"{name}.png"
        done = CliRunner().invoke(app, ["sample", "--run", str(run), "--num", "4", "--seed", seed,
                                        "--sampler", sampler, "--steps", "7", "--out", str(out)])
        assert done.exit_code == 0, done.output
        return Image.open(out).tobytes()

    churned = pixels("heun[churn=10]", "a")
    assert churned == pixels("heun[churn=10]", "b")  # seeded
    assert churned != pixels("heun", "c") and churned != pixels("heun[churn=10]", "d", seed="1")
    # eq. 4 blends injected noise: heun blends by it once churn injects some.
    done = CliRunner().invoke(app, ["blend", "--run", str(run), "--n", "2", "--k", "1", "--sampler",
                                    "heun[churn=10]", "--steps", "7", "--out",
                                    str(tmp_path / "blend.png")])
    assert done.exit_code == 0, done.output
    one_line(CliRunner().invoke(app, ["sample", "--run", str(run), "--sampler", "heun[churn=1",
                                      "--out", str(tmp_path / "e.png")]), "heun[churn=1")


# The README's cheat sheet, run as written on a tiny run standing in for runs/demo: the quick
# lines (the others need a dataset pegasus cannot download here, or minutes of training).
QUICK = [
    "pegasus sample --run runs/demo --num 4 --seed 0",
    "pegasus export --run runs/demo --out model.safetensors",
    "pegasus sample --weights model.safetensors --num 16",
    "pegasus blend --run runs/demo --k 9 --n 15 --strips 8 --out blend.png",
    "pegasus sample --run runs/demo --sampler heun --steps 29",
    "pegasus blend --run runs/demo --sampler heun --mode slerp --k 9 --n 15",
    "pegasus samplers",
    "pegasus train --run runs/demo --resume",
]


def test_the_readmes_quick_commands_run_as_written(run, tmp_path, monkeypatch):
    import shlex
    import shutil
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    sheet = next(block for block in readme.split("```")[1::2] if "pegasus samplers" in block)
    written = [line.split(" #")[0].strip() for line in sheet.splitlines()]
    demo = tmp_path / "runs" / "demo"
    shutil.copytree(run, demo, ignore=shutil.ignore_patterns(".lock"))
    monkeypatch.chdir(tmp_path)
    for command in QUICK:
        assert command in written, f"the README no longer shows: {command}"
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"
    assert (tmp_path / "samples.png").exists() and (tmp_path / "blend-strips.png").exists()
