"""The samplers, one module each, every one a pure function over an explicit sigma tensor with
a seeded generator and an optional callback (as in k-diffusion), and the `SPEC` that declares
how it fits a run (spec.py). `plan.py` fits one to a run's schedule and an evaluation budget;
run/job.py draws a plan's images in batches, each image from its own seeded stream.

A sampler's name is its module's, an underscore written as a hyphen (dpmpp_2m.py is
`dpmpp-2m`), so the names are known without importing torch: the CLI's help lists them and
`pegasus samplers` describes each. Adding a sampler is adding its module (and its test).

`steps` is a budget of network evaluations per image: each sampler takes the largest grid that
fits in it (als keeps the run's T steps per level and re-chooses eps for its coarser levels by
Technique 4).
"""

from __future__ import annotations

import importlib
from pathlib import Path

HELPERS = ("spec", "plan", "calls")  # the modules here that are not samplers


def _names() -> tuple[str, ...]:
    modules = (p.stem for p in Path(__file__).parent.glob("*.py"))
    return tuple(sorted(m.replace("_", "-") for m in modules
                        if m not in HELPERS and not m.startswith("_")))


SAMPLERS = _names()


def split_sampler(text: str) -> tuple[str, dict]:
    """A sampler written with its options, as the CLI's --sampler takes it, "heun[churn=10,
    s_min=0.05]", "dpmpp-2m[grid=karras]" or "consistency[sigmas=[0.8, 0.2]]", as its name
    and options (a value in TOML syntax when it parses, else a string); a plain name has
    none."""
    from pegasus.coerce import parse_value
    from pegasus.errors import FieldError

    name, bracket, rest = text.partition("[")
    if not bracket:
        return text, {}
    if not rest.endswith("]"):
        raise FieldError("sampler", f"{text!r}: write a sampler's options as NAME[KEY=VALUE,...]")
    options = {}
    for item in filter(None, (part.strip() for part in _top_level(rest[:-1]))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise FieldError("sampler", f"{text!r}: the option {item!r} is not KEY=VALUE")
        options[key.strip()] = parse_value(value.strip())
    return name.strip(), options


def _top_level(text: str) -> list[str]:
    """`text` split at the commas outside brackets: "a=1,b=[2, 3]" as "a=1" and "b=[2, 3]"."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def sampler_spec(name: str):
    """The SamplerSpec of sampler `name` (spec.py), options in brackets allowed; an unknown name
    is a FieldError."""
    name = split_sampler(name)[0]
    if name not in SAMPLERS:
        from pegasus.errors import FieldError

        raise FieldError("sampler", f"{name!r} is not one of {', '.join(SAMPLERS)}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}").SPEC
