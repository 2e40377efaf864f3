"""The reference NCSNv2 code's checkpoints: import one as a pegasus run (its EMA weights to
sample, its raw weights and Adam state to resume), load one for sampling without a run, and
export a pegasus RefineNet run the other way, for the reference to load with strict=True.

The reference's runner saves `torch.save([score state dict, Adam state dict, epoch, step,
EMA shadow])`: the score wrapped in nn.DataParallel (every key "module."-prefixed, the trained
sigmas as the buffer "module.sigmas"), the shadow a dict of parameter name to tensor, last, and
absent when model.ema is false. Everything in it loads with weights_only=True; pegasus never
loads it otherwise. Names and parameter order: ncsnv2_names.py; the config: ncsnv2_config.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from pegasus.config import Config, ModelConfig, build_config, find_preset, resolve_model_options
from pegasus.errors import CheckpointError, ConfigError, RunError
from pegasus.interop.ncsnv2_config import (
    Fields,
    pegasus_config,
    read_reference_config,
    reference_config,
    stages_of_config,
)
from pegasus.interop.ncsnv2_names import CLASS_NAMES, reference_name, registration_key, stages_of_keys
from pegasus.model.build import build_score_model
from pegasus.noise.schedule import geometric_sigmas
from pegasus.registry import get_backbone, get_objective
from pegasus.run.checkpoint import read_torch_file, save_checkpoint
from pegasus.run.layout import RunDir
from pegasus.version import __version__

CONFIG_NAME = "config.yml"


def read_reference_checkpoint(path: Path) -> list:
    """The runner's list, memory-mapped (a 1.5 GB FFHQ checkpoint is not read into memory), or
    one clear line saying what the file is."""
    path = Path(path)
    states = read_torch_file(path, "a reference NCSNv2 checkpoint", mmap=True)
    if (not isinstance(states, list) or len(states) not in (4, 5) or not isinstance(states[0], dict)
            or not isinstance(states[1], dict) or not isinstance(states[3], int)):
        raise CheckpointError(f"{path} is not a reference NCSNv2 checkpoint: its runner saves a "
                              f"list [score, Adam, epoch, step] (and the EMA shadow last)")
    return states


def find_config(checkpoint: Path, given: str | Path | None) -> tuple[dict[str, Any] | Config, Path]:
    """The config of a reference checkpoint: `given` (a reference YAML file, or a pegasus preset
    name), else config.yml beside it or in the folders above it (exp/logs/<doc>/)."""
    if given is not None:
        if Path(given).suffix in (".yml", ".yaml"):
            return read_reference_config(Path(given)), Path(given)
        return build_config(given), find_preset(str(given))
    for folder in list(Path(checkpoint).resolve().parents)[:3]:
        if (folder / CONFIG_NAME).is_file():
            return read_reference_config(folder / CONFIG_NAME), folder / CONFIG_NAME
    raise ConfigError(f"no {CONFIG_NAME} beside {checkpoint} or in the folders above it; give the "
                      f"run's config: a reference YAML file, or a pegasus preset such as cifar10")


def _check_exported_pair(config: Path, checkpoint: Path, step: int) -> None:
    """A config.yml that pegasus's export wrote names the step of the checkpoint it was written
    with: an export stopped between its two files leaves a config that names another step."""
    if config.suffix not in (".yml", ".yaml"):
        return
    first = config.read_text(encoding="utf-8", errors="replace").partition("\n")[0]
    match = re.match(r"# Written by pegasus \S+ at step (\d+)", first)
    if match and int(match[1]) != step:
        raise CheckpointError(f"{config} was written for step {match[1]}, but {checkpoint} is at "
                              f"step {step}: an export stopped between the two files; export again")


def _plain_names(state: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def converted(states: list, checkpoint: Path, given=None, warn=None) -> dict[str, Any]:
    """A pegasus checkpoint's dict made from the runner's list: every tensor checked against the
    network the config names and moved under pegasus's names (no copy: the file stays mapped)."""
    score = _plain_names(states[0])
    if "sigmas" not in score:
        raise CheckpointError(f"{checkpoint} holds no sigmas buffer (module.sigmas): not a "
                              f"reference NCSNv2 score network")
    sigmas = score.pop("sigmas").float()
    found, source = find_config(checkpoint, given)
    _check_exported_pair(source, checkpoint, int(states[3]))
    keys = stages_of_keys(score)
    if "begin_conv.weight" not in score:
        raise CheckpointError(f"{checkpoint} holds no begin_conv: not a reference NCSNv2 network")
    ngf = int(score["begin_conv.weight"].shape[0])
    if isinstance(found, Config):
        config = _from_preset(found, sigmas, ngf, keys, source)
    else:
        fields = Fields(found, source)
        stages = stages_of_config(fields)
        if keys != stages:
            raise CheckpointError(
                f"{checkpoint} holds the tensors of {CLASS_NAMES[keys]}, but its config "
                f"({fields.get('data.dataset')}) names {CLASS_NAMES[stages]} (stage list "
                f"{stages!r}); give the config it was trained with")
        config = pegasus_config(fields, stages, sigmas, ngf)
    _check_sigmas(config, sigmas, checkpoint)
    model = _mapped(config, score, checkpoint)
    if len(states) == 5 and isinstance(states[4], dict):
        ema = _mapped(config, _plain_names(states[4]), checkpoint, what="EMA shadow")
    else:
        if warn is not None:
            warn(f"{checkpoint} holds no EMA shadow (model.ema was false): its raw weights are "
                 f"the run's EMA, to sample from")
        ema = model
    return {"config": config.to_dict(), "sigmas": sigmas, "backbone": _record(),
            "pegasus_version": __version__, "model": model, "ema": ema,
            "ema_updates": int(states[3]), "optimizer": _adam(states[1], config, checkpoint),
            "step": int(states[3]), "world_size": 1, "rng": None,
            "imported": {"format": "ncsnv2", "file": str(checkpoint), "epoch": int(states[2])}}


def _from_preset(config: Config, sigmas, ngf: int, stages: str, source: Path) -> Config:
    """A pegasus preset as the config: its data, eps, T and training; the checkpoint's own
    sigmas and network."""
    data = config.to_dict()
    data["model"] = {"backbone": "refinenet", "ngf": ngf, "stages": stages}
    noise = data["noise"]
    noise |= {"sigma_max": _endpoint(noise["sigma_max"], sigmas[0]),
              "sigma_min": _endpoint(noise["sigma_min"], sigmas[-1]), "levels": len(sigmas)}
    return resolve_model_options(Config.from_dict(data))


def _endpoint(written, stored: torch.Tensor) -> float:
    """An end of the schedule: the number the config writes (50, 0.01) when the stored float32
    sigma is it, else the stored value itself."""
    if isinstance(written, int | float) and torch.tensor(float(written)).float() == stored:
        return float(written)
    return float(stored)


def _check_sigmas(config: Config, sigmas: torch.Tensor, checkpoint: Path) -> None:
    n = config.noise
    if not torch.equal(geometric_sigmas(n.sigma_max, n.sigma_min, n.levels), sigmas):
        raise CheckpointError(f"{checkpoint}: its sigmas buffer ({len(sigmas)} levels from "
                              f"{float(sigmas[0]):.4g} to {float(sigmas[-1]):.4g}) is not the "
                              f"geometric sequence its config describes")


def _mapped(config: Config, tensors: dict[str, torch.Tensor], checkpoint: Path,
            what: str = "score network") -> dict[str, torch.Tensor]:
    """`tensors` under pegasus's names, each checked against the network on the meta device."""
    expected, _ = build_score_model(config, device="meta")
    stages = config.model.options["stages"]
    out, names = {}, {}
    for name, like in expected.state_dict().items():
        ref = reference_name(name, stages)
        names[ref] = name
        if ref not in tensors:
            raise CheckpointError(f"{checkpoint}: its {what} lacks {ref}, which "
                                  f"{CLASS_NAMES[stages]} (stage list {stages!r}) has")
        if tuple(tensors[ref].shape) != tuple(like.shape):
            raise CheckpointError(
                f"{checkpoint}: its {what}'s {ref} is {tuple(tensors[ref].shape)}, but "
                f"{CLASS_NAMES[stages]} (stage list {stages!r}, ngf {config.model.options['ngf']}) "
                f"has {tuple(like.shape)} there")
        out[name] = tensors[ref]
    extra = sorted(set(tensors) - set(names))
    if extra:
        raise CheckpointError(f"{checkpoint}: its {what} holds {extra[0]}, which "
                              f"{CLASS_NAMES[stages]} (stage list {stages!r}) has not")
    return out


def _order(config: Config) -> tuple[list[str], list[str]]:
    """(pegasus's parameter names in its order, the reference names in the reference's order)."""
    expected, _ = build_score_model(config, device="meta")
    stages = config.model.options["stages"]
    ours = [name for name, _ in expected.named_parameters()]
    theirs = sorted((reference_name(n, stages) for n in ours),
                    key=lambda r: registration_key(r, stages))
    return ours, theirs


def _adam(state: dict, config: Config, checkpoint: Path) -> dict:
    """The reference's Adam state re-indexed to pegasus's parameter order."""
    ours, theirs = _order(config)
    stages = config.model.options["stages"]
    position = {reference_name(n, stages): i for i, n in enumerate(ours)}
    try:
        groups = state["param_groups"]
        moved = {position[theirs[int(i)]]: s for i, s in state["state"].items()}
    except (KeyError, IndexError, TypeError, ValueError):
        raise CheckpointError(f"{checkpoint}: its Adam state does not fit the network's "
                              f"{len(ours)} parameters") from None
    held = sum(len(g.get("params", [])) for g in groups)
    if len(groups) != 1 or held != len(ours):
        raise CheckpointError(f"{checkpoint}: its Adam state holds {held} parameters, the "
                              f"network {len(ours)}")
    return {"state": moved, "param_groups": [{**groups[0], "params": list(range(len(ours)))}]}


def _record() -> dict[str, str]:
    _, plugin = get_backbone("refinenet")
    return plugin.record("refinenet")


def import_checkpoint(checkpoint: Path, run_dir: Path, config: str | Path | None = None,
                      warn=None) -> Path:
    """A pegasus run folder (config.toml, a checkpoint, latest) made from a reference
    checkpoint; `config` is a reference YAML or a pegasus preset when no config.yml lies beside
    the checkpoint. Returns the checkpoint written."""
    run = RunDir(run_dir)
    run.check_usable()
    if run.latest_checkpoint() is not None:
        raise RunError(f"{run.path} already holds a run; import into a new folder")
    state = converted(read_reference_checkpoint(checkpoint), Path(checkpoint), config, warn)
    run.create()
    run.write_config(Config.from_dict(state["config"]))
    return save_checkpoint(run.checkpoints, state, keep=Config.from_dict(state["config"]).train.keep)


def load_reference(checkpoint: Path, config: str | Path | None = None, warn=None) -> dict:
    """A reference checkpoint as a pegasus checkpoint's dict, in memory (pegasus.load of a .pth)."""
    return converted(read_reference_checkpoint(checkpoint), Path(checkpoint), config, warn)


def export_checkpoint(run_dir: Path, out: Path, checkpoint: Path | None = None) -> Path:
    """The reference's list for a pegasus RefineNet run's newest (or given) checkpoint, with a
    config.yml beside it in the reference's configs/*.yml form."""
    from pegasus.atomic import TEMP_SUFFIX, atomic_write, check_writable
    from pegasus.run.load import config_of, score_checkpoint

    out = Path(out)
    if out.suffix not in (".pth", ".pt"):
        raise CheckpointError(f"cannot write {out}: the reference's checkpoints are .pth files")
    check_writable(out)
    path = checkpoint or RunDir(run_dir).require_checkpoint()
    state = score_checkpoint(Path(path))
    config = config_of(state, Path(path))
    if config.noise.preconditioning != "ncsnv2":
        raise CheckpointError(f"{path} is preconditioned as EDM's; the reference code takes the "
                              f"score as the network's output / sigma only")
    if get_objective(config.objective.name)[0].learns != "score":
        raise CheckpointError(f"{path} is a consistency-tuned run (objective "
                              f"{config.objective.name}); the reference code samples scores by "
                              f"Langevin dynamics, not consistency functions")
    if config.model.backbone != "refinenet":
        raise CheckpointError(f"{path} is a {config.model.backbone} run; the reference code runs "
                              f"the RefineNet only")
    config = _with_stages(config)
    stages = config.model.options["stages"]
    score = {"module.sigmas": state["sigmas"].float()}
    score |= {f"module.{reference_name(k, stages)}": v for k, v in state["model"].items()}
    ema = {reference_name(k, stages): v for k, v in state["ema"].items()}
    ours, theirs = _order(config)
    position = {name: i for i, name in enumerate(theirs)}
    adam = state["optimizer"]
    moved = {position[reference_name(ours[int(j)], stages)]: s for j, s in adam["state"].items()}
    group = {**adam["param_groups"][0], "params": list(range(len(ours)))}
    epoch = int((state.get("imported") or {}).get("epoch", 0))
    states = [score, {"state": moved, "param_groups": [group]}, epoch, int(state["step"]), ema]
    # The config first, naming the step: an export stopped before the checkpoint lands leaves a
    # pair that import refuses (_check_exported_pair), never an old config taken as the new one's.
    for name in (out.name, CONFIG_NAME):  # what an earlier, killed export left half-written
        for stale in out.parent.glob(f".{name}.*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
    text = yaml.safe_dump(reference_config(config, int(state["step"])), sort_keys=False)
    atomic_write(out.with_name(CONFIG_NAME), lambda f: f.write(
        (f"# Written by pegasus {__version__} at step {int(state['step'])} from {path}: the "
         f"reference's configs/*.yml form,\n# for its main.py --config (copy it into its "
         f"configs/ folder).\n" + text).encode()))
    atomic_write(out, lambda f: torch.save(states, f))
    return out


def _with_stages(config: Config) -> Config:
    """`config` with its stage list named ("auto" resolved as the paper chooses by resolution)."""
    if config.model.options["stages"] != "auto":
        return config
    from pegasus.backbones.refinenet import auto_stages

    options = {**config.model.options, "stages": auto_stages(config.data.res)}
    return dataclasses.replace(config, model=ModelConfig("refinenet", options))
