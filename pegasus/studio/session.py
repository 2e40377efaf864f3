"""The studio's state: one run, the draws the page asks for, and the favourites it keeps.

A draw is a BlendRequest of one strip (or a HybridRequest of a few images), parsed from the
page's fields and checked before any work. Draws run one at a time on one worker thread (the
network is not shared between threads); each new draw supersedes the one running, which stops
at its next network evaluation (the progress callback raises Superseded). A favourite is saved
by the same call the command line makes (Blend.save, or the hybrid verb's writer), so the
command line written beside it remakes the same bytes.
"""

from __future__ import annotations

import io
import re
import shlex
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pegasus.atomic import atomic_write
from pegasus.errors import FieldError, UserError
from pegasus.fastpath import Execution
from pegasus.samplers import SAMPLERS
from pegasus.tasks.blend import BlendRequest
from pegasus.tasks.hybrid import HybridRequest

MODES = ("blend", "hybrid")
FAVOURITE = re.compile(r"favourite-(\d{3,})\.png")
# The studio draws eagerly: a compile per new budget would cost more than the draws it speeds.
EXECUTION = dict(compile="off", amp="auto")
HYBRIDS = 4  # images a hybrid draw makes: a row that redraws in well under a second at 2 steps


class Superseded(Exception):
    """A draw stopped because the page asked for another one (or the studio is closing)."""


@dataclass(frozen=True)
class Draw:
    """What the page asks for. `request` is the library's own request object; `mode` says which
    verb it belongs to."""

    mode: str
    request: BlendRequest | HybridRequest

    @classmethod
    def parse(cls, fields: dict[str, str], classes: list[str]) -> Draw:
        """The draw that the page's fields ask for, every field checked (FieldError names it)."""
        mode = fields.get("mode", "blend")
        if mode not in MODES:
            raise FieldError("mode", f"must be {' or '.join(MODES)}, got {mode!r}")
        sampler = fields.get("sampler") or None
        if sampler is not None and sampler not in SAMPLERS:
            raise FieldError("sampler", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        steps = _number(fields, "steps", int, None, 1, 2000)
        seed = _number(fields, "seed", int, 0, 0, 2**31 - 1)
        guidance = _number(fields, "guidance", float, 0.0, 0.0, 100.0)
        first, second = fields.get("source") or classes[0], fields.get("target") or classes[-1]
        for name, value in (("source", first), ("target", second)):
            if value not in classes:
                raise FieldError(name, f"must be one of the run's classes "
                                       f"({', '.join(classes)}), got {value!r}")
        if mode == "hybrid":
            request = HybridRequest(base=first, parts=second, num=HYBRIDS, seed=seed,
                                    sampler=sampler, steps=steps,
                                    guidance=guidance or HybridRequest.guidance)
        else:
            n = _number(fields, "n", int, BlendRequest.n, 1, 63)
            guided = guidance > 0
            request = BlendRequest(n=n, k=_number(fields, "k", int, 9, 0, n + 1), strips=1,
                                   seed=seed, source=first if guided else None,
                                   target=second if guided else None, guidance=guidance,
                                   sampler=sampler, steps=steps)
        return cls(mode, request)

    def command(self, run: Path, out: Path, device: str) -> str:
        """The pegasus command line that writes this draw to `out`, byte for byte."""
        r = self.request
        words = ["pegasus", self.mode, "--run", str(run)]
        if self.mode == "hybrid":
            words += ["--base", r.base, "--with", r.parts, "--num", str(r.num),
                      "--guidance", f"{r.guidance:g}"]
        else:
            words += ["--k", str(r.k), "--n", str(r.n), "--strips", "1"]
            if r.guidance > 0:
                words += ["--from", r.source, "--to", r.target, "--guidance", f"{r.guidance:g}"]
        words += ["--seed", str(r.seed)]
        if r.sampler is not None:
            words += ["--sampler", r.sampler]
        if r.steps is not None:
            words += ["--steps", str(r.steps)]
        words += ["--device", device, "--compile", EXECUTION["compile"], "--out", str(out)]
        return shlex.join(words)


def _number(fields: dict[str, str], name: str, kind, default, low, high):
    text = fields.get(name, "")
    if text in ("", None):
        return default
    try:
        value = kind(text)
    except ValueError:
        raise FieldError(name, f"must be {'a whole number' if kind is int else 'a number'}, "
                               f"got {text!r}") from None
    if not low <= value <= high:
        raise FieldError(name, f"must be between {low} and {high}, got {value}")
    return value


@dataclass
class Progress:
    """How far the draw running is, in network evaluations, for the page's bar."""

    draw: int = 0
    done: int = 0
    total: int = 0


@dataclass
class Drawn:
    """A finished draw: the pictures the page shows (PNG bytes) and what made them."""

    draw: Draw
    result: object  # tasks.blend.Blend or tasks.hybrid.Hybrids
    strip: bytes
    chosen: bytes
    seconds: float
    evaluations: int


@dataclass
class Studio:
    """One run served to the page. `model` is a pegasus.api.Model; favourites go to `out`."""

    model: object
    run: Path
    out: Path
    device: str
    progress: Progress = field(default_factory=Progress)
    _latest: int = 0
    _closing: bool = False
    _last: Drawn | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def classes(self) -> list[str]:
        return self.model.trained.classes

    def samplers(self) -> dict[str, dict]:
        """Each sampler with whether this run can blend with it, its default budget, and why
        not where it cannot (the library's own refusal)."""
        found = {}
        for name in SAMPLERS:
            try:
                plan = BlendRequest(sampler=name, strips=1).plan(self.model.trained)
                found[name] = {"ok": True, "steps": plan.evaluations}
            except UserError as e:
                found[name] = {"ok": False, "why": str(e)}
        return found

    def ask(self) -> int:
        """A number for a new draw; every draw before it is superseded from now on."""
        with self._lock:
            self._latest += 1
            return self._latest

    def close(self) -> None:
        """Stop the draw running (at its next evaluation) and refuse new ones."""
        self._closing = True

    def _bar(self, number: int, cancellable: bool):
        def announce(description: str, total: int):
            self.progress.total += total

            def step(info) -> None:
                self.progress.done += 1
                if self._closing or (cancellable and number != self._latest):
                    raise Superseded()
            return step
        return announce

    def draw(self, number: int, draw: Draw, cancellable: bool = True) -> Drawn:
        """Run `draw` (on the worker thread). Superseded when a newer draw was asked for."""
        if self._closing or (cancellable and number != self._latest):
            raise Superseded()
        last = self._last
        if last is not None and last.draw == draw:
            return last
        self.progress = Progress(draw=number)
        execution = Execution(**EXECUTION, progress=self._bar(number, cancellable))
        start = time.perf_counter()
        if draw.mode == "hybrid":
            result = self.model.hybrid(execution=execution, **asdict(draw.request))
            chosen, evaluations = result.images[0], result.evaluations
        else:
            result = self.model.blend(execution=execution, **asdict(draw.request))
            chosen, evaluations = result.strips[0, result.columns[0]], self.progress.total
        drawn = Drawn(draw, result, _labelled(draw, result), png(chosen),
                      time.perf_counter() - start, evaluations)
        self._last = drawn
        return drawn

    def favourite(self, draw: Draw) -> dict:
        """Save `draw` (drawn again unless it is the last one drawn) as the next favourite-NNN.png
        in the output folder, with the command line that remakes it beside it."""
        drawn = self.draw(self.ask(), draw, cancellable=False)
        path = self.out / f"favourite-{self._next_number():03d}.png"
        command = draw.command(self.run, path, self.device)
        drawn.result.save(path)
        atomic_write(path.with_suffix(".txt"), lambda f: f.write((command + "\n").encode()))
        return {"name": path.name, "command": command}

    def favourites(self) -> list[dict]:
        """The favourites already in the output folder, oldest first."""
        found = []
        for path in sorted(self.out.glob("favourite-*.png")):
            if FAVOURITE.fullmatch(path.name):
                note = path.with_suffix(".txt")
                command = note.read_text().strip() if note.is_file() else ""
                found.append({"name": path.name, "command": command})
        return found

    def favourite_file(self, name: str) -> Path | None:
        """The favourite called `name`, if the studio wrote one so named (no other path)."""
        path = self.out / name
        return path if FAVOURITE.fullmatch(name) and path.is_file() else None

    def _next_number(self) -> int:
        numbers = [int(FAVOURITE.fullmatch(p.name).group(1)) for p in self.out.glob("favourite-*.png")
                   if FAVOURITE.fullmatch(p.name)]
        return max(numbers, default=0) + 1


def png(image: torch.Tensor) -> bytes:
    """An image (C, H, W) in [0, 1] as PNG bytes."""
    from PIL import Image

    from pegasus.images import to_uint8

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image[None].float())[0].numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def _labelled(draw: Draw, result) -> bytes:
    """The page's strip: the blend's labelled strip (blend_files.py), or a hybrid row."""
    if draw.mode == "hybrid":
        from pegasus.images import tile

        images = result.images.float().clamp(0, 1).cpu()
        return png(tile(images, nrow=len(images), padding=2))
    from pegasus.tasks.blend_files import labelled_strips

    buffer = io.BytesIO()
    labelled_strips(result.strips, result.columns).save(buffer, format="PNG")
    return buffer.getvalue()
