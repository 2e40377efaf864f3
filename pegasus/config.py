"""Typed, validated run configuration: TOML presets, CLI flags and `--set section.field=value`.

A config is a tree of dataclasses. Loading checks every key and type and names the culprit
(`config: data.res: expected an integer, got 'big'`); unknown keys are errors. The model
section holds the backbone name plus that backbone's own typed options, validated against the
config the backbone's plugin declares. Every checkpoint stores the resolved config.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pegasus.coerce import from_mapping, parse_value
from pegasus.devices import check_device_name
from pegasus.errors import ConfigError, RegistryError
from pegasus.noise.draws import P_MEAN, P_STD
from pegasus.noise.schedule import check_schedule_numbers
from pegasus.registry import get_backbone, get_objective

PRESET_DIRS = (
    Path(__file__).resolve().parent / "configs",  # presets shipped inside an installed wheel
    Path(__file__).resolve().parent.parent / "configs",  # presets of a source checkout
)


Auto = Literal["auto"]
MAX_RES = 1024
MAX_GRID = 10_000  # images in one grid picture: 100 x 100 tiles
# A generated dataset (sprites) is made in memory at once: 2 classes of 200,000 at 64 px are 5 GB.
MAX_GENERATED = 200_000
# Training steps of one run: 300 times the published NCSNv2 CIFAR-10 run's 300k, and far below
# where a count of steps (a stage length, a log interval) stops meaning anything.
MAX_ITERS = 100_000_000


@dataclass
class DataConfig:
    # sprites | cifar10 | stl10 | folder:PATH | auto (32 px: CIFAR-10, larger: STL-10)
    dataset: str = "auto"
    classes: list[str] = field(default_factory=lambda: ["horse", "bird"])
    res: int = 32
    flip: bool = True  # random horizontal flips while training
    # Random moves of up to this many pixels each way while training, the border mirrored:
    # stronger augmentation against copying a small training set (0: none; at most res / 8).
    shift: int = 0
    data_dir: str = ""  # where datasets are downloaded and cached; "" for the default
    download: bool = True  # fetch missing CIFAR-10 / STL-10 files with torchvision
    train_plus_test: bool = False  # CIFAR-10: add the test split to the training images
    size: int = 5000  # images per class for the generated `sprites` dataset
    seed: int = 0  # seed of the generated `sprites` dataset
    limit: int = 0  # the first N images of each class only (0: all): a small training set
    # Images of each class kept out of training (the last N) to log the held-out DSM loss; the
    # built-in sprites draw theirs with another seed instead.
    held_out: int = 0

    def __post_init__(self) -> None:
        _positive(self, "res", "size")
        if self.size > MAX_GENERATED:
            raise ValueError(f"size must be at most {MAX_GENERATED:,} images a class (the "
                             f"generated set is made in memory at once), got {self.size:,}")
        if self.limit < 0 or self.held_out < 0:
            raise ValueError(f"limit and held_out must be 0 or positive, got {self.limit} and "
                             f"{self.held_out}")
        if not 0 <= self.shift <= self.res // 8:
            raise ValueError(f"shift must be between 0 and res / 8 = {self.res // 8} px at "
                             f"{self.res} px, got {self.shift}: a longer move makes the mirrored "
                             f"border a large part of what is learnt")
        if self.res > MAX_RES:
            raise ValueError(f"res must be at most {MAX_RES} px (NCSNv2's largest published "
                             f"network is 256 px), got {self.res}")


@dataclass
class NoiseConfig:
    """sigma_1 > ... > sigma_L geometric, T Langevin steps per level (docs/science.md).

    "auto" is chosen at the start of training (noise/techniques.py): sigma_max by Technique 1 (the largest
    distance between training images), levels by Technique 2, eps by Technique 4. That is the
    default because no fixed schedule suits every dataset and resolution (CIFAR-10's sigma_1 = 50
    is below the distances between 64 px images, which Technique 1 forbids); the `cifar10`
    preset pins the published numbers instead, and the run records whatever was used."""

    sigma_max: float | Auto = "auto"
    sigma_min: float = 0.01
    levels: int | Auto = "auto"
    steps_per_level: int = 5
    eps: float | Auto = "auto"
    denoise: bool = True  # the final Tweedie denoising step
    # Where training draws each image's sigma (noise/draws.py): "levels" (NCSNv2, the default),
    # "log-uniform" or "log-normal" over [sigma_L, sigma_1]; p_mean and p_std are log-normal's.
    training: Literal["levels", "log-uniform", "log-normal"] = "levels"
    p_mean: float = P_MEAN
    p_std: float = P_STD
    # How the network's output becomes the score (model/precondition.py): "ncsnv2", output /
    # sigma (the default, exact NCSNv2), or "edm", EDM's c_skip, c_out and c_in about the data's
    # mean, with its loss weighting. sigma_data is EDM's 0.5 for images in [-1, 1], halved for
    # pegasus's [0, 1].
    preconditioning: Literal["ncsnv2", "edm"] = "ncsnv2"
    sigma_data: float = 0.25

    def __post_init__(self) -> None:
        check_schedule_numbers(self.sigma_max, self.sigma_min, self.levels, self.steps_per_level,
                               self.eps)
        if not self.p_std > 0:
            raise ValueError(f"p_std must be positive, got {self.p_std}")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {self.sigma_data}")

    @property
    def planned(self) -> bool:
        return "auto" not in (self.sigma_max, self.levels, self.eps)


@dataclass
class ModelConfig:
    backbone: str = "refinenet"
    options: dict[str, Any] = field(default_factory=dict)  # the backbone's own typed config


@dataclass
class TrainConfig:
    iters: int = 300_000
    batch_size: int = 128
    lr: float = 1e-4
    adam_eps: float = 1e-8  # Adam's epsilon; the published FFHQ run uses 1e-3
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 100  # steps between log lines and TensorBoard points
    sample_every: int = 5000  # steps between sample grids (0: never)
    checkpoint_every: int = 5000
    keep: int = 3  # checkpoints kept besides the newest
    grid: int = 64  # images in each sample grid
    # Stop when the held-out DSM loss (training/heldout.py) has not reached a new low for this
    # many logs in a row (0: never); the run keeps its checkpoint of that step.
    early_stop: int = 0
    # The fast path. "auto" turns bf16 autocast on for GPUs with bf16 tensor cores (compute
    # capability 8.0 and later) and off elsewhere (older GPUs emulate bf16; on CPUs bf16 training
    # is slower), and channels_last on when the backbone declares that it pays
    # (Backbone.channels_last). Uncompiled on a GPU, the switches left at "auto" are then timed
    # there and kept only if faster (pegasus/fastpath/probe.py). The loss and 1/sigma stay in float32.
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool | Auto = "auto"
    # torch.compile the network. "auto" compiles on CUDA (compute capability 7.0 and later, which
    # Triton needs) when at least 20,000 steps remain to run, or 2,000 once the run folder caches
    # that compile (the rule and its measurement: pegasus/fastpath/rules.py).
    compile: bool | Auto = "auto"
    # Time the uncompiled fast path's modes before the work (pegasus/fastpath/probe.py): "auto" on
    # CUDA, true on any device (a CPU's own answer on channels_last), false never (the rules
    # alone). Sampling from the run follows it too.
    probe: bool | Auto = "auto"

    def __post_init__(self) -> None:
        _positive(self, "iters", "batch_size", "lr", "adam_eps", "log_every", "checkpoint_every",
                  "keep", "grid")
        if self.iters > MAX_ITERS:
            raise ValueError(f"iters must be at most {MAX_ITERS:,} steps, got {self.iters:,}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.grid > MAX_GRID:
            raise ValueError(f"grid must be at most {MAX_GRID:,} images (one picture), got "
                             f"{self.grid:,}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be 0 (never) or positive, got {self.sample_every}")
        check_device_name(self.device)


@dataclass
class ObjectiveConfig:
    """The objective a run trains on (pegasus/objectives/): its name (`dsm` for every run trained
    from scratch; `ect` for one that `pegasus tune` made) plus that objective's own typed
    options, validated against the config its plugin declares."""

    name: str = "dsm"
    source: str = ""  # the run this one was tuned from: `pegasus tune` writes it, for the reader
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = {"backbone": self.model.backbone, **self.model.options}
        objective = self.objective
        d["objective"] = {"name": objective.name, **({"source": objective.source}
                                                      if objective.source else {}),
                          **objective.options}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = _renamed({k: dict(v) if isinstance(v, dict) else v for k, v in data.items()})
        model = data.get("model")
        if isinstance(model, dict):
            backbone = model.pop("backbone", ModelConfig.backbone)
            data["model"] = {"backbone": backbone, "options": model}
        objective = data.get("objective")
        if isinstance(objective, dict):
            name = objective.pop("name", ObjectiveConfig.name)
            source = objective.pop("source", "")
            data["objective"] = {"name": name, "source": source, "options": objective}
        return from_mapping(cls, data, where="")


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """A config written before objectives were named (pegasus 0.1 runs until 2026-12): its
    `consistency` section, tuned or not, as the objective it describes; and a tuned run's
    options from before ECT's weight, boundary and denoising share could be chosen, with those
    it trained on."""
    old = data.pop("consistency", None)
    if old is not None and "objective" in data:
        raise ConfigError("config: it has a consistency section beside its objective section; "
                          "the objective section replaced it: write its fields as "
                          "objective.FIELD")
    if isinstance(old, dict):
        if old.pop("tuned", False):
            data["objective"] = {"name": "ect", **old}
        else:
            data["objective"] = {"name": "dsm"}
    objective = data.get("objective")
    # A tuned run's options are written resolved (q among them): one written before ECT's
    # weight, boundary or denoising share were options trained on EDM's weight, with f the
    # identity at sigma_L and no pairs kept denoising, and resumes and samples so.
    if isinstance(objective, dict) and objective.get("name") == "ect" and "q" in objective:
        objective.setdefault("weight", "edm")
        objective.setdefault("denoise", 0.0)
        objective.setdefault("boundary", data.get("noise", {}).get("sigma_min",
                                                                   NoiseConfig.sigma_min))
    return data


def _positive(obj: Any, *names: str) -> None:
    """Each field a finite number above 0 (nan and inf pass a plain `> 0` or `<= 0`)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, int | float) and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides to a plain config dict (in the TOML layout)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected SECTION.FIELD=VALUE, e.g. model.ngf=64")
        section, name = parts
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {item!r}: {section} is not a section")
        table[name] = parse_value(text.strip())
    return data


def find_preset(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for folder in PRESET_DIRS:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no preset named {name_or_path!r}; available: {', '.join(list_presets())}")


def list_presets() -> list[str]:
    return sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.toml")})


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None


def build_config(
    preset: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    saved: Config | None = None,
    continuing: str = "resuming",
) -> Config:
    """The config of a training command: a preset (or, when resuming, the run's `saved` config),
    then the common flags ({"data.res": 32, ...}; None means not given), then overrides
    ("section.field=value").

    When resuming (or tuning a run: `continuing` names which, in the errors), the noise and
    model sections must match the run, and the data's resolution, the objective's name and
    source; the train section may change, and so may the data (fine-tuning a run on other
    images or classes, an imported network on horse and bird, say) and the objective's options.
    """
    if saved is not None:
        if preset is not None:
            raise ConfigError("a resumed run keeps its own config; give no preset when resuming")
        data = saved.to_dict()
    elif preset is not None:
        data = read_toml(find_preset(preset))
    else:
        data = {}
    data = _deep_copy(data)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, name = key.split(".")
        table = data.setdefault(section, {})
        if key == "model.backbone" and value != table.get("backbone", ModelConfig.backbone):
            table.clear()  # the preset's options belong to another backbone
        table[name] = value
    config = Config.from_dict(apply_overrides(data, overrides or []))
    if saved is None:
        return resolve_model_options(config)
    instead = ("start a new run instead" if continuing == "resuming" else
               "the network and its schedule are the run's it starts from")
    # Before the options are resolved: another objective's or backbone's options would be
    # refused first, as unknown keys.
    if (config.objective.name, config.objective.source) != (saved.objective.name,
                                                            saved.objective.source):
        raise ConfigError(f"cannot change objective.name or objective.source when "
                          f"{continuing}; {instead}")
    if config.model.backbone != saved.model.backbone:
        raise ConfigError(f"cannot change the model section when {continuing}; {instead}")
    config = resolve_model_options(config)
    if config.noise != saved.noise:
        raise ConfigError(f"cannot change the noise section when {continuing}; {instead}")
    if _weights_options(config) != _weights_options(resolve_model_options(saved)):
        raise ConfigError(f"cannot change the model section when {continuing} (only "
                          f"{_free_options(config) or 'none of its options'} may); {instead}")
    if config.data.res != saved.data.res:
        raise ConfigError(f"cannot change data.res when {continuing} (the run trains at "
                          f"{saved.data.res} px); {instead}")
    return config


def resolve_model_options(config: Config) -> Config:
    """Validate the model's and the objective's options against the configs their plugins
    declare, and fill in their defaults."""
    try:
        spec, _ = get_backbone(config.model.backbone)
        options = _plain(dataclasses.asdict(spec.make_config(config.model.options)))
        objective, _ = get_objective(config.objective.name)
        chosen = _plain(dataclasses.asdict(objective.make_config(config.objective.options)))
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(
        config, model=ModelConfig(config.model.backbone, options),
        objective=dataclasses.replace(config.objective, options=chosen))


def _free_options(config: Config) -> str:
    return ", ".join(f"model.{name}" for name in get_backbone(config.model.backbone)[0].free)


def _weights_options(config: Config) -> dict[str, Any]:
    """The model's options that shape its weights: all but the backbone's free ones (dropout)."""
    free = get_backbone(config.model.backbone)[0].free
    return {k: v for k, v in config.model.options.items() if k not in free}


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, so a config compares equal to its TOML round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
