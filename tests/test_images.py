"""Grids of images: pegasus.images.tile lays images out as torchvision's make_grid does."""

import pytest
import torch

from pegasus.images import tile


@pytest.mark.parametrize("n,c,nrow,padding,pad_value", [(1, 3, 8, 2, 0.0), (5, 3, 3, 2, 0.0),
                                                        (9, 3, 8, 2, 0.0), (7, 1, 2, 1, 1.0),
                                                        (4, 3, 4, 0, 0.5)])
def test_tile_is_torchvisions_make_grid(n, c, nrow, padding, pad_value):
    from torchvision.utils import make_grid

    images = torch.rand(n, c, 5, 6, generator=torch.Generator().manual_seed(n))
    expected = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    assert torch.equal(tile(images, nrow=nrow, padding=padding, pad_value=pad_value), expected)
