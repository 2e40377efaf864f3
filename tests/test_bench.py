"""The benchmark scripts run end to end at tiny sizes and print their comparison, so that the
figures a GPU session is asked for can be measured without first mending the scripts."""

import contextlib
import io
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"

# The scripts' own paths are under test, not the compiler (tests/test_fast_path.py compiles
# with aot_eager): the timed compiles use the eager backend, dynamo's trace alone.
CASES = {
    "train_throughput": (["--case", "small", "--steps", "1", "--device", "cpu"],
                         "speed-up (fast / eager fp32)"),
    "sample_throughput": (["--case", "small", "--images", "2", "--levels", "2", "--steps-per-level", "1",
                           "--batches", "2", "--evaluations", "1", "--backend", "eager",
                           "--repeats", "1", "--device", "cpu"],
                          "speed-up (fast sampler / eager fp32 sampler)"),
    "loss_curve": (["--preset", "sprites-demo", "--steps", "12", "--log-every", "2", "--amp", "bf16",
                    "--set", "train.batch_size=4", "--set", "data.res=16"], "ratio"),
    "data_first_batch": (["cpu", "--technique1-images", "64", "--fraction", "0.05"],
                         "technique 1 on 64 images"),
    "cli_startup": (["--repeats", "1"], "pegasus --help (example plugin on)"),
    "instancenorm": (["--repeats", "1", "--batch", "2"], "whole forward"),
    "import_memory": (["--stages", "ncsnv2", "--ngf", "4", "--res", "32", "--levels", "10"],
                      "the file; the pegasus checkpoint written is"),
    "encode_cost": (["--res", "16", "--steps", "5", "--repeats", "1"], "encode / draw"),
    "profile_kernels": (["--case", "small", "--batch", "2", "--evaluations", "1", "--top", "3",
                         "--backend", "eager", "--device", "cpu"], "per evaluation"),
}


# These two measure other processes (their start-up, their memory) from a parent that imports
# no torch, so they run as the command line runs them.
CHILDREN = {"cli_startup", "import_memory"}


def bench(script: str, *args: str) -> tuple[int, str]:
    """(exit code, stdout) of `python bench/SCRIPT.py ARGS`, run in this process, which has
    torch and pegasus imported already: a fresh interpreter per script would spend most of its
    smoke test importing them again."""
    out, code = io.StringIO(), 0
    argv, path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(BENCH / f"{script}.py"), *args], [str(BENCH)]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:  # the scripts end through sys.exit(main()), or an error line
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            out.write(stop.code)  # what the interpreter would print to stderr
    finally:
        sys.argv, sys.path[:] = argv, path
        torch._dynamo.reset()  # their compiled frames are not this worker's other tests'
    return code, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("script", CASES)
def test_benchmark_script_prints_its_comparison(script):
    args, expected = CASES[script]
    if script in CHILDREN:
        done = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args],
                              capture_output=True, text=True, timeout=300)
        code, said = done.returncode, done.stdout + done.stderr[-2000:]
    else:
        code, said = bench(script, *args)
    assert code == 0, said
    assert expected in said, said


def test_loss_curve_refuses_too_few_steps_with_one_line():
    done = subprocess.run([sys.executable, str(BENCH / "loss_curve.py"), "--steps", "20"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--steps must be at least 6 x --log-every" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def judged_run(run):
    from typer.testing import CliRunner

    from pegasus.cli import app

    assert CliRunner().invoke(app, ["train-judge", "--run", str(run), "--iters", "2"]).exit_code == 0
    return run


@pytest.mark.slow
@pytest.mark.xdist_group("judged-run")  # one worker trains the judge for both
def test_sample_quality_prints_its_table_and_plot(judged_run, tmp_path):
    def study(budgets: str):
        code, said = bench("sample_quality", "--run", str(judged_run), "--num", "8", "--real",
                           "12", "--budgets", budgets, "--rows", str(tmp_path / "rows.jsonl"),
                           "--plot", str(tmp_path / "q.png"), "--device", "cpu")
        assert code == 0, said
        return said

    said = study("heun=5;cas=3")
    assert "smallest budget within noise" in said and (tmp_path / "q.png").is_file()
    assert "measured earlier" not in said
    # Continued with one budget more: only that one is measured, the rest read back.
    again = study("heun=5;cas=3;pc=4")
    assert again.count("(measured earlier)") == 3  # als, heun, cas
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
@pytest.mark.xdist_group("judged-run")
def test_bf16_quality_compares_the_same_seed_in_both_precisions(judged_run):
    code, said = bench("bf16_quality", "--run", str(judged_run), "--num", "8", "--real", "12",
                       "--sampler", "als", "--steps", "10", "--fp32-below", "0.5,2", "--device",
                       "cpu")
    assert code == 0, said
    rows = {line.split()[0] for line in said.splitlines() if line.startswith("  ")}
    assert {"data", "fp32", "bf16", "bf16,"} <= rows, said
    # fp32 against itself: no difference, no shift.
    fp32 = next(line for line in said.splitlines() if line.startswith("  fp32 "))
    assert fp32.split()[1] == "0.0000", fp32


@pytest.mark.slow
@pytest.mark.xdist_group("judged-run")
def test_memorisation_follows_every_checkpoint_on_one_judge(judged_run, tmp_path):
    import shutil

    code, said = bench("memorisation", "--runs", f"a={judged_run},b={judged_run}", "--num", "4",
                       "--sampler", "heun", "--steps", "3")
    assert code == 0, said
    rows = [line for line in said.splitlines() if line.startswith(("a ", "b "))]
    assert len(rows) == 2 * len(list((judged_run / "checkpoints").glob("checkpoint-*.pt")))
    # The same run twice: the same figures, and both within noise of the best at once.
    assert rows[0].split()[1:] == rows[-1].split()[1:]
    assert said.count("memorised") >= 2 and "within noise of it" in said
    other = tmp_path / "other"
    shutil.copytree(judged_run, other)
    (other / "judge.pt").write_bytes(b"not the same judge")
    code, said = bench("memorisation", "--runs", f"a={judged_run},b={other}")
    assert code == 1 and said.endswith("runs a and b have different judges: copy one judge.pt "
                                       "into every run, so that one yardstick scores them all")


def _gpu_checks(tmp_path, part: str, **env):
    import os

    return subprocess.run(["bash", str(BENCH / "gpu_checks.sh"), part], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "SMOKE": "1", "PYTHON": sys.executable,
                               "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), **env})


def test_gpu_checks_run_the_named_steps_and_skip_what_the_budget_cannot_hold(tmp_path):
    """The lent GPU's script: ONLY picks steps, a step longer than the budget left is skipped
    and named, and the summary and the one log per call come back."""
    # A budget far above the step's CPU stand-in (about 20 s alone, over 40 s beside other work),
    # so that only the starved call below tests the skip.
    done = _gpu_checks(tmp_path, "first", ONLY="train-unet", BUDGET="280")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout[done.stdout.index("== summary of first"):]
    assert "== train-unet: exit 0" in summary and "speed-up (fast / eager fp32)" in summary
    assert "skipped" not in summary
    assert "sample-refinenet" not in done.stdout  # not named in ONLY
    assert "== train-unet: exit 0" in (tmp_path / "out" / "first.log").read_text()
    starved = _gpu_checks(tmp_path, "second", ONLY="instancenorm", BUDGET="5")
    assert "skipped: instancenorm (~20 s, " in starved.stdout  # its estimate is over the budget
    assert "== instancenorm (" not in starved.stdout
    assert _gpu_checks(tmp_path, "third").returncode == 2


def test_colour_drift_prints_each_runs_curve_from_its_log(tmp_path):
    from pegasus.training import train
    from tiny import tiny_config

    run = tmp_path / "run"
    train(tiny_config("train.iters=4", "train.sample_every=2", "train.grid=4"), run)
    code, said = bench("colour_drift", "--runs", f"tiny={run}")
    assert code == 0, said
    assert "step      2" in said and "step      4" in said and "second half" in said
    code, said = bench("colour_drift", "--runs", f"none={tmp_path / 'nothing'}")
    assert code == 1 and "holds no logs/ folder" in said


@pytest.mark.slow
@pytest.mark.xdist_group("judged-run")
def test_blend_quality_prints_a_row_per_weight_and_sampler(judged_run):
    from typer.testing import CliRunner

    from pegasus.cli import app

    assert CliRunner().invoke(app, ["train-guide", "--run", str(judged_run), "--iters",
                                    "2"]).exit_code == 0
    code, said = bench("blend_quality", "--run", str(judged_run), "--strips", "2", "--n", "3",
                       "--weights", "0,2", "--samplers", "cas=4,6", "--device", "cpu")
    assert code == 0, said
    rows = [line for line in said.splitlines() if line.startswith(f"| {judged_run.name} |")]
    assert len(rows) == 4 and all(row.count("|") == 12 for row in rows)


@pytest.mark.slow
@pytest.mark.xdist_group("judged-run")
def test_ect_study_prints_a_row_per_run_sampler_and_budget(judged_run, tmp_path):
    from typer.testing import CliRunner

    from pegasus.cli import app

    tuned = tmp_path / "ct"
    result = CliRunner().invoke(app, ["tune", "--run", str(judged_run), "--to", str(tuned),
                                      "--iters", "2"])
    assert result.exit_code == 0, result.output
    code, said = bench("ect_study", "--base", str(judged_run), "--runs", f"ct={tuned}",
                       "--base-samplers", "cas=3", "--num", "4", "--search", "--search-num", "4",
                       "--probes", "1")
    assert code == 0, said
    rows = [line for line in said.splitlines() if line.startswith("| ") and "---" not in line]
    # The header, cas, then 1 evaluation and 2 and 4 on Karras's grid and on the searched one.
    assert len(rows) == 1 + 1 + 5, said
    assert (tuned / "consistency-sigmas.toml").is_file()
    assert sum("(Karras)" in line for line in rows) == 2
    assert sum("(searched)" in line for line in rows) == 2
