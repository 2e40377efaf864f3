"""pegasus-resnet: registers the `resnet` backbone. Only declarations here; torch is imported
by the factory, so loading the plugin costs nothing when the CLI starts."""

from dataclasses import dataclass

import pegasus


@dataclass(frozen=True)
class ResNetConfig:
    width: int = 64  # channels of every block
    blocks: int = 6  # residual blocks, all at full resolution
    groups: int = 8  # GroupNorm groups


def build(config: ResNetConfig, *, res: int, channels: int):
    from pegasus_resnet.model import ResNet

    return ResNet(channels, config.width, config.blocks, config.groups)


@pegasus.hookimpl
def register_backbones(register):
    register(pegasus.Backbone(
        name="resnet",
        description="full-resolution residual net with FiLM log-sigma conditioning (example plugin)",
        factory=build,
        config=ResNetConfig,
        resolutions=(16, 24, 32, 48, 64),
    ))
