import os
import subprocess
import sys

import pytest

from pegasus.registry import load_registry
from pegasus.testing import check_backbone


def test_the_plugin_is_discovered_through_its_entry_point():
    registry = load_registry(env={})
    spec, plugin = registry.get("resnet")
    assert plugin.distribution == "pegasus-resnet" and plugin.status == "ok"
    assert "register_backbones" in plugin.hooks


def test_resnet_passes_the_conformance_check():
    spec, _ = load_registry(env={}).get("resnet")
    check_backbone(spec, options={"width": 16, "blocks": 2})


@pytest.mark.slow
def test_trains_a_few_steps_through_the_cli(tmp_path):
    cmd = [sys.executable, "-m", "pegasus", "train", "--run", str(tmp_path), "--backbone", "resnet",
           "--dataset", "sprites", "--res", "16", "--iters", "3", "--batch-size", "4",
           "--set", "model.width=16", "--set", "model.blocks=2", "--set", "data.size=8",
           "--set", "noise.levels=4", "--set", "noise.sigma_max=10.0", "--set", "train.device=\"cpu\"",
           "--set", "train.sample_every=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "checkpoint-00000003.pt").is_file()
    sample = subprocess.run([sys.executable, "-m", "pegasus", "sample", "--run", str(tmp_path),
                             "--num", "2", "--out", str(tmp_path / "s.png")],
                            capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr
    # Without the plugin, the checkpoint names the package to install.
    env = {**os.environ, "PEGASUS_DISABLE_PLUGINS": "resnet"}
    missing = subprocess.run([sys.executable, "-m", "pegasus", "sample", "--run", str(tmp_path)],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 2 and "pip install pegasus-resnet" in missing.stderr
    assert "Traceback" not in missing.stderr
