import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each, and for the processes they start, or their
    # thread pools contend and each runs far slower than half speed.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    # xdist's workers are given COLUMNS=80, which the CLI's console would take as its fixed
    # width when imported; tests that set COLUMNS for one invocation need it read then.
    os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory):
    """The user's cache folder (the compile cache's signing key: fastpath/cache.py) is a fresh
    one of the test session's, never the real ~/.cache; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained for 2 steps, one per test module (modules add guides, judges and
    exports to it)."""
    from pegasus.training import train
    from tiny import tiny_config

    path = tmp_path_factory.mktemp("run")
    train(tiny_config("train.iters=2"), path, tensorboard=False)
    return path
