import pytest
import torch

from pegasus.config import DataConfig
from pegasus.data import DatasetError, load_images
from pegasus.data.sprites import draw_sprites


def test_sprites_are_deterministic_and_seeded():
    a = draw_sprites("horse", 8, 32, seed=3)
    assert torch.equal(a, draw_sprites("horse", 8, 32, seed=3))
    assert not torch.equal(a, draw_sprites("horse", 8, 32, seed=4))
    assert a.dtype == torch.uint8 and a.shape == (8, 3, 32, 32)


@pytest.mark.parametrize("res", [8, 16, 48, 96])
def test_sprites_at_any_resolution(res):
    assert draw_sprites("bird", 2, res).shape == (2, 3, res, res)


def test_classes_differ_and_each_image_varies():
    horses = draw_sprites("horse", 64, 32).float()
    birds = draw_sprites("bird", 64, 32).float()
    # Images differ from one another (random colour, pose, position, background) ...
    assert horses.flatten(1).std(0).mean() > 10
    # ... and the object covers a visible part of each image, not a speck.
    background = torch.stack([horses[:, :, 0, 0], horses[:, :, 0, -1]]).mean(0)
    assert ((horses - background[..., None, None]).abs().sum(1) > 60).float().mean() > 0.05
    assert not torch.allclose(horses.mean(0), birds.mean(0), atol=2)


def test_load_images_filters_by_class_name():
    data = load_images(DataConfig(dataset="sprites", classes=["bird"], res=16, size=10))
    assert data.counts() == {"bird": 10}
    assert torch.equal(data.images, draw_sprites("bird", 10, 16))


def test_unknown_class_lists_the_valid_ones():
    with pytest.raises(DatasetError, match="valid classes: horse, bird"):
        load_images(DataConfig(dataset="sprites", classes=["cat"], res=16, size=4))
