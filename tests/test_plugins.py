"""Plugin discovery: each plugin loads on its own; failures and conflicts are reported."""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from pegasus.registry import RegistryError, load_registry, registry
from pegasus.testing import check_backbone

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    import pegasus

    @dataclass(frozen=True)
    class Config:
        width: int = 4

    def build(config, *, res, channels):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

            def forward(self, x, sigma):
                return self.conv(x)

        return Net()

    @pegasus.hookimpl
    def register_backbones(register):
        register(pegasus.Backbone(name="{name}", description="test", factory=build,
                                  config=Config, resolutions=(16,)))
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """Modules importable from tmp_path, and a helper to make entry points to them."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(module: str, backbone: str | None = None, body: str | None = None):
        text = body if body is not None else PLUGIN.replace("{name}", backbone or module)
        (tmp_path / f"{module}.py").write_text(text)
        return metadata.EntryPoint(name=module, value=module, group="pegasus")

    return make


def test_builtins_register_through_the_same_hook():
    reg = load_registry(entry_points=[], env={})
    builtin = reg.plugins[0]
    assert builtin.name == "builtin"
    assert builtin.hooks == ["register_backbones", "register_objectives"]
    assert {"refinenet", "unet"} <= set(builtin.backbones)
    assert builtin.objectives == ["dsm", "ect"] and set(reg.objectives) == {"dsm", "ect"}


def test_a_plugin_adds_a_backbone(plugin_dir):
    reg = load_registry(entry_points=[plugin_dir("tiny_one")], env={})
    spec, plugin = reg.get("tiny_one")
    assert plugin.status == "ok" and plugin.backbones == ["tiny_one"]
    check_backbone(spec)


def test_a_broken_import_is_reported_and_the_rest_work(plugin_dir):
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz", group="pegasus")
    reg = load_registry(entry_points=[broken, plugin_dir("fine_one")], env={})
    status = {p.name: p.status for p in reg.plugins}
    assert status == {"builtin": "ok", "broken": "error", "fine_one": "ok"}
    (line,) = reg.problems()
    assert "plugin 'broken'" in line and "ModuleNotFoundError" in line
    assert "PEGASUS_DISABLE_PLUGINS=broken" in line
    reg.get("fine_one")


def test_a_hook_that_raises_is_reported(plugin_dir):
    body = ("import pegasus\n@pegasus.hookimpl\n"
            "def register_backbones(register):\n    raise RuntimeError('boom')\n")
    reg = load_registry(entry_points=[plugin_dir("raises", body=body)], env={})
    assert [p.status for p in reg.plugins] == ["ok", "error"]
    assert "RuntimeError: boom" in reg.problems()[0]
    reg.get("unet")


def test_two_plugins_claiming_one_name_are_reported_not_resolved(plugin_dir):
    eps = [plugin_dir("twin_a", "twin"), plugin_dir("twin_b", "twin")]
    reg = load_registry(entry_points=eps, env={})
    assert "twin" not in reg.backbones
    assert any("'twin' is claimed by plugins 'twin_a'" in line for line in reg.problems())
    with pytest.raises(RegistryError, match="claimed by several plugins"):
        reg.get("twin")
    # Disabling one resolves it.
    reg = load_registry(entry_points=eps, env={"PEGASUS_DISABLE_PLUGINS": "twin_b"})
    assert reg.get("twin")[1].name == "twin_a"


def test_a_plugin_claiming_a_builtin_name_is_a_conflict(plugin_dir):
    reg = load_registry(entry_points=[plugin_dir("shadow", "unet")], env={})
    with pytest.raises(RegistryError, match="claimed by several plugins"):
        reg.get("unet")


def test_environment_selects_plugins(plugin_dir):
    eps = [plugin_dir("sel_a"), plugin_dir("sel_b")]
    reg = load_registry(entry_points=eps, env={"PEGASUS_PLUGINS": "sel_b"})
    assert {p.name: p.status for p in reg.plugins} == {
        "builtin": "ok", "sel_a": "disabled", "sel_b": "ok"}
    reg = load_registry(entry_points=eps, env={"PEGASUS_PLUGINS": ""})
    assert set(reg.backbones) == {"refinenet", "unet"}


@pytest.mark.parametrize("name", ["refinenet", "unet"])
def test_every_builtin_backbone_passes_the_conformance_check(name):
    spec, _ = registry().get(name)
    small = {"refinenet": {"ngf": 4}, "unet": {"width": 8, "emb_dim": 16, "heads": 2,
                                                   "head_dim": 4}}[name]
    check_backbone(spec, options=small)


@pytest.mark.slow
def test_a_broken_installed_plugin_does_not_break_the_cli(tmp_path):
    """A distribution whose entry point cannot import: --help works and names the culprit."""
    dist = tmp_path / "pegasus_broken-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pegasus-broken\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[pegasus]\nbroken = no_such_module_for_pegasus\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("PEGASUS_DISABLE_PLUGINS", None)
    run = [sys.executable, "-m", "pegasus"]
    done = subprocess.run(run + ["--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "Commands" in done.stdout
    assert "plugin 'broken' (pegasus-broken 0.3) failed" in done.stderr
    assert "Traceback" not in done.stderr
    listed = subprocess.run(run + ["plugins", "--json"], capture_output=True, text=True, env=env,
                            timeout=120)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["broken"]["status"] == "error" and rows["broken"]["version"] == "0.3"
    env["PEGASUS_DISABLE_PLUGINS"] = "broken"
    quiet = subprocess.run(run + ["--help"], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0 and "failed" not in quiet.stderr
