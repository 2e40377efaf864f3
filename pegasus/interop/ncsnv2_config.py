"""The reference NCSNv2 code's config.yml, read safely, and what it means as a pegasus config
(and back). docs/ncsnv2.md lists the mapping field by field.

The reference dumps its config from an argparse.Namespace, so a log folder's config.yml carries
`!!python/object:argparse.Namespace` tags that yaml.safe_load refuses; its configs/*.yml are plain
YAML with the same fields. The loader here reads such tags as plain mappings and builds nothing
else: any other tag (`!!python/object/apply:...`, which would call a function) is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from pegasus.config import Config, build_config
from pegasus.errors import CheckpointError, PegasusWarning

NAMESPACE_TAG = "tag:yaml.org,2002:python/object:argparse.Namespace"
# The reference picks its network class by dataset name (runners/ncsn_runner.py, get_model).
DATASET_CLASS = {"CIFAR10": "ncsnv2", "CELEBA": "ncsnv2", "LSUN": "deeper", "FFHQ": "deepest"}
# Where pegasus reads the datasets it cannot download (its presets of the published settings).
DATA_PRESET = {"CELEBA": "celeba", "FFHQ": "ffhq", "church_outdoor": "church", "tower": "tower",
               "bedroom": "bedroom"}
RESOLUTIONS = (32, 48, 64, 96, 128, 256)  # the RefineNet's (backbones/builtin.py)


class _NamespaceLoader(yaml.SafeLoader):
    """yaml's safe loader, plus argparse.Namespace read as the mapping it holds."""


_NamespaceLoader.add_constructor(
    NAMESPACE_TAG, lambda loader, node: loader.construct_mapping(node, deep=True))


def read_reference_config(path: Path) -> dict[str, Any]:
    """A reference config.yml (plain, or with Namespace tags) as nested dicts; any other tag,
    or a file that is not such a YAML mapping, is one clear error and runs nothing."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_NamespaceLoader)
    except yaml.constructor.ConstructorError as e:
        raise CheckpointError(f"{path} holds YAML pegasus will not build ({e.problem}); only "
                              f"plain mappings and argparse.Namespace are read") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid YAML ({type(e).__name__})") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict)
                                             for s in ("data", "model")):
        raise CheckpointError(f"{path} is not a reference NCSNv2 config (no data and model "
                              f"sections)")
    return data


class Fields:
    """A reference config's fields by dotted name, each missing or wrong one a clear error."""

    def __init__(self, data: dict[str, Any], source: Path) -> None:
        self.data, self.source = data, source

    def get(self, name: str, default: Any = ...) -> Any:
        value: Any = self.data
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                if default is not ...:
                    return default
                raise CheckpointError(f"{self.source}: field {name} is missing; the reference's "
                                      f"configs/*.yml hold it")
            value = value[part]
        return value

    def refuse(self, name: str, supported: Any, why: str) -> None:
        """One line naming the field and its value when pegasus cannot do what it says."""
        value = self.get(name, supported)
        if value != supported:
            raise CheckpointError(f"{self.source}: {name} is {value!r}; {why}")

    def note(self, name: str, supported: Any, why: str) -> None:
        value = self.get(name, supported)
        if value != supported:
            warnings.warn(f"{self.source}: {name} is {value!r}; {why}", PegasusWarning,
                          stacklevel=3)


def check_supported(f: Fields) -> None:
    """What pegasus's RefineNet, loss and data cannot do is refused (it changes the network or
    its units); what only training would do differently is said in a note."""
    f.refuse("model.spec_norm", False, "pegasus's RefineNet has no spectral normalisation")
    f.refuse("model.normalization", "InstanceNorm++", "pegasus's RefineNet uses InstanceNorm++")
    f.refuse("model.nonlinearity", "elu", "pegasus's RefineNet uses ELU")
    f.refuse("model.sigma_dist", "geometric", "pegasus's noise levels are geometric")
    f.refuse("data.logit_transform", False, "pegasus's images are in [0, 1], without a logit")
    f.refuse("data.rescaled", False, "pegasus's images are in [0, 1] (the network computes "
                                     "2x - 1 itself), not rescaled to [-1, 1]")
    f.refuse("data.channels", 3, "pegasus's images have three channels")
    res = f.get("data.image_size")
    if res not in RESOLUTIONS:
        raise CheckpointError(f"{f.source}: data.image_size is {res!r}; pegasus's RefineNet runs "
                              f"at {', '.join(map(str, RESOLUTIONS))} px")
    training = "so a resumed run trains unlike the reference"
    f.note("training.anneal_power", 2, f"pegasus weights its loss by sigma^2, {training}")
    f.note("data.uniform_dequantization", False, f"pegasus does not dequantize, {training}")
    f.note("data.gaussian_dequantization", False, f"pegasus does not dequantize, {training}")
    f.note("optim.optimizer", "Adam", f"pegasus trains with Adam, {training}")
    f.note("optim.beta1", 0.9, f"pegasus's Adam has beta1 0.9, {training}")
    f.note("optim.weight_decay", 0.0, f"pegasus's Adam has no weight decay, {training}")
    f.note("optim.amsgrad", False, f"pegasus's Adam is not AMSGrad, {training}")


def stages_of_config(f: Fields) -> str:
    dataset = f.get("data.dataset")
    if dataset not in DATASET_CLASS:
        raise CheckpointError(f"{f.source}: data.dataset is {dataset!r}; the reference's NCSNv2 "
                              f"networks are for {', '.join(DATASET_CLASS)}")
    return DATASET_CLASS[dataset]


def _data_section(f: Fields) -> dict[str, Any]:
    dataset = f.get("data.dataset")
    if dataset == "CIFAR10":
        from pegasus.data.official import CIFAR10_CLASSES

        data = {"dataset": "cifar10", "classes": list(CIFAR10_CLASSES)}
    else:
        key = f.get("data.category", "church_outdoor") if dataset == "LSUN" else dataset
        preset = DATA_PRESET.get(key)
        data = (build_config(preset).to_dict()["data"] if preset is not None else
                {"dataset": f"folder:~/data/lsun-{key}", "classes": [str(key)]})
        data = {"dataset": data["dataset"], "classes": data["classes"]}
    return {**data, "res": f.get("data.image_size"), "flip": bool(f.get("data.random_flip", True))}


def pegasus_config(f: Fields, stages: str, sigmas, ngf: int) -> Config:
    """The pegasus config of a reference run: its data, its schedule (sigma_1, sigma_L and L from
    the checkpoint's own sigmas; eps and T from its sampling section), its network and its
    training settings."""
    check_supported(f)
    noise = {"sigma_max": float(f.get("model.sigma_begin")),
             "sigma_min": float(f.get("model.sigma_end")), "levels": len(sigmas),
             "steps_per_level": int(f.get("sampling.n_steps_each")),
             "eps": float(f.get("sampling.step_lr")),
             "denoise": bool(f.get("sampling.denoise", True))}
    train = {"iters": int(f.get("training.n_iters")),
             "batch_size": int(f.get("training.batch_size")),
             "lr": float(f.get("optim.lr")), "adam_eps": float(f.get("optim.eps", 1e-8)),
             "ema": float(f.get("model.ema_rate", 0.999)),
             "checkpoint_every": int(f.get("training.snapshot_freq", 5000))}
    model = {"backbone": "refinenet", "ngf": ngf, "stages": stages}
    return build_config(None, overrides=[f"{section}.{k}={_toml(v)}" for section, values in
                                         (("data", _data_section(f)), ("noise", noise),
                                          ("model", model), ("train", train))
                                         for k, v in values.items()])


def _toml(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def reference_config(config: Config, step: int) -> dict[str, Any]:
    """A reference configs/*.yml for a pegasus RefineNet run: what the reference's main.py reads
    with --config to sample, test or resume it. The reference picks its network class by the
    dataset's name, so the dataset is the one whose class is the run's stage list."""
    stages = config.model.options["stages"]
    if stages == "auto":
        from pegasus.backbones.refinenet import auto_stages

        stages = auto_stages(config.data.res)
    dataset = {"ncsnv2": "CIFAR10" if config.data.res == 32 else "CELEBA", "deeper": "LSUN",
               "deepest": "FFHQ"}[stages]
    noise, train = config.noise, config.train
    data = {"dataset": dataset, "image_size": config.data.res, "channels": 3,
            "logit_transform": False, "uniform_dequantization": False,
            "gaussian_dequantization": False, "random_flip": config.data.flip, "rescaled": False,
            "num_workers": 4}
    if dataset == "LSUN":
        data["category"] = config.data.classes[0]
    sampling = {"batch_size": 64, "data_init": False, "step_lr": noise.eps,
                "n_steps_each": noise.steps_per_level, "ckpt_id": step, "final_only": True,
                "fid": False, "denoise": noise.denoise, "num_samples4fid": 10000,
                "inpainting": False, "interpolation": False, "n_interpolations": 15}
    return {
        "training": {"batch_size": train.batch_size, "n_epochs": 500000, "n_iters": train.iters,
                     "snapshot_freq": train.checkpoint_every, "snapshot_sampling": False,
                     "anneal_power": 2, "log_all_sigmas": False},
        "sampling": sampling,
        "fast_fid": {"batch_size": 1000, "num_samples": 1000, "step_lr": noise.eps,
                     "n_steps_each": noise.steps_per_level, "begin_ckpt": step, "end_ckpt": step,
                     "verbose": False, "ensemble": False},
        "test": {"begin_ckpt": step, "end_ckpt": step, "batch_size": 100},
        "data": data,
        "model": {"sigma_begin": noise.sigma_max, "num_classes": noise.levels, "ema": True,
                  "ema_rate": train.ema, "spec_norm": False, "sigma_dist": "geometric",
                  "sigma_end": noise.sigma_min, "normalization": "InstanceNorm++",
                  "nonlinearity": "elu", "ngf": config.model.options["ngf"]},
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": train.lr, "beta1": 0.9,
                  "amsgrad": False, "eps": train.adam_eps},
    }
