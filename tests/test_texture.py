"""The texture figures (pegasus/texture.py) on closed forms: white noise, pictures of one
colour, a known blur, a known scaling."""

import math

import pytest
import torch

from pegasus.texture import (
    TextureTally,
    compare,
    high_rings,
    neighbour_difference,
    periodogram,
    radial_average,
    rings,
)

S = 0.1  # the white noise's standard deviation


def _noise(n, seed, res=16):
    return 0.5 + S * torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64)


def _blurred(x):
    """A circular two-tap box blur along the rows: y = (x + x shifted one pixel right) / 2,
    whose power transfer is cos^2(pi k / W) at horizontal frequency k."""
    return (x + x.roll(1, dims=-1)) / 2


def test_white_noise_has_the_neighbour_difference_and_flat_spectrum_of_its_variance():
    x = _noise(2000, 0)
    # x_p - x_q ~ N(0, 2 S^2): E|.| = 2 S / sqrt(pi).
    assert neighbour_difference(x).mean().item() == pytest.approx(2 * S / math.sqrt(math.pi),
                                                                  rel=0.005)
    profile = radial_average(periodogram(x)).mean(dim=0)
    # Every ring but the mean's holds power S^2 (the channel mean removed: ring 0 is 0 and
    # 1/(H W) of the variance is lost from the rest).
    assert profile[0].item() == pytest.approx(0, abs=1e-12)
    torch.testing.assert_close(profile[1:], torch.full_like(profile[1:], S**2), rtol=0.03, atol=0)


def test_pictures_of_one_colour_have_no_grain_and_no_power():
    x = torch.full((4, 3, 16, 16), 0.3, dtype=torch.float64)
    assert neighbour_difference(x).abs().max().item() == 0
    assert periodogram(x).abs().max().item() == pytest.approx(0, abs=1e-30)
    uint8 = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert neighbour_difference(uint8).abs().max().item() == 0


def test_a_known_blur_lowers_the_grain_and_the_high_frequencies_by_its_closed_form():
    x = _blurred(_noise(2000, 1))
    # Across: (x_{j+1} - x_{j-1}) / 2 ~ N(0, S^2 / 2); down: four terms of S^2 / 4 ~ N(0, S^2).
    across, down = S / math.sqrt(math.pi), S * math.sqrt(2 / math.pi)
    assert neighbour_difference(x).mean().item() == pytest.approx((across + down) / 2, rel=0.005)
    k = torch.fft.fftfreq(16, dtype=torch.float64).view(1, -1) * 16
    transfer = torch.cos(math.pi * k / 16).square().expand(16, 16).clone()
    transfer[0, 0] = 0  # the channel mean, removed
    torch.testing.assert_close(periodogram(x).mean(dim=0), S**2 * transfer, rtol=0.1, atol=2e-4)
    expected = radial_average(S**2 * transfer)
    torch.testing.assert_close(radial_average(periodogram(x)).mean(dim=0)[1:], expected[1:],
                               rtol=0.05, atol=0)


def test_rings_and_their_average():
    ring = rings(16, 16)
    assert ring[0, 0] == 0 and ring[0, 8] == 8 and ring[8, 8] == 11  # the corner, beyond 8
    constant_on_rings = ring.double() * 2 + 1  # any function of the ring alone
    torch.testing.assert_close(radial_average(constant_on_rings),
                               torch.arange(9, dtype=torch.float64) * 2 + 1)
    assert high_rings(16) == slice(4, 9) and high_rings(32) == slice(8, 17)


def test_the_figures_of_scaled_noise_are_the_scale_and_the_same_set_compares_equal():
    data = TextureTally().add(_noise(400, 2)).table()
    same = compare(data, data, 16)
    assert same.grain == pytest.approx(1.0) and same.high_gap_db == pytest.approx(0.0, abs=1e-12)
    scaled = TextureTally().add(0.5 + 0.5 * (_noise(400, 2) - 0.5)).table()
    figures = compare(scaled, data, 16)
    assert figures.grain == pytest.approx(0.5)
    assert figures.high_gap_db == pytest.approx(20 * math.log10(0.5))
    blurred = compare(TextureTally().add(_blurred(_noise(400, 3))).table(), data, 16)
    assert blurred.grain < 0.7 and blurred.high_gap_db < -3


def test_the_spread_shrinks_as_the_root_of_the_sample_size():
    data = TextureTally().add(_noise(1600, 4)).table()
    small = compare(TextureTally().add(_noise(100, 5)).table(), data[:100], 16)
    large = compare(TextureTally().add(_noise(1600, 6)).table(), data, 16)
    assert abs(small.grain - 1) < 4 * small.grain_std and abs(large.grain - 1) < 4 * large.grain_std
    assert 2.5 < small.grain_std / large.grain_std < 6  # sqrt(16) = 4
    assert 2.5 < small.high_gap_std / large.high_gap_std < 6
    assert "neighbour-pixel difference" in large.describe() and "dB" in large.describe()
