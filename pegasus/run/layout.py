"""The run folder's layout: what a run folder holds and where. Every other module asks this one.

A run folder holds data only, never code (torch.compile's artifacts are pickled code, so they
live in the user's own cache: fastpath/cache.py):
    config.toml     the resolved config the run trains with (written by tomli-w; its digest in
                    .config.sha256 tells pegasus's own writes from edits by hand)
    checkpoints/    checkpoint-<step>.pt and `latest` (checkpoint.py names them)
    samples/        step-<step>.png grids from the EMA weights
    logs/           TensorBoard event files
    guide.pt        the noise-conditional classifier for guided blends (classifiers.py)
    judge.pt        the independent clean-image classifier for reports
    exports/        shared weights (safetensors, weights.py)
    fast-path.json  the fast path's timings on each GPU (fastpath/probe.py)
    .lock           held by the one process training the run (lock.py)
    .torchrun-job   the torchrun job (its rendezvous id) training the run, so that the job,
                    restarted by torchrun after a worker failed, resumes its own checkpoints
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from pegasus.atomic import TEMP_SUFFIX, atomic_write
from pegasus.config import Config, read_toml
from pegasus.errors import RunError
from pegasus.run.checkpoint import latest_checkpoint

CONFIG_FILE = "config.toml"
CONFIG_DIGEST = ".config.sha256"  # what pegasus last wrote to config.toml
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
LOGS = "logs"
GUIDE_FILE = "guide.pt"
JUDGE_FILE = "judge.pt"
EXPORTS = "exports"
PROBES_FILE = "fast-path.json"  # which uncompiled fast path was fastest, per GPU (fastpath/probe.py)
LOCK_FILE = ".lock"
JOB_FILE = ".torchrun-job"
SIGMAS_FILE = "consistency-sigmas.toml"  # the sigmas searched for a tuned run (run/sigmas.py)
CLASSIFIER_FILES = {"guide": GUIDE_FILE, "judge": JUDGE_FILE}
NAMES = {CONFIG_FILE, CONFIG_DIGEST, CHECKPOINTS, SAMPLES, LOGS, GUIDE_FILE, JUDGE_FILE, EXPORTS,
         PROBES_FILE, LOCK_FILE, JOB_FILE, SIGMAS_FILE}


@dataclass(frozen=True)
class RunDir:
    """Where each part of a run lives."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def exports(self) -> Path:
        return self.path / EXPORTS

    @property
    def probes(self) -> Path:
        return self.path / PROBES_FILE

    @property
    def searched_sigmas(self) -> Path:
        return self.path / SIGMAS_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def job(self) -> Path:
        return self.path / JOB_FILE

    def classifier(self, kind: str) -> Path:
        return self.path / CLASSIFIER_FILES[kind]

    def sample_grid(self, step: int) -> Path:
        return self.samples / f"step-{step:08d}.png"

    def export_file(self, step: int) -> Path:
        return self.exports / f"weights-{step:08d}.safetensors"

    def check_usable(self) -> None:
        """A run path must be a folder (or not exist yet) that can be created and written."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"run path {self.path} is a file, not a folder; choose another run folder")

    def check_new(self) -> None:
        """A new run goes in a folder that is new, empty or a run's own (its config written, a
        guide beside it): never into one holding other files, such as the current folder of
        `--run ''`, nor one whose `logs/` or `samples/` came without a run's config."""
        if not self.path.is_dir():
            return
        ours = NAMES if self.config.is_file() else {LOCK_FILE, JOB_FILE}
        foreign = sorted(p.name for p in self.path.iterdir()
                         if p.name not in ours and not p.name.endswith(TEMP_SUFFIX))
        if foreign:
            raise RunError(f"{self.path.resolve()} holds files that are not a run's "
                           f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                           f"train a new run in a new or empty folder")

    def check_own(self) -> None:
        """Before a run is written (trained, resumed, given a guide or an export): its files are
        its own, real files inside it. A part that is a link (a checkpoints/ linked into another
        run, a checkpoint linked to another run's file) would write, rotate or lock what belongs
        to someone else: refused."""
        if not self.path.is_dir():
            return
        parts = [self.path / name for name in sorted(NAMES)]
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            parts += sorted(self.checkpoints.iterdir())
        for part in parts:
            if part.is_symlink():
                raise RunError(f"{part} is a link to {part.resolve()}: a run's files must be its "
                               f"own; copy the file in, or remove the link")

    def holds(self, path: Path) -> bool:
        """Whether `path` is this run's own file: inside its folder once links are followed."""
        return Path(path).resolve().is_relative_to(self.path.resolve())

    def create(self) -> None:
        self.check_usable()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            reason = ("the name is longer than the file system allows"
                      if e.errno == errno.ENAMETOOLONG else e.strerror)
            raise RunError(f"cannot create run folder {self.path}: {reason}") from None

    def latest_checkpoint(self, warn=None) -> Path | None:
        return latest_checkpoint(self.checkpoints, warn)

    def require(self) -> None:
        if not self.path.is_dir():
            raise RunError(f"run folder {self.path} does not exist; train a run there first")

    def require_checkpoint(self, warn=None) -> Path:
        self.require()
        found = self.latest_checkpoint(warn)
        if found is None:
            raise RunError(f"run {self.path} has no checkpoint yet; train it first")
        return found

    def read_config(self) -> Config:
        if not self.config.is_file():
            raise RunError(f"{self.config} does not exist: {self.path} is not a pegasus run")
        return Config.from_dict(read_toml(self.config))

    @property
    def config_digest(self) -> Path:
        """The digest of the config.toml pegasus last wrote: an override given on resume is kept
        there, so a later resume tells it from an edit by hand (resume.py)."""
        return self.path / CONFIG_DIGEST

    def write_config(self, config: Config) -> None:
        data = tomli_w.dumps(_toml_ready(config.to_dict())).encode()
        atomic_write(self.config, lambda f: f.write(data))
        atomic_write(self.config_digest, lambda f: f.write(hashlib.sha256(data).hexdigest().encode()))

    def config_written_by_pegasus(self) -> bool:
        """Whether config.toml is, byte for byte, what pegasus last wrote there."""
        try:
            written = self.config_digest.read_text().strip()
            return hashlib.sha256(self.config.read_bytes()).hexdigest() == written
        except OSError:
            return False


def _toml_ready(data: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: fields left as None are omitted, as the loader's defaults fill them."""
    return {k: _toml_ready(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}
