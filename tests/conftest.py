import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained for 2 steps, one per test module (modules add guides, judges and
    exports to it)."""
    from pegasus.training.trainer import train
    from tiny import tiny_config

    path = tmp_path_factory.mktemp("run")
    train(tiny_config("train.iters=2"), path, tensorboard=False)
    return path
