"""Typed, validated run configuration: TOML presets, CLI flags and `--set section.field=value`.

A config is a tree of dataclasses. Loading checks every key and type and names the culprit
(`config: data.res: expected an integer, got 'big'`); unknown keys are errors. The model
section holds the backbone name plus that backbone's own typed options, validated against the
config the backbone's plugin declares. Every checkpoint stores the resolved config.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pegasus.errors import UserError

PRESET_DIRS = (
    Path(__file__).resolve().parent / "configs",  # presets shipped inside an installed wheel
    Path(__file__).resolve().parent.parent / "configs",  # presets of a source checkout
)


class ConfigError(UserError):
    """A config that cannot be used, with the field and the fix in its message."""


Auto = Literal["auto"]


@dataclass
class DataConfig:
    # sprites | cifar10 | stl10 | folder:PATH | auto (32 px: CIFAR-10, larger: STL-10)
    dataset: str = "auto"
    classes: list[str] = field(default_factory=lambda: ["horse", "bird"])
    res: int = 32
    flip: bool = True  # random horizontal flips while training
    data_dir: str = ""  # where datasets are downloaded and cached; "" for the default
    download: bool = True  # fetch missing CIFAR-10 / STL-10 files with torchvision
    train_plus_test: bool = False  # CIFAR-10: add the test split to the training images
    size: int = 5000  # images per class for the generated `sprites` dataset
    seed: int = 0  # seed of the generated `sprites` dataset

    def __post_init__(self) -> None:
        _positive(self, "res", "size")


@dataclass
class NoiseConfig:
    """sigma_1 > ... > sigma_L geometric, T Langevin steps per level (NOTES.md).

    "auto" asks the planner at the start of training: sigma_max by Technique 1 (the largest
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

    def __post_init__(self) -> None:
        _positive(self, "sigma_max", "sigma_min", "levels", "steps_per_level", "eps")
        if self.sigma_max != "auto" and self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min})")
        if self.levels != "auto" and self.levels < 2:
            raise ValueError(f"levels must be at least 2, got {self.levels}")

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
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 100  # steps between log lines and TensorBoard points
    sample_every: int = 5000  # steps between sample grids (0: never)
    checkpoint_every: int = 5000
    keep: int = 3  # checkpoints kept besides the newest
    grid: int = 64  # images in each sample grid
    # The fast path. "auto" turns bf16 autocast and channels_last on for CUDA and off on CPU,
    # where bf16 convolutions are slower. The loss and the 1/sigma scaling stay in float32.
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool | Auto = "auto"
    compile: bool = False  # torch.compile the network (worth it for long runs on a GPU)

    def __post_init__(self) -> None:
        _positive(self, "iters", "batch_size", "lr", "log_every", "checkpoint_every", "keep", "grid")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be 0 (never) or positive, got {self.sample_every}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = {"backbone": self.model.backbone, **self.model.options}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        model = data.get("model")
        if isinstance(model, dict):
            backbone = model.pop("backbone", ModelConfig.backbone)
            data["model"] = {"backbone": backbone, "options": model}
        return from_mapping(cls, data, where="")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, int | float) and value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        valid = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key; valid keys here: {valid}")
    values = {name: _coerce(hints[name], data[name], _join(where, name)) for name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(option, value, where)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[1])
        raise ConfigError(f"{where}: " + " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin is list:
        if isinstance(value, str):  # "horse,bird" from a flag
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def parse_value(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (64, 1e-4, true, ["a", "b"]), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides to a plain config dict (in the TOML layout)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. model.ngf=64")
        section, name = parts
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {item!r}: {section} is not a section")
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


def load_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Defaults, then a preset (name or path) or `base`, then `--set` overrides; validated,
    with the backbone's options checked against its declared config and filled in."""
    data: dict[str, Any] = base if base is not None else {}
    if preset is not None:
        data = read_toml(find_preset(preset))
    data = apply_overrides(_deep_copy(data), overrides or [])
    config = Config.from_dict(data)
    return resolve_model_options(config)


def build_config(
    preset: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    resume_from: Path | None = None,
) -> Config:
    """The config of a training command: a preset (or, when resuming, the run's own config),
    then the common flags ({"data.res": 32, ...}; None means not given), then `--set`.

    When resuming, only the train section may change: data, noise and model must match the run.
    """
    saved: Config | None = None
    if resume_from is not None:
        if preset is not None:
            raise ConfigError("--config and --resume together: a resumed run keeps its own config")
        path = Path(resume_from) / "config.toml"
        if not path.is_file():
            raise ConfigError(f"cannot resume: {path} does not exist; train without --resume first")
        data = read_toml(path)
        saved = Config.from_dict(_deep_copy(data))
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
    config = resolve_model_options(Config.from_dict(apply_overrides(data, overrides or [])))
    if saved is not None:
        saved = resolve_model_options(saved)
        for section in ("data", "noise", "model"):
            if getattr(config, section) != getattr(saved, section):
                raise ConfigError(
                    f"cannot change the {section} section when resuming; start a new --run instead"
                )
    return config


def resolve_model_options(config: Config) -> Config:
    """Validate model options against the backbone's config and fill in its defaults."""
    from pegasus.registry import RegistryError, get_backbone

    try:
        spec, _ = get_backbone(config.model.backbone)
        options = _plain(dataclasses.asdict(spec.make_config(config.model.options)))
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(config, model=ModelConfig(config.model.backbone, options))


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, so a config compares equal to its TOML round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
