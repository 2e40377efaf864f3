import math

import pytest
import torch

from pegasus.noise.techniques import (
    choose_eps,
    choose_gamma,
    choose_schedule,
    max_pairwise_distance,
    overlap,
    variance_ratio,
)


def test_cifar10_levels_within_ten_percent_of_the_published_232():
    plan = choose_schedule(dim=3072, sigma_max=50, steps_per_level=5, sigma_min=0.01)
    assert abs(plan.levels - 232) / 232 < 0.10, plan.levels


def test_cifar10_eps_within_three_percent_given_232_levels():
    plan = choose_schedule(dim=3072, sigma_max=50, steps_per_level=5, sigma_min=0.01, levels=232)
    assert plan.levels == 232
    assert abs(plan.eps - 6.2e-6) / 6.2e-6 < 0.03, plan.eps


def test_celeba_eps_within_three_percent_given_500_levels():
    plan = choose_schedule(dim=64 * 64 * 3, sigma_max=90, steps_per_level=5, levels=500)
    assert abs(plan.eps - 3.3e-6) / 3.3e-6 < 0.03, plan.eps


def test_technique_2_has_no_solution_below_five_dimensions():
    with pytest.raises(ValueError, match="at least 5"):
        choose_gamma(4)


@pytest.mark.parametrize("dim", [5, 8, 100, 768, 3072, 12288, 27648])
def test_gamma_meets_technique_2(dim):
    gamma = choose_gamma(dim)
    assert gamma > 1
    assert abs(overlap(gamma, dim) - 0.5) < 1e-6


@pytest.mark.parametrize("gamma,steps", [(1.04, 5), (1.2, 3), (1.5, 1), (1.01, 20)])
def test_eps_is_the_global_minimum_of_the_ratio_error(gamma, steps):
    """No eps on a dense brute-force grid over (0, sL^2) beats the chosen one."""
    sl = 0.01
    eps = choose_eps(gamma, sl, steps)
    chosen = abs(variance_ratio(eps, gamma, sl, steps) - 1)
    grid = torch.logspace(math.log10(sl**2 * 1e-12), math.log10(sl**2 * 0.999999), 200_000,
                          dtype=torch.float64)
    q = 1 - grid / sl**2
    c = 2 * grid / (sl**2 - sl**2 * q * q)
    brute = ((q ** (2 * steps)) * (gamma**2 - c) + c - 1).abs().min().item()
    assert chosen <= brute + 1e-9


def test_max_pairwise_distance_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(37, 3, 4, 4, generator=g)
    expected = torch.cdist(x.flatten(1).double(), x.flatten(1).double()).max().item()
    assert abs(max_pairwise_distance(x, chunk=5) - expected) < 1e-4
    u8 = (x * 255).round().to(torch.uint8)
    expected_u8 = torch.cdist(u8.flatten(1).double() / 255, u8.flatten(1).double() / 255).max()
    assert abs(max_pairwise_distance(u8, chunk=8) - expected_u8.item()) < 1e-4
