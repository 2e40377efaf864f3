"""Plugin discovery and the registry of backbones and objectives.

Plugins are entry points in the `pegasus` group; each loads on its own, so one that fails to
import or to register is reported (plugin, version, error, how to disable it) and the rest
work. Two plugins that claim one backbone (or objective) name are reported as a conflict,
never resolved silently. Environment variables choose what loads:
  PEGASUS_PLUGINS=a,b          load only these entry points (empty: none)
  PEGASUS_DISABLE_PLUGINS=a,b  skip these
The built-in backbones and objectives register through the same hooks, as the plugin named
`builtin`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata

import pluggy

from pegasus import hookspecs
from pegasus.errors import RegistryError
from pegasus.hookspecs import Backbone, Objective

ENTRY_POINT_GROUP = "pegasus"
BUILTIN = "builtin"


@dataclass
class Plugin:
    name: str
    distribution: str
    version: str
    status: str = "ok"  # ok | error | disabled
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)

    def record(self, backbone: str) -> dict[str, str]:
        """What a checkpoint or weights file stores about where `backbone` comes from, so that
        loading it without the plugin can say which package to install."""
        return {"name": backbone, "plugin": self.name, "distribution": self.distribution,
                "version": self.version}

    def problem(self) -> str:
        return (
            f"plugin {self.name!r} ({self.distribution} {self.version}) failed: {self.error}; "
            f"disable it with PEGASUS_DISABLE_PLUGINS={self.name}"
        )


# What the plugins register: the hook each kind comes through and the type it must be.
KINDS = {"backbone": ("register_backbones", Backbone), "objective": ("register_objectives", Objective)}


@dataclass
class Registry:
    plugins: list[Plugin]
    backbones: dict[str, tuple[Backbone, Plugin]]
    conflicts: dict[str, list[Plugin]]
    unknown: dict[str, list[str]] = field(default_factory=dict)  # variable -> names not installed
    objectives: dict[str, tuple[Objective, Plugin]] = field(default_factory=dict)
    objective_conflicts: dict[str, list[Plugin]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        lines = [p.problem() for p in self.plugins if p.status == "error"]
        installed = ", ".join(p.name for p in self.plugins if p.name != BUILTIN) or "none"
        for variable, names in self.unknown.items():
            lines += [f"{variable} names {name!r}, but no plugin of that name is installed; "
                      f"installed plugins: {installed}" for name in names]
        for kind, conflicts in (("backbone", self.conflicts),
                                ("objective", self.objective_conflicts)):
            for name, claimants in conflicts.items():
                who = " and ".join(f"{p.name!r} ({p.distribution})" for p in claimants)
                lines.append(f"{kind} {name!r} is claimed by plugins {who}; disable all but one "
                             f"with PEGASUS_DISABLE_PLUGINS")
        return lines

    def get(self, name: str) -> tuple[Backbone, Plugin]:
        return _claimed("backbone", name, self.backbones, self.conflicts)

    def objective(self, name: str) -> tuple[Objective, Plugin]:
        return _claimed("objective", name, self.objectives, self.objective_conflicts)


def _claimed(kind: str, name: str, found: dict, conflicts: dict) -> tuple:
    if name in conflicts:
        who = ", ".join(p.name for p in conflicts[name])
        raise RegistryError(f"{kind} {name!r} is claimed by several plugins ({who}); disable all "
                            f"but one with PEGASUS_DISABLE_PLUGINS")
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise RegistryError(f"unknown {kind} {name!r}; available: {known}")
    return found[name]


def _env_list(env: Mapping[str, str], key: str) -> set[str] | None:
    if key not in env:
        return None
    return {part.strip() for part in env[key].split(",") if part.strip()}


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else ("unknown", "unknown")


def load_registry(
    entry_points: Iterable[metadata.EntryPoint] | None = None,
    env: Mapping[str, str] | None = None,
) -> Registry:
    """Load every plugin, each on its own, and collect their backbones and objectives."""
    from pegasus.backbones import builtin
    from pegasus.objectives import builtin as builtin_objectives
    from pegasus.version import __version__

    env = os.environ if env is None else env
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    only = _env_list(env, "PEGASUS_PLUGINS")
    disabled = _env_list(env, "PEGASUS_DISABLE_PLUGINS") or set()

    pm = pluggy.PluginManager("pegasus")
    pm.add_hookspecs(hookspecs)
    plugins = {BUILTIN: Plugin(BUILTIN, "pegasus-score", __version__)}
    # The plugin each registered module belongs to: the built-ins are two modules of one plugin.
    owners = {}
    for module in (builtin, builtin_objectives):
        owners[pm.register(module, name=module.__name__)] = plugins[BUILTIN]
    for ep in entry_points:
        if ep.name in plugins:  # an installed copy of ourselves, or a name taken twice
            continue
        plugin = Plugin(ep.name, *_distribution(ep))
        plugins[ep.name] = plugin
        if ep.name in disabled or (only is not None and ep.name not in only):
            plugin.status = "disabled"
            continue
        try:
            owners[pm.register(ep.load(), name=ep.name)] = plugin
        except Exception as e:  # noqa: BLE001 - any failure of a third-party import is reported
            plugin.status, plugin.error = "error", f"{type(e).__name__}: {e}"

    for name, module in pm.list_name_plugin():
        plugin = owners[name]
        plugin.hooks = sorted({*plugin.hooks, *(h.name for h in pm.get_hookcallers(module) or [])})
    found = {kind: _collect(pm, owners, kind) for kind in KINDS}
    backbones, conflicts = found["backbone"]
    objectives, objective_conflicts = found["objective"]
    unknown = {variable: sorted(names - set(plugins))
               for variable, names in (("PEGASUS_PLUGINS", only or set()),
                                       ("PEGASUS_DISABLE_PLUGINS", disabled))
               if names - set(plugins)}
    return Registry(list(plugins.values()), backbones, conflicts, unknown, objectives,
                    objective_conflicts)


def _collect(pm: pluggy.PluginManager, owners: dict[str, Plugin], kind: str) -> tuple[dict, dict]:
    """Every plugin's declarations of one kind (its hook called on its own, so that one that
    raises cannot hide the others), as the names claimed once and those claimed by several."""
    hook, cls = KINDS[kind]
    claims: dict[str, list[tuple[object, Plugin]]] = {}
    for impl in getattr(pm.hook, hook).get_hookimpls():
        plugin = owners[impl.plugin_name]
        if plugin.status == "error":
            continue
        declared: list = []
        try:
            impl.function(**{arg: declared.append for arg in impl.argnames})
            for spec in declared:
                if not isinstance(spec, cls):
                    raise TypeError(f"register() takes a pegasus.{cls.__name__}, got "
                                    f"{type(spec).__name__}")
        except Exception as e:  # noqa: BLE001 - any failure of a third-party hook is reported
            plugin.status, plugin.error = "error", f"{type(e).__name__}: {e}"
            continue
        for spec in declared:
            getattr(plugin, f"{kind}s").append(spec.name)
            claims.setdefault(spec.name, []).append((spec, plugin))
    return ({name: c[0] for name, c in claims.items() if len(c) == 1},
            {name: [p for _, p in c] for name, c in claims.items() if len(c) > 1})


@cache
def registry() -> Registry:
    """The process-wide registry, loaded once."""
    return load_registry()


def get_backbone(name: str) -> tuple[Backbone, Plugin]:
    return registry().get(name)


def get_objective(name: str) -> tuple[Objective, Plugin]:
    return registry().objective(name)
