"""A folder of samples for FID work: image i as <folder>/<i, 6 digits>.png, written batch by
batch, and a manifest, pegasus-samples.json, of what decides the images (the weights, the
sampler's grid, the seed, the precision).

Image i comes from its own seeded stream (noise.ImageStreams), so a job that was stopped, by a
kill or a lost GPU lease, continues from its first missing image, and a finished one grows to
more images, with exactly the images one uninterrupted job would have written. The manifest is
what makes that safe: a folder is continued only by a job that would draw the same images, and
anything else is refused before any sampling. Nothing already in the folder is overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pegasus.atomic import TEMP_SUFFIX, atomic_write, check_writable, remove_stale_temporaries
from pegasus.errors import UserError, WriteError, first_line
from pegasus.images import save_image_atomic, to_uint8
from pegasus.run.lock import RunLock

MANIFEST = "pegasus-samples.json"
LOCK = ".pegasus-samples.lock"  # held by the job drawing into the folder (lock.py)


@dataclass(frozen=True)
class SampleSet:
    """What decides a folder's images: two jobs of equal SampleSets draw the same image i."""

    seed: int
    sampler: str
    evaluations: int  # network evaluations per image
    bf16: bool  # the network under bf16 autocast, which moves pixels (bench/README.md)
    res: int
    weights: str  # digest of the EMA weights
    grid: str  # digest of the sampler's sigma grid and options
    # CPU threads (0 on a GPU): a convolution splits its sums by thread, so on a CPU another
    # count can move a pixel by one level. None: a manifest written before it was recorded.
    threads: int | None = None

    @classmethod
    def of(cls, job, *, seed: int) -> SampleSet:
        """The set that a sampling job (job.SamplingJob) draws with `seed`: its run's weights,
        its plan and the data's centre where the plan starts, and whether its fast path runs
        bf16 (the layout and the compiler change float rounding alone, so they may differ
        between jobs)."""
        trained, plan = job.trained, job.plan
        grid = hashlib.sha256(plan.sigmas.detach().cpu().float().numpy().tobytes())
        grid.update(repr((plan.name, plan.start, sorted(plan.options.items()))).encode())
        if plan.start == "normal":  # where such a chain starts: the data's centre
            grid.update(trained.centre.detach().cpu().float().numpy().tobytes())
        threads = torch.get_num_threads() if trained.device.type == "cpu" else 0
        return cls(seed=seed, sampler=plan.name, evaluations=plan.evaluations, bf16=job.path.amp,
                   res=trained.config.data.res, weights=trained.weights_digest(),
                   grid=grid.hexdigest()[:16], threads=threads)

    def differences(self, other: SampleSet) -> list[str]:
        """Each field in which `other` differs, in words: "seed: 0 there, 1 now"."""
        def word(name: str, value: Any) -> str:
            return ("bf16" if value else "float32") if name == "bf16" else str(value)

        out = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "threads" and None in (mine, theirs):
                continue  # not recorded there: as before it was
            if mine != theirs:
                label = {"bf16": "precision", "grid": "sampler grid",
                         "threads": "CPU threads"}.get(f.name, f.name)
                out.append(f"{label}: {word(f.name, mine)} there, {word(f.name, theirs)} now")
        return out


class SampleFolder:
    """A folder of samples, new or begun by an earlier job with the same SampleSet."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest = self.path / MANIFEST

    def image(self, index: int) -> Path:
        return self.path / f"{index:06d}.png"

    def check(self) -> None:
        """Before any slow work: the folder is new, empty, or holds a manifest (a job to
        continue), and accepts new files."""
        if self.path.exists() and not self.path.is_dir():
            raise WriteError(f"{self.path} is a file; give a folder for the samples")
        if self.path.is_dir() and not self.manifest.is_file() and any(
                p.name != LOCK and not p.name.endswith(TEMP_SUFFIX) for p in self.path.iterdir()):
            # (a job that began the folder a moment ago holds its lock, and writes its manifest)
            raise WriteError(f"{self.path} is not empty and holds no {MANIFEST}, so it is no "
                             f"earlier job's samples to continue; give a new folder")
        check_writable(self.image(0))

    def lock(self) -> RunLock:
        """The folder's lock, for the one job drawing into it at a time."""
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.path / LOCK, f"sample folder {self.path}",
                       "one job draws into a folder at a time")

    def begin(self, wanted: SampleSet, source: Path | None = None, step: int | None = None) -> None:
        """Make the folder ready for `wanted`'s images: a new one gets its manifest first (so
        even a job stopped before its first image can be continued), and one begun earlier is
        checked to hold images drawn as `wanted` draws them, its half-written files removed.
        `source` (the weights' file) and its `step` are kept in the manifest for the reader."""
        self.check()
        if self.manifest.is_file():
            differences = self._read().differences(wanted)
            if differences:
                raise WriteError(f"{self.path} holds samples drawn otherwise ("
                                 + "; ".join(differences)
                                 + "); continue it with the same settings and weights, or give "
                                   "a new folder")
            remove_stale_temporaries(self.path)  # half-written images of a stopped job
            return
        body = {"pegasus": "samples", **dataclasses.asdict(wanted),
                "source": None if source is None else str(Path(source).resolve()), "step": step}
        atomic_write(self.manifest, lambda f: f.write(json.dumps(body, indent=1).encode()))

    def count(self) -> int:
        """How many images, from 0 on without a gap, the folder holds."""
        names = self._names()
        done = 0
        while self.image(done).name in names:
            done += 1
        return done

    def missing(self, num: int) -> list[tuple[int, int]]:
        """The images of 0 .. num - 1 not in the folder, as runs [start, stop) in order: what a
        continued job draws. Each image is written atomically, so one there is whole; a job
        stopped on several ranks, or mid-batch (a batch is written by several threads), leaves
        gaps, each refilled, and the images after them are kept."""
        names, runs, start = self._names(), [], None
        for i in range(num):
            if self.image(i).name not in names:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i))
                start = None
        return runs if start is None else [*runs, (start, num)]

    def present(self, num: int) -> int:
        """How many of the images 0 .. num - 1 the folder holds."""
        return num - sum(b - a for a, b in self.missing(num))

    def _names(self) -> set[str]:
        return {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()

    def write(self, batches: Iterable[tuple[int, torch.Tensor]],
              progress: Callable[[int], None] | None = None, workers: int = 4) -> int:
        """Each image of each (first index, batch) pair (images in [0, 1], N C H W) as a PNG,
        numbered from that index; an image already there is kept. `progress` hears the count of
        images this call has written. Returns it.

        A batch is written by `workers` threads while the next one is drawn (PIL's encoder and
        fsync release the GIL), so on a GPU the sampler does not wait for the disk: writing a
        batch takes about half as long as an H100 takes to draw it (bench/README.md, "Figures
        behind the code's choices"). At most two batches are held at once."""
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image

        def save(index: int, pixels) -> None:
            if not self.image(index).exists():  # after a gap (a stopped job): kept, not redrawn
                save_image_atomic(Image.fromarray(pixels), self.image(index))

        done = 0
        with ThreadPoolExecutor(workers) as pool:
            writing: list = []
            for first, batch in batches:  # drawing this batch overlapped writing the last one
                pixels = to_uint8(batch).numpy()
                done = self._finish(writing, done, progress)
                writing = [pool.submit(save, first + i, image) for i, image in enumerate(pixels)]
            return self._finish(writing, done, progress)

    @staticmethod
    def _finish(writing: list, done: int, progress) -> int:
        for future in writing:
            future.result()  # a write's error (a full disk) stops the job here
        done += len(writing)
        if writing and progress is not None:
            progress(done)
        return done

    def check_pictures(self, num: int, res: int, start: int = 0) -> None:
        """Images `start` .. `num` - 1 are each a `res` x `res` RGB picture, as pegasus writes
        them (a file of another size would be scored as if it were a sample): their headers
        alone are read, before any scoring."""
        from PIL import Image

        for index in range(start, num):
            path = self.image(index)
            try:
                with Image.open(path) as image:
                    size, mode = image.size, image.mode
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {path}: {first_line(e)}; draw it "
                                f"again (delete it and continue the job)") from None
            if size != (res, res) or mode != "RGB":
                raise UserError(f"{path} is a {size[0]} x {size[1]} {mode} picture, not a "
                                f"{res} x {res} RGB sample of the run; the folder holds other "
                                f"images: score a folder that pegasus sample --folder drew")

    def read(self, num: int, batch: int = 256, progress: Callable[[int], None] | None = None,
             start: int = 0) -> Iterator[torch.Tensor]:
        """Images `start` .. `num` - 1 in [0, 1], (N, C, H, W) float32, `batch` at a time
        (check_pictures says first that they fit); `progress` hears the index reached so far."""
        import numpy as np
        from PIL import Image

        def load(index: int) -> np.ndarray:
            try:
                with Image.open(self.image(index)) as image:
                    return np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {self.image(index)}: {first_line(e)}; draw it "
                                f"again (delete it and continue the job)") from None

        for first in range(start, num, batch):
            stop = min(num, first + batch)
            pixels = np.stack([load(i) for i in range(first, stop)])
            yield torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)
            if progress is not None:
                progress(stop)

    def recorded(self) -> SampleSet:
        """What drew the folder's images, from its manifest."""
        if not self.manifest.is_file():
            raise UserError(f"{self.path} holds no {MANIFEST}: it is no folder of samples that "
                            f"pegasus wrote")
        return self._read()

    def source(self) -> Path | None:
        """The weights' file the folder's images were drawn from, as its manifest names it
        (None when it names none)."""
        try:
            named = json.loads(self.manifest.read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError, AttributeError):
            return None
        # Manifests before the step had its own field wrote "<path> (step N)".
        return Path(re.sub(r" \(step \d+\)$", "", named)) if isinstance(named, str) and named else None

    def _read(self) -> SampleSet:
        try:
            body = json.loads(self.manifest.read_text(encoding="utf-8"))
            # A field with a default came later: manifests written before it lack it.
            values = {f.name: body[f.name] if f.default is dataclasses.MISSING
                      else body.get(f.name, f.default) for f in dataclasses.fields(SampleSet)}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{self.manifest} is damaged ({type(e).__name__}), so what drew the "
                            f"samples there is unknown; give a new folder") from None
        for f in dataclasses.fields(SampleSet):  # "seed": "0" is no seed (JSON keeps types)
            value = values[f.name]
            if type(value).__name__ not in f.type.split(" | ") and not (
                    value is None and "None" in f.type):
                raise UserError(f"{self.manifest} is damaged: its {f.name} is {value!r}, not a "
                                f"value of type {f.type}; give a new folder")
        return SampleSet(**values)
