"""Many samples streamed to a folder of PNGs (continued after a stop, grown to more images) or
to an .npz, for FID work, on CPU."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.run.folder import LOCK, MANIFEST
from pegasus.run.job import SamplingJob
from test_errors import one_line

runner = CliRunner()
HEUN = ["--sampler", "heun", "--steps", "5"]


def _sample(run, *args):
    result = runner.invoke(app, ["sample", "--run", str(run), *HEUN, *args])
    assert result.exit_code == 0, result.output
    return result.output


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_many_samples_stream_to_a_folder_or_an_npz(run, tmp_path):
    folder = tmp_path / "fid"
    _sample(run, "--num", "5", "--batch-size", "2", "--folder", str(folder))
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["sampler"] == "heun" and manifest["seed"] == 0 and manifest["bf16"] is False
    npz = tmp_path / "s.npz"
    _sample(run, "--num", "5", "--out", str(npz))
    arr = np.load(npz)["arr_0"]
    assert arr.shape == (5, 16, 16, 3) and arr.dtype == np.uint8
    # The same images either way, batch size notwithstanding (up to one grey level).
    assert np.abs(arr[3].astype(int) - np.asarray(Image.open(files[3])).astype(int)).max() <= 1


def test_a_stopped_folder_continues_with_the_images_one_job_would_have_written(run, tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    _sample(run, "--num", "6", "--batch-size", "4", "--folder", str(whole))
    # A job stopped after 2 images, mid-write of the third: its temporary file is left behind.
    _sample(run, "--num", "2", "--folder", str(stopped))
    stale = stopped / ".000002.png.x1y2.tmp"
    stale.write_bytes(b"half an image")
    out = _sample(run, "--num", "6", "--batch-size", "3", "--folder", str(stopped))
    assert "images 2 to 5" in out
    assert not stale.exists()
    assert _pngs(stopped).keys() == _pngs(whole).keys()
    for name in _pngs(whole):  # batched 3 + 3, or 2 then 2 + 2: same images
        a, b = (np.asarray(Image.open(f / name)).astype(int) for f in (stopped, whole))
        assert np.abs(a - b).max() <= 1, name
    # A gap (a batch's threads stopped out of order): refilled, the images after it kept as is.
    gap, kept = stopped / "000001.png", {n: (stopped / n).stat().st_mtime_ns for n in
                                         ("000002.png", "000005.png")}
    gap.unlink()
    assert "images 1 to 5" in _sample(run, "--num", "6", "--folder", str(stopped))
    assert gap.exists() and _pngs(stopped).keys() == _pngs(whole).keys()
    assert {n: (stopped / n).stat().st_mtime_ns for n in kept} == kept
    # Asked again: nothing to draw, nothing touched.
    files = lambda: {p.name: p.stat().st_mtime_ns for p in stopped.iterdir()  # noqa: E731
                     if p.name != LOCK}  # the lock names each job that held it
    before = files()
    assert "nothing to draw" in _sample(run, "--num", "4", "--folder", str(stopped))
    assert files() == before


def test_a_folder_is_continued_only_by_a_job_that_draws_the_same_images(run, tmp_path):
    folder = tmp_path / "fid"
    _sample(run, "--num", "2", "--folder", str(folder))
    before = _pngs(folder)
    for args, needle in ((["--seed", "1"], "seed: 0 there, 1 now"),
                         (["--amp", "on"], "precision: float32 there, bf16 now"),
                         (["--steps", "7"], "evaluations: 5 there, 7 now")):
        result = runner.invoke(app, ["sample", "--run", str(run), "--sampler", "heun", "--steps",
                                     "5", "--num", "4", "--folder", str(folder), *args])
        one_line(result, needle)
    one_line(runner.invoke(app, ["sample", "--run", str(run), "--num", "4", "--sampler", "cas",
                                 "--steps", "5", "--folder", str(folder)]),
             "sampler: heun there, cas now")
    assert _pngs(folder) == before
    # Someone else's folder, and a damaged manifest, are refused before any sampling.
    body = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**body, "seed": "0"}))
    one_line(runner.invoke(app, ["sample", "--run", str(run), *HEUN, "--folder", str(folder)]),
             "its seed is '0', not a value of type int")
    (folder / MANIFEST).write_text("{not json")
    one_line(runner.invoke(app, ["sample", "--run", str(run), *HEUN, "--folder", str(folder)]),
             "is damaged")
    (folder / MANIFEST).unlink()
    one_line(runner.invoke(app, ["sample", "--run", str(run), *HEUN, "--folder", str(folder)]),
             f"holds no {MANIFEST}")
    assert _pngs(folder) == before


def test_the_sample_set_tells_apart_weights_that_differ_in_one_bit(run):
    import torch

    from pegasus.run.folder import SampleSet
    from pegasus.run.load import load_trained_run

    trained = load_trained_run(run)
    job = SamplingJob.make(trained, trained.plan("heun", 5), num=2)
    before = SampleSet.of(job, seed=0)
    assert SampleSet.of(job, seed=0) == before
    with torch.no_grad():
        weight = next(trained.model.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))
    after = SampleSet.of(job, seed=0)
    assert [d.split(":")[0] for d in before.differences(after)] == ["weights"]
    assert SampleSet.of(SamplingJob.make(trained, trained.plan("heun", 7), num=2), seed=0).grid != before.grid


def test_an_npz_is_written_batch_by_batch_and_appears_whole(tmp_path):
    import torch

    from pegasus.images import save_npz

    images = torch.rand(7, 3, 48, 48, generator=torch.Generator().manual_seed(0))  # batch > buffer
    out, seen = tmp_path / "s.npz", []

    def batches():
        for first in range(0, 7, 3):
            yield images[first:first + 3]
            # The batch went to a temporary file beside the target; the target is not there yet.
            seen.append((out.exists(), sum(p.stat().st_size for p in tmp_path.iterdir())))

    save_npz(batches(), out, 7)
    arr = np.load(out)["arr_0"]
    expected = images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert arr.dtype == np.uint8 and np.array_equal(arr, expected)
    assert [exists for exists, _ in seen] == [False] * 3
    sizes = [size for _, size in seen]
    assert sizes[0] < sizes[1] < sizes[2]  # on disk as it came, not held to the end


def test_a_folder_continued_with_another_cpu_thread_count_is_refused(run, tmp_path):
    """The audit continued a folder begun on 2 threads with 1: one pixel of one image differed
    by one level (a convolution splits its sums by thread). The count is recorded, and a
    manifest written before it was (no threads there) is continued as before."""
    import torch

    threads = torch.get_num_threads()
    folder = tmp_path / "f"
    try:
        torch.set_num_threads(2)
        _sample(run, "--num", "2", "--folder", str(folder))
        torch.set_num_threads(1)
        one_line(runner.invoke(app, ["sample", "--run", str(run), *HEUN, "--num", "4",
                                     "--folder", str(folder)]), "CPU threads: 2 there, 1 now")
        body = json.loads((folder / MANIFEST).read_text())
        assert body["threads"] == 2
        del body["threads"]
        (folder / MANIFEST).write_text(json.dumps(body))
        assert "images 2 to 3" in _sample(run, "--num", "4", "--folder", str(folder))
    finally:
        torch.set_num_threads(threads)


def test_two_jobs_on_one_new_folder_one_draws_and_the_other_is_told_why(run, tmp_path):
    """The audit started two jobs together on a new folder: the second was refused now and
    then as if the folder held foreign files (the first's half-written manifest). The first
    holds the folder's lock; the second is told that a job is drawing there."""
    from pegasus.run.folder import SampleFolder

    folder = SampleFolder(tmp_path / "f")
    with folder.lock():
        (folder.path / f".{MANIFEST}.ab12.tmp").write_bytes(b"{")  # the first job's, mid-write
        one_line(runner.invoke(app, ["sample", "--run", str(run), *HEUN, "--num", "2",
                                     "--folder", str(folder.path)]),
                 f"sample folder {folder.path} is in use by process")
    assert not list(folder.path.glob("*.png"))
