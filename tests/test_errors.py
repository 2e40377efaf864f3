"""Bad input through the CLI: one line on stderr starting with `error:`, exit code 2, no
traceback, refused before any slow work, and nothing already written is lost."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pegasus import __version__
from pegasus.cli import app
from pegasus.registry import load_registry
from pegasus.run.job import SamplingJob
from pegasus.training import train
from tiny import TINY, tiny_config

runner = CliRunner()


def one_line(result, needle: str) -> None:
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], text


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sigmas_write_into_a_missing_folder_creates_it_and_an_unwritable_one_is_one_line(tmp_path):
    target = tmp_path / "missing" / "dir" / "plan.toml"
    args = ["sigmas", "--dim", "3072", "--sigma-max", "50", "--levels", "232"]
    result = runner.invoke(app, [*args, "--write", str(target)])
    assert result.exit_code == 0, result.output
    assert "[noise]" in target.read_text()
    one_line(runner.invoke(app, [*args, "--write", "/proc/no/plan.toml"]), "cannot write")


@pytest.mark.parametrize("device", ["tpu", "cuda:abc", "gpu0"])
def test_a_bad_device_is_one_line_before_any_work(tmp_path, run, device):
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--device", device,
                                 "--out", str(tmp_path / "x.png")]), f"device {device!r}")
    sets = [a for s in TINY if not s.startswith("train.device") for a in ("--set", s)]
    result = runner.invoke(app, ["train", "--run", str(tmp_path / "new"), *sets, "--device", device])
    one_line(result, f"device {device!r}")
    assert not (tmp_path / "new").exists()


def test_sample_from_a_file_that_is_not_a_score_checkpoint(tmp_path, run):
    runner.invoke(app, ["train-guide", "--run", str(run), "--iters", "2", "--device", "cpu"])
    one_line(runner.invoke(app, ["sample", "--checkpoint", str(run / "guide.pt"), "--out",
                                 str(tmp_path / "x.png")]), "is a guide or judge classifier")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    one_line(runner.invoke(app, ["sample", "--checkpoint", str(junk), "--out",
                                 str(tmp_path / "x.png")]),
             "is not a pegasus checkpoint: it is no torch zip archive")


def test_output_that_is_a_folder_or_an_unknown_format_is_refused_before_sampling(tmp_path, run):
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--out", str(folder)]), "--out")
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--out", str(tmp_path / "x.txt")]),
             "not an image format")
    one_line(runner.invoke(app, ["blend", "--run", str(run), "--out", str(tmp_path / "b.gif")]),
             "not an image format")
    (tmp_path / "afile").write_text("")
    for out in ("x.npz", "x.png"):  # a folder that is a file: refused before the sampling bar
        result = runner.invoke(app, ["sample", "--run", str(run), "--out",
                                     str(tmp_path / "afile" / out)])
        one_line(result, "is a file, not a folder")
        assert "sample (" not in result.output


def test_jpeg_output_is_a_jpeg(tmp_path, run):
    out = tmp_path / "x.jpg"
    result = runner.invoke(app, ["sample", "--run", str(run), "--num", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # the JPEG start-of-image marker
    png = tmp_path / "x.png"
    runner.invoke(app, ["sample", "--run", str(run), "--num", "2", "--out", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_num_4_is_the_first_4_of_num_64_whatever_the_batch(tmp_path, run):
    paths = {}
    for name, extra in {"4": ["--num", "4"], "64": ["--num", "64"],
                        "64-b3": ["--num", "64", "--batch-size", "3"]}.items():
        paths[name] = tmp_path / f"{name}.png"
        result = runner.invoke(app, ["sample", "--run", str(run), "--seed", "3", "--out",
                                     str(paths[name]), *extra])
        assert result.exit_code == 0, result.output
    # Grids: 4 images are 2x2 tiles of 16 px enlarged to 64 with 2 px padding, 64 are 8x8; the
    # first 4 of 64 are the first 4 tiles of its top row.
    four, many, batched = (_pixels(paths[n]) for n in ("4", "64", "64-b3"))

    def tile(grid, row, column):
        return grid[2 + 66 * row:66 + 66 * row, 2 + 66 * column:66 + 66 * column]

    tiles = [tile(four, 0, 0), tile(four, 0, 1), tile(four, 1, 0), tile(four, 1, 1)]
    for i, one in enumerate(tiles):
        # Equal up to one grey level: convolutions pick kernels by batch size (last float bits).
        assert np.abs(one - tile(many, 0, i)).max() <= 1
    assert np.abs(many - batched).max() <= 1
    assert np.abs(tiles[0] - tiles[1]).max() > 10  # the tiles are different images


def test_unknown_plugin_names_are_warned_about():
    problems = load_registry(entry_points=[], env={"PEGASUS_PLUGINS": "nosuch"}).problems()
    assert any("PEGASUS_PLUGINS names 'nosuch'" in p and "no plugin of that name" in p
               for p in problems)
    problems = load_registry(entry_points=[], env={"PEGASUS_DISABLE_PLUGINS": "other"}).problems()
    assert any("'other'" in p for p in problems)


def test_a_guide_needs_two_classes(tmp_path):
    one = tmp_path / "one"
    train(tiny_config('data.classes=["horse"]', "train.iters=1"), one, tensorboard=False)
    one_line(runner.invoke(app, ["train-guide", "--run", str(one), "--iters", "2"]), "one class")
    assert not (one / "guide.pt").exists()


def test_a_run_folder_with_any_unicode_name_resumes(tmp_path):
    path = tmp_path / "pégase 🐎"
    sets = [a for s in TINY for a in ("--set", s)]
    data = tmp_path / "données 🐦"
    result = runner.invoke(app, ["train", "--run", str(path), *sets, "--iters", "2",
                                 "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "🐦" in (path / "config.toml").read_text(encoding="utf-8")
    result = runner.invoke(app, ["train", "--run", str(path), "--resume", "--set", "train.iters=8"])
    assert result.exit_code == 0, result.output
    assert "done: step 8" in " ".join(result.output.split())


def test_checks_run_before_any_output(tmp_path):
    sets = [a for s in TINY for a in ("--set", s)]
    for bad, needle in ((["--classes", "horse,cat"], "unknown class 'cat'"),
                        (["--set", "model.width=0"], "model"),
                        (["--set", "data.res=20"], "does not support 20 px")):
        result = runner.invoke(app, ["train", "--run", str(tmp_path / "r"), *sets, *bad])
        one_line(result, needle)
        assert "training" not in result.output and not (tmp_path / "r").exists()
        # The error line alone: no progress bar started before the check, no empty line.
        assert result.output.strip("\n").startswith("error:"), result.output


def test_version_examples_and_completion():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    for verb in ("train", "sample", "blend", "export", "train-guide", "train-judge", "data",
                 "sigmas", "plugins", "backbones", "device"):
        text = runner.invoke(app, [verb, "--help"]).output
        assert "Examples:" in text and f"pegasus {verb}" in text, verb
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_usage_errors_are_one_line_too(tmp_path, run):
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--num", "0"]), "--num")
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--no-such-flag"]), "--no-such-flag")


def test_export_and_sample_from_the_weights_alone_is_bit_identical(tmp_path, run):
    weights = tmp_path / "model.safetensors"
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(weights)])
    assert result.exit_code == 0, result.output
    from pegasus.run.load import load_trained_run

    a = load_trained_run(run, device="cpu")
    b = load_trained_run(weights=weights, device="cpu")
    assert b.config == a.config and torch.equal(b.sigmas, a.sigmas) and b.step == a.step
    assert torch.equal(SamplingJob.make(a, a.plan(), num=3).images(2),
                       SamplingJob.make(b, b.plan(), num=3).images(2))
    out_a, out_b = tmp_path / "a.png", tmp_path / "b.png"
    runner.invoke(app, ["sample", "--run", str(run), "--num", "2", "--out", str(out_a)])
    result = runner.invoke(app, ["sample", "--weights", str(weights), "--num", "2", "--out", str(out_b)])
    assert result.exit_code == 0, result.output
    assert out_a.read_bytes() == out_b.read_bytes()
    # The default place is the run's exports/ folder; the file holds no pickle at all.
    result = runner.invoke(app, ["export", "--run", str(run)])
    assert result.exit_code == 0 and list((run / "exports").glob("weights-*.safetensors"))
    assert b"pickle" not in weights.read_bytes()[:4096] and weights.read_bytes()[8:9] == b"{"


def test_bad_weights_files_are_one_line(tmp_path, run):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    one_line(runner.invoke(app, ["sample", "--weights", str(fake), "--out", str(tmp_path / "x.png")]),
             "fake.safetensors")
    one_line(runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "m.pt")]),
             "safetensors")


def test_another_librarys_error_is_quoted_by_its_first_line():
    """A message-less error (an OSError() from a download, say) used to end in an IndexError
    inside the handler meant to report it."""
    from pegasus.errors import first_line

    assert first_line(RuntimeError("\n  Error(s) in loading\n\tsize mismatch")) == "Error(s) in loading"
    assert first_line(OSError()) == "OSError"


def test_classifier_training_checks_before_its_bar(tmp_path):
    (tmp_path / "empty").mkdir()
    for verb in ("train-guide", "train-judge"):
        result = runner.invoke(app, [verb, "--run", str(tmp_path / "empty")])
        one_line(result, "no checkpoint yet")
        assert result.output.startswith("error:"), result.output  # no empty bar above it


def test_each_commands_summary_is_one_line():
    """`pegasus --help` lists each command by its docstring's first paragraph, line breaks
    kept: a summary wrapped in the source showed as a broken line there."""
    for command in app.registered_commands:
        summary = command.callback.__doc__.strip().split("\n\n")[0]
        assert "\n" not in summary, command.callback.__name__


def _weights_with(tmp_path, run, name, edit_config=None, edit_tensors=None):
    """The run's exported weights with their metadata's config or their tensors changed."""
    import json

    from safetensors.torch import load_file, save_file

    from pegasus.run.export import export_run

    plain = export_run(run, tmp_path / "plain.safetensors")
    from safetensors import safe_open

    with safe_open(plain, framework="pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(plain)
    if edit_config is not None:
        config = json.loads(metadata["config"])
        edit_config(config)
        metadata["config"] = json.dumps(config)
    if edit_tensors is not None:
        tensors = {k: edit_tensors(v) for k, v in tensors.items()}
    save_file(tensors, tmp_path / name, metadata=metadata)
    return tmp_path / name


def test_untrustworthy_inputs_are_one_line_each_before_any_work(tmp_path, run):
    """Files that did not come from pegasus, or were altered, and absurd sizes: each refused in
    one line, exit 2, before any allocation or progress bar."""
    from PIL import Image

    png = tmp_path / "picture.png"
    Image.new("RGB", (16, 16)).save(png)
    torch_file = tmp_path / "model.pt"
    torch.save({"a": torch.ones(2)}, torch_file)
    out = ["--out", str(tmp_path / "x.png")]
    wide = _weights_with(tmp_path, run, "wide.safetensors",
                         edit_config=lambda c: c["model"].update(width=1_000_000))
    elsewhere = _weights_with(tmp_path, run, "other.safetensors",
                              edit_config=lambda c: c["model"].update(backbone="nosuch"))
    ints = _weights_with(tmp_path, run, "int8.safetensors",
                         edit_tensors=lambda t: t.to(torch.int8))
    nans = _weights_with(tmp_path, run, "nan.safetensors",
                         edit_tensors=lambda t: torch.full_like(t, float("nan")))
    cases = [
        (["sample", "--checkpoint", str(png), *out], "is a PNG image, not a pegasus checkpoint"),
        (["sample", "--weights", str(torch_file), *out], "give it as the checkpoint instead"),
        (["sample", "--weights", str(wide), *out], "do not fit backbone 'unet'"),
        (["sample", "--weights", str(elsewhere), *out],
         "needs backbone 'nosuch', which no installed plugin provides"),
        (["sample", "--weights", str(ints), *out], "holds torch.int8 values"),
        (["sample", "--weights", str(nans), *out], "holds nan or inf values"),
        (["sample", "--run", str(run), "--sampler", "heun", "--steps", "1000000000", *out],
         "--steps must be between 1 and 100,000"),
        (["sample", "--run", str(run), "--num", "1000000000000", "--out", str(tmp_path / "x.npz")],
         "--num must be between 1"),
        (["sample", "--run", str(run), "--num", "20000", *out], "too many for one picture"),
        (["sample", "--run", str(run), "--batch-size", "1000000000", *out], "do not fit"),
        (["blend", "--run", str(run), "--strips", "1000000000", "--n", "3", "--k", "1",
          "--out", str(tmp_path / "b.png")], "--strips"),
        (["blend", "--run", str(run), "--n", "1000000000", "--k", "1",
          "--out", str(tmp_path / "b.png")], "--n"),
        (["inpaint", "--run", str(run), "--image", "sample:1", "--sampler", "heun", *out],
         "--sampler heun takes no Langevin or consistency steps"),
        (["inpaint", "--run", str(run), "--image", "sample:-1", *out], "seed of 0 or more"),
        (["train", "--run", str(tmp_path / "new"), *[a for s in TINY for a in ("--set", s)],
          "--set", "train.batch_size=1000000000"], "1,000,000,000 does not fit in this machine's"),
        (["train", "--run", str(tmp_path / "new"), *[a for s in TINY for a in ("--set", s)],
          "--set", "data.res=100000"], "res must be at most 1024"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        one_line(result, needle)
        assert result.output.startswith("error:"), (args, result.output)  # nothing before it
    assert not (tmp_path / "new").exists()


def _bomb_png(path):
    """A PNG whose header claims 30000 x 30000 px (Pillow refuses it at open, before decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def test_absurd_numbers_and_files_are_one_line_before_any_work(tmp_path, run, monkeypatch):
    """Non-finite rates and weights, sizes that would allocate terabytes, a picture of 900
    million pixels and a latent named as a picture: one line each, exit 2."""
    bomb = _bomb_png(tmp_path / "bomb.png")
    huge = _weights_with(tmp_path, run, "levels.safetensors",
                         edit_config=lambda c: c["noise"].update(levels=10**9))
    sets = [a for s in TINY for a in ("--set", s)]
    new = ["train", "--run", str(tmp_path / "new"), *sets, "--set"]
    out = ["--out", str(tmp_path / "x.png")]
    cases = [
        ([*new, "train.lr=nan"], "lr must be positive and finite, got nan"),
        (["sigmas", "--dim", "768", "--sigma-max", "inf"], "sigma_max must be a positive number"),
        (["sigmas", "--dim", "768", "--sigma-max", "50", "--levels", "1000000"],
         "levels must be at most 100,000"),
        ([*new, "train.lr=inf"], "lr must be positive and finite, got inf"),
        ([*new, "noise.levels=1000000000"], "levels must be at most 100,000"),
        ([*new, "noise.levels=2.5"], "expected an integer"),
        ([*new, "data.size=1000000000"], "size must be at most 200,000"),
        ([*new, "train.grid=1000000000"], "grid must be at most 10,000"),
        ([*new, "model.width=1000000"], "GiB to train"),
        (["train-guide", "--run", str(run), "--batch-size", "1000000000"], "does not fit"),
        (["train-judge", "--run", str(run), "--batch-size", "1000000000"], "does not fit"),
        (["sample", "--weights", str(huge), *out], "levels must be at most 100,000"),
        (["blend", "--run", str(run), "--guidance", "inf", "--n", "3", "--k", "1", *out],
         "guidance must be a number from 0 to 1000"),
        (["encode", "--run", str(run), "--image", "sample:0", "--out", str(tmp_path / "z.png")],
         "name it .pt"),
        (["encode", "--run", str(run), "--image", str(bomb), "--out", str(tmp_path / "z.pt")],
         "more pixels than Pillow opens safely"),
        (["inpaint", "--run", str(run), "--image", "sample:0", "--mask", str(bomb), *out],
         "more pixels than Pillow opens safely"),
    ]
    for args, needle in cases:
        one_line(runner.invoke(app, args), needle)
    assert not (tmp_path / "new").exists() and not (tmp_path / "z.png").exists()
    # `--run ''` is the current folder: a new run never goes where other files are.
    monkeypatch.chdir(tmp_path)
    one_line(runner.invoke(app, ["train", "--run", "", *sets]), "holds files that are not a run's")
    assert not (tmp_path / "logs").exists() and not (tmp_path / "checkpoints").exists()
    # Nor where an unrelated logs/ sits alone, without a run's config beside it.
    (tmp_path / "alone" / "logs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "alone")
    one_line(runner.invoke(app, ["train", "--run", "", *sets]), "(logs)")
    assert not (tmp_path / "alone" / "checkpoints").exists()


def test_odd_pictures_are_converted_with_a_note_or_refused(tmp_path):
    """Grey, RGBA and 16-bit pictures are converted, each with a one-line note (16-bit scaled
    to 8 bits, not clipped white); a 1x1 picture is refused."""
    import numpy as np
    from PIL import Image

    from pegasus.errors import PegasusWarning, UserError
    from pegasus.tasks.inputs import read_image

    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16)).save(deep)
    with pytest.warns(PegasusWarning, match="scaled to 8 bits"):
        x = read_image(deep, 16)
    assert abs(float(x.mean()) - 30000 / 65535) < 0.01  # not 1.0, which clipping gives
    for mode, needle in (("L", "grey image"), ("RGBA", "alpha channel")):
        path = tmp_path / f"{mode}.png"
        Image.new(mode, (20, 20)).save(path)
        with pytest.warns(PegasusWarning, match=needle):
            assert read_image(path, 16).shape == (3, 16, 16)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(UserError, match="1 x 1 px"):
        read_image(tiny, 16)


def test_the_third_audits_cases_are_one_line_and_write_nothing(tmp_path, run, monkeypatch):
    """Absurd guidance weights, the same class twice, a chain whose images are not finite and
    a sample folder of pictures of another size: one line each, exit 2, no picture written."""
    import json

    from pegasus.errors import SamplingError
    from pegasus.model.score import ScoreModel
    from pegasus.noise.schedule import Schedule
    from pegasus.samplers.plan import plan_sampler
    from pegasus.tasks.steering import MAX_GUIDANCE

    out = ["--out", str(tmp_path / "x.png")]
    blend = ["blend", "--run", str(run), "--n", "3", "--k", "1", "--strips", "1", *out]
    for weight in ("1e30", "1e300", "1001"):
        one_line(runner.invoke(app, [*blend, "--from", "horse", "--to", "bird", "--guidance",
                                     weight]), "guidance must be a number from 0 to 1000")
    for extra in ([], ["--k", "auto", "--report"]):
        one_line(runner.invoke(app, [*blend, "--from", "horse", "--to", "horse", *extra]),
                 "both 'horse'")
    one_line(runner.invoke(app, ["inpaint", "--run", str(run), "--image", "sample:1", "--toward",
                                 "horse", "--guidance", "1e30", *out]), "--guidance must be")
    help_text = " ".join(runner.invoke(app, ["blend", "--help"]).output.replace("│", " ").split())
    assert f"0 (none) to {MAX_GUIDANCE:g}" in help_text  # the bound the check holds
    # A chain that leaves the finite numbers, in any verb: SamplerPlan.run refuses its images.
    plan = plan_sampler("cas", Schedule(10.0, 0.01, 10, 1, 1e-5), 6)
    with pytest.raises(SamplingError, match="not finite"):
        plan.run(lambda x, sigma: x * float("inf"), torch.ones(2, 3, 4, 4))
    monkeypatch.setattr(ScoreModel, "forward", lambda self, x, sigma: x * float("nan"))
    for args in (["sample", "--run", str(run), "--num", "2", *out],
                 [*blend, "--sampler", "als"],
                 ["inpaint", "--run", str(run), "--image", str(_png(tmp_path)), *out]):
        one_line(runner.invoke(app, args), "not finite")
    assert not (tmp_path / "x.png").exists()
    monkeypatch.undo()
    # A folder's manifest is right but its pictures are not the run's size, or not RGB.
    folder = tmp_path / "fid"
    result = runner.invoke(app, ["sample", "--run", str(run), "--num", "3", "--sampler", "heun",
                                 "--steps", "5", "--folder", str(folder)])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "pegasus-samples.json").read_text())["res"] == 16
    Image.new("RGB", (1, 1)).save(folder / "000001.png")
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--samples", str(folder)]),
             "000001.png is a 1 x 1 RGB picture, not a 16 x 16 RGB sample")
    Image.new("L", (16, 16)).save(folder / "000001.png")
    one_line(runner.invoke(app, ["eval", "--run", str(run), "--samples", str(folder)]),
             "16 x 16 L picture")


def _png(tmp_path):
    path = tmp_path / "given.png"
    Image.new("RGB", (16, 16), (120, 80, 40)).save(path)
    return path
