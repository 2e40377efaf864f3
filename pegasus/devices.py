"""Device names: parsed and checked once, before any slow work."""

from __future__ import annotations

import re

from pegasus.errors import UserError

_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str) -> None:
    """Refuse a name that is none of auto, cpu, cuda, cuda:N (ValueError, for config fields)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"device {name!r} is not one of {DEVICE_NAMES}")


def resolve_device(name: str = "auto"):
    """The torch.device a name means here: auto is CUDA when there is one, else the CPU."""
    import torch

    try:
        check_device_name(name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but no CUDA device is available; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                            f"cuda:{torch.cuda.device_count() - 1}")
    return device


def device_name(device) -> str:
    """The GPU's name, or "cpu": what keys the records kept per device (compile caches, the
    fast path's timings), since what is fastest or compiled for one GPU is not for another."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_facts(device) -> dict[str, str]:
    """What a bug report about speed needs to know of `device` and the torch driving it."""
    import platform

    import torch

    facts = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts |= {"gpu": props.name, "compute capability": f"{props.major}.{props.minor}",
                  "memory": f"{props.total_memory / 2**30:.1f} GiB",
                  "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}
    else:
        facts |= {"cpu": platform.machine() or "unknown", "threads": str(torch.get_num_threads())}
    return facts

