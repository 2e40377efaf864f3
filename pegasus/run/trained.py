"""The run folder: its layout, creating one, finding and loading one.

A run folder holds:
    config.toml     the resolved config the run trains with (written by tomli-w)
    checkpoints/    checkpoint-<step>.pt and `latest` (checkpoint.py names them)
    samples/        step-<step>.png grids from the EMA weights
    logs/           TensorBoard event files
    guide.pt        the noise-conditional classifier for guided blends (classifier.py)
    judge.pt        the independent clean-image classifier for reports
    exports/        shared weights (safetensors, weights.py)
    compile-cache/  torch.compile artifacts of sampling and training, per network, fast path,
                    input shape, device and torch version (compiling.py), so that a second start
                    loads them instead of compiling again
    .lock           held by the one process training the run (locking.py)
Every other module asks this one where these things are.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch

from pegasus.atomic import atomic_write, check_writable
from pegasus.config import Config, build_config, read_toml, resolve_model_options
from pegasus.devices import resolve_device
from pegasus.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    RegistryError,
    RunError,
    WriteError,
    first_line,
)
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.registry import Plugin, get_backbone, registry
from pegasus.run.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

CONFIG_FILE = "config.toml"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
LOGS = "logs"
GUIDE_FILE = "guide.pt"
JUDGE_FILE = "judge.pt"
EXPORTS = "exports"
COMPILE_CACHE = "compile-cache"
PROBES_FILE = "fast-path.json"  # which uncompiled fast path was fastest, per GPU (probing.py)
LOCK_FILE = ".lock"
CLASSIFIER_FILES = {"guide": GUIDE_FILE, "judge": JUDGE_FILE}
# Keys a score-model checkpoint must hold to be sampled from.
SCORE_KEYS = ("config", "sigmas", "ema", "step")


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
    def compile_cache(self) -> Path:
        return self.path / COMPILE_CACHE

    @property
    def probes(self) -> Path:
        return self.path / PROBES_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

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

    def write_config(self, config: Config) -> None:
        atomic_write(self.config, lambda f: tomli_w.dump(_toml_ready(config.to_dict()), f))


def _toml_ready(data: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: fields left as None are omitted, as the loader's defaults fill them."""
    return {k: _toml_ready(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def build_score_model(config: Config, channels: int = 3) -> tuple[ScoreModel, Plugin]:
    """The score model a config describes (backbone / sigma), untrained."""
    spec, plugin = get_backbone(config.model.backbone)
    backbone = spec.build(config.model.options, res=config.data.res, channels=channels)
    return ScoreModel(backbone), plugin


@dataclass
class TrainedRun:
    """A trained score model ready to sample: its config, its EMA weights and its schedule."""

    config: Config
    model: ScoreModel  # the EMA weights, in eval mode, on `device`
    schedule: Schedule
    step: int
    source: Path  # the checkpoint or weights file it came from
    device: torch.device
    run_dir: Path | None = None  # the run folder, when it came from one
    notify: Callable[[str], None] | None = None  # hears whether a fast path compiles or loads
    # The training images' per-channel mean (C, 1, 1) on `device`, where the samplers that start
    # at the noisiest level begin (SamplerPlan.start_point); 0.5 where no mean was recorded.
    centre: torch.Tensor | None = None
    centre_recorded: bool = False
    _scores: dict = field(default_factory=dict, repr=False, compare=False)  # score_fn's, per path

    def __post_init__(self) -> None:
        if self.centre is None:
            self.centre = torch.full((3, 1, 1), 0.5, device=self.device)

    @property
    def sigmas(self) -> torch.Tensor:
        return self.schedule.sigmas(self.device)

    @property
    def classes(self) -> list[str]:
        return self.config.data.classes

    def plan(self, sampler: str = "als", steps: int | None = None, **options):
        """A sampler fitted to this run's schedule within `steps` evaluations (pegasus.samplers)."""
        from pegasus.samplers.plan import plan_sampler

        plan = plan_sampler(sampler, self.schedule, steps, **options)
        if plan.start == "normal" and not self.centre_recorded and self.notify is not None:
            self.notify(f"{sampler} starts at 0.5 + sigma_1 z: {self.source} records no mean of "
                        f"its training images (it was written before pegasus kept one)")
        return plan

    def fast_path(self, evaluations: int, compile_: str = "auto", amp: str = "auto",
                  batch: int | None = None):
        """The fast path (compiling.FastPath) for `evaluations` network evaluations in this
        process; `compile_` and `amp` are auto, on or off (compiling.py states the auto rule).
        Uncompiled on a GPU, the layout (channels_last or not) is timed there (probing.py) at
        `batch` images (default: the run's training batch; at most probing.SAMPLING_BATCH), once
        per run folder."""
        from pegasus.fastpath import probe as probing
        from pegasus.fastpath.compile import FastPath

        spec, _ = get_backbone(self.config.model.backbone)
        path = FastPath.choose(self.device, spec.channels_last, evaluations, compile_, amp)
        if not probing.probes(self.device, path, self.config.train.probe):
            return path
        batch = min(batch or self.config.train.batch_size, probing.SAMPLING_BATCH)
        res = self.config.data.res
        # Only the layout is timed: it changes float rounding alone, while bf16 against float32
        # changes the images, and a seed's images must not hang on a timing (probing.py).
        return probing.probe(
            probing.candidates(path, self.device, amp=path.amp, channels_last="auto"),
            probing.scoring(self.model, batch, (3, res, res), self.device), self.model,
            self.device, record=RunDir(self.run_dir).probes if self.run_dir is not None else None,
            key=f"sample|{self.config.model.backbone}|{self.config.model.options}|{res}|{batch}",
            notify=self.notify)

    def score_fn(self, path=None):
        """The score function to sample with: the model itself (eager float32) without a fast
        path, else the network under `path`, made once per path (a compiled network is reused
        by every chain of the process). Compiled artifacts are cached in the run folder."""
        if path is None:
            return self.model
        if path not in self._scores:
            from pegasus.fastpath.compile import fast_score

            key = f"{self.config.model.backbone}|{self.config.model.options}|{self.config.data.res}"
            cache = RunDir(self.run_dir).compile_cache if self.run_dir is not None else None
            self._scores[path] = fast_score(self.model, self.device, path, cache=cache, key=key,
                                            notify=self.notify)
        return self._scores[path]

    def sample(self, num: int, seed: int, *, batch_size: int | None = None, callback=None,
               plan=None, score=None) -> torch.Tensor:
        """`num` images from the EMA weights (image i the same for any num and batch size), by
        `plan` (default: annealed Langevin on the run's schedule)."""
        return torch.cat(list(self.sample_batches(num, seed, batch_size=batch_size,
                                                  callback=callback, plan=plan, score=score)))

    def sample_batches(self, num: int, seed: int, *, batch_size: int | None = None, callback=None,
                       plan=None, score=None, start: int = 0):
        """The same images as `sample`, yielded batch by batch (bounded memory), from image
        `start` on; `score` is a fast path's score function (`score_fn`), the model itself by
        default."""
        from pegasus.run.job import sample_batches

        return sample_batches(score or self.model, self.schedule, num=num, res=self.config.data.res,
                              seed=seed, device=self.device,
                              batch_size=self.batch_size(num - start, batch_size),
                              callback=callback, plan=plan, start=start, centre=self.centre)

    def batch_size(self, num: int, batch_size: int | None = None) -> int:
        """The images per batch that sampling `num` images uses: `batch_size` when given, all of
        them on CPU, and on a GPU as many as fit, measured on the eager model (measuring a
        compiled score would compile it for the probe's batch as well)."""
        if batch_size is not None:
            return batch_size
        from pegasus.run.job import default_batch_size

        shape = (3, self.config.data.res, self.config.data.res)  # as sample_batches draws
        return default_batch_size(self.model, num, shape, self.device)

    def sampling_evaluations(self, plan, num: int, batch_size: int | None = None) -> int:
        """Network evaluations that sampling `num` images by `plan` makes in this process (what
        the fast path's "auto" rule weighs): the plan's per batch, times the batches."""
        from pegasus.run.job import equal_batches

        return plan.evaluations * equal_batches(num, self.batch_size(num, batch_size))[0]


def _missing_backbone_message(backbone: dict[str, Any]) -> str:
    name, dist = backbone.get("name", "?"), backbone.get("distribution", "?")
    return (
        f"this model needs backbone {name!r} from package {dist} {backbone.get('version', '')}".rstrip()
        + f"; install it (pip install {dist}) and try again"
    )


def model_from_state(config: Config, weights: dict[str, torch.Tensor], backbone: dict[str, Any],
                     source: Path) -> ScoreModel:
    """Build the config's model and load `weights` into it, each failure one clear line."""
    reg = registry()
    if config.model.backbone not in reg.backbones and config.model.backbone not in reg.conflicts:
        raise RunError(_missing_backbone_message(backbone))
    try:
        model, _ = build_score_model(config)
    except RegistryError as e:
        raise RunError(str(e)) from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        # torch's message: a heading line, then one "\t"-indented line per mismatched tensor.
        detail = str(e).split("\n\t")[1].strip() if "\n\t" in str(e) else first_line(e)
        raise CheckpointError(
            f"{source} holds weights that do not fit backbone {config.model.backbone!r} "
            f"{config.model.options} at {config.data.res} px ({detail})") from None
    return model


def schedule_of(config: Config, sigmas: torch.Tensor, source: Path) -> Schedule:
    """The config's schedule, checked against the sigmas stored beside the weights."""
    try:
        schedule = Schedule.from_noise(config.noise)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if not torch.equal(sigmas.float().cpu(), schedule.sigmas()):
        raise CheckpointError(f"{source}: its stored sigmas disagree with its config's noise "
                              f"schedule; the file was edited or damaged")
    return schedule


def score_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint that holds a score model, or a clear error saying what the file is."""
    state = load_checkpoint(path, mmap=mmap)
    if "spec" in state and "config" not in state:
        raise CheckpointError(f"{path} is a guide or judge classifier, not a score-model checkpoint")
    missing = [k for k in SCORE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a score-model checkpoint (it lacks "
                              f"{', '.join(missing)})")
    return state


def config_of(state: dict[str, Any], source: Path) -> Config:
    try:
        return Config.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{source} holds an invalid config: {e}") from None


def load_trained_run(
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
    weights: Path | None = None,
    warn=None,
    notify: Callable[[str], None] | None = None,
) -> TrainedRun:
    """The EMA model of a run (its latest checkpoint, or `checkpoint`), or of an exported
    weights file (`weights`, safetensors: no run folder needed). `warn` hears of skipped
    checkpoints, `notify` of compiles (TrainedRun.notify)."""
    if weights is not None and (run_dir is not None or checkpoint is not None):
        raise RunError("give a weights file or a run (or checkpoint), not both")
    dev = resolve_device(device)
    if weights is not None:
        from pegasus.run.weights import read_weights

        exported = read_weights(weights)
        config, source, step = exported.config, Path(weights), exported.step
        tensors, sigmas, backbone = exported.tensors, exported.sigmas, exported.backbone
        data_mean = exported.data_mean
    else:
        if checkpoint is None:
            if run_dir is None:
                raise RunError("give a run folder, a checkpoint or a weights file")
            checkpoint = RunDir(run_dir).require_checkpoint(warn)
        source = Path(checkpoint)
        state = score_checkpoint(source)
        config = config_of(state, source)
        tensors, sigmas, backbone = state["ema"], state["sigmas"], state.get("backbone", {})
        step = int(state["step"])
        data_mean = state.get("data_mean")
    schedule = schedule_of(config, sigmas, source)
    model = model_from_state(config, tensors, backbone, source)
    model.to(dev).eval().requires_grad_(False)
    centre = None if data_mean is None else centre_of(data_mean, source).to(dev)
    return TrainedRun(config, model, schedule, step, source, dev,
                      Path(run_dir) if run_dir is not None else None, notify, centre,
                      centre_recorded=centre is not None)


def centre_of(data_mean, source: Path) -> torch.Tensor:
    """A recorded per-channel data mean as the (C, 1, 1) centre of the samplers' start."""
    mean = torch.as_tensor(data_mean, dtype=torch.float32)
    if mean.dim() != 1 or not (mean.isfinite().all() and (mean >= 0).all() and (mean <= 1).all()):
        raise CheckpointError(f"{source}: its recorded data mean {mean.tolist()} is not one value "
                              f"in [0, 1] per channel; the file was edited or damaged")
    return mean.view(-1, 1, 1)


def trained_schedule(run_dir: Path, warn=None) -> tuple[Config, Schedule]:
    """The config and schedule of a run's latest checkpoint, without building its model (what
    the classifier trainer needs)."""
    path = RunDir(run_dir).require_checkpoint(warn)
    state = score_checkpoint(path)
    config = config_of(state, path)
    return config, schedule_of(config, state["sigmas"], path)


def load_resume_state(run: RunDir, warn=None, mmap: bool = False) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of `run` that loads, falling back past damaged ones (each skipped
    one is reported through `warn`)."""
    first = run.latest_checkpoint(warn)
    if first is None:
        raise RunError(f"cannot resume: {run.checkpoints} holds no checkpoint; train the run "
                       f"first, without resuming")
    candidates = [first] + [p for p in reversed(list_checkpoints(run.checkpoints)) if p != first]
    problems = []
    for path in candidates:
        try:
            return score_checkpoint(path, mmap), path
        except CheckpointError as e:
            problems.append(str(e))
            if warn is not None and path != candidates[-1]:
                warn(f"{e}; falling back to the previous checkpoint")
    raise CheckpointError(f"cannot resume {run.path}: no checkpoint loads; the newest: {problems[0]}")


def run_config(
    run_dir: Path,
    *,
    preset: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    warn=None,
) -> Config:
    """The config a training command trains with. A new run: preset, flags, overrides. A resumed
    run: exactly the config its checkpoint was trained with, plus the overrides asked for now;
    a config.toml edited since (a section lost, a field changed) is refused rather than trusted,
    unless it already holds those overrides."""
    if not resume:
        config = build_config(preset, flags, overrides)
        _check_preset_folder(preset, config)
        return config
    run = RunDir(run_dir)
    state, path = load_resume_state(run, warn, mmap=True)
    trained = resolve_model_options(config_of(state, path))
    config = build_config(preset, flags, overrides, saved=trained)
    on_disk = resolve_model_options(run.read_config())
    if on_disk != trained and on_disk != config:
        field = _first_difference(on_disk.to_dict(), trained.to_dict())
        raise ConfigError(
            f"{run.config} no longer matches the config {path.name} was trained with ({field}); "
            f"restore it, or change fields on purpose with overrides (section.field=value)")
    return config


def _check_preset_folder(preset: str | None, config: Config) -> None:
    """The presets of datasets pegasus cannot download read folder:PATH; a missing folder is
    one line naming the preset and the layout it expects."""
    dataset = config.data.dataset
    if preset is None or not dataset.startswith("folder:"):
        return
    folder = Path(dataset.removeprefix("folder:")).expanduser()
    if not folder.is_dir():
        layout = ", ".join(f"{folder / c}/" for c in config.data.classes)
        raise DatasetError(f"preset {preset!r} reads {dataset}, which does not exist; pegasus "
                           f"cannot download this dataset: put its images in {layout} or point "
                           f"data.dataset at another folder:PATH")


def _first_difference(a: dict[str, Any], b: dict[str, Any], where: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        name = f"{where}.{key}" if where else key
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], name)
        elif a.get(key) != b.get(key):
            return f"{name} is {a.get(key)!r} there, {b.get(key)!r} in the checkpoint"
    return "no field differs"


def export_run(run_dir: Path, out: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Export a run's latest (or given) checkpoint as shareable weights (weights.py); `out`
    defaults to the run's exports/ folder."""
    from pegasus.run.weights import export_weights

    if out is not None:
        if Path(out).suffix != ".safetensors":
            raise WriteError(f"cannot write {out}: exported weights are safetensors; name the file "
                             f"*.safetensors")
        check_writable(Path(out))
    run = load_trained_run(run_dir, checkpoint, device="cpu")
    return export_weights(run, out if out is not None else RunDir(run_dir).export_file(run.step))
