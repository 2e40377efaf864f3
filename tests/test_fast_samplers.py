"""The fast samplers (heun, pc, cas) beside annealed Langevin, on analytic scores: a Gaussian
mixture whose perturbed score is exact, and a Gaussian whose sample moments are known."""

import math
import re

import pytest
import torch

from gmm import GaussianMixture
from pegasus.errors import FieldError
from pegasus.noise.schedule import Schedule, karras_sigmas
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.cas import consistent_annealed
from pegasus.samplers.heun import heun_sampler
from pegasus.samplers.plan import plan_sampler
from pegasus.tasks.interpolation import blend_strips, slerp_strips
from tiny import on_levels

# Centred (weighted mean 0), so that the ODE's start sigma_1 z matches p_sigma_1 closely:
# a deterministic sampler cannot correct a start that is off by the data's mean.
MIXTURE = GaussianMixture(weights=[0.2, 0.3, 0.5], means=[[-4.4, -2.5], [3.6, -2.5], [-0.4, 2.5]],
                          stds=[0.6, 0.6, 0.6])
SCHEDULE = Schedule(sigma_max=50.0, sigma_min=0.01, levels=100, steps_per_level=5, eps=2e-5)
LEVELS = on_levels(SCHEDULE)


def score(x, sigma):
    return MIXTURE.score(x, sigma)


def _sample(name, steps, n=6000, seed=2, **options):
    plan = plan_sampler(name, SCHEDULE, steps, **options)
    g = torch.Generator().manual_seed(seed)
    x0 = plan.start_point(torch.rand(n, 2, generator=g), torch.randn(n, 2, generator=g))
    return plan, plan.run(score, x0, generator=g)


@pytest.mark.parametrize("name,steps,most", [("heun", 50, 50), ("pc", 200, 200), ("cas", 60, 60),
                                             ("als", None, 501)])
def test_each_sampler_recovers_the_mixture_weights(name, steps, most):
    """Within 2 points on 6000 samples (one share's standard error is at most 0.65 points)."""
    plan, x = _sample(name, steps)
    assert plan.evaluations <= most
    shares = torch.bincount(MIXTURE.nearest(x), minlength=3).double() / len(x)
    assert torch.all((shares - MIXTURE.weights).abs() < 0.02), (name, shares.tolist())
    spread = (x.double() - MIXTURE.means[MIXTURE.nearest(x)]).norm(dim=1).median()
    assert spread < 1.3 * 0.6 * 1.1774  # the median radius of a 2-D Gaussian is 1.1774 std


def test_heun_lands_on_the_analytic_mean_and_variance_of_a_gaussian():
    """Data N(m, s^2): the perturbed score is -(x - m) / (s^2 + sigma^2), and the ODE carries
    each point exactly to m + (x0 - m) sqrt(s^2 + sigma_L^2) / sqrt(s^2 + sigma_1^2): N(m, s^2 +
    sigma_1^2) onto N(m, s^2 + sigma_L^2). Heun on 40 Karras sigmas lands there."""
    m, s, top, bottom = 0.3, 0.2, 20.0, 0.01

    def gaussian(x, sigma):
        return -(x - m) / (s**2 + sigma.view(-1, *([1] * (x.dim() - 1))) ** 2)

    g = torch.Generator().manual_seed(0)
    x0 = m + math.sqrt(top**2 + s**2) * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    x = heun_sampler(gaussian, x0, karras_sigmas(top, bottom, 40).double(), denoise=False)
    exact = m + (x0 - m) * math.sqrt(s**2 + bottom**2) / math.sqrt(s**2 + top**2)
    assert abs(x.mean().item() - m) < 0.005
    assert abs(x.var().item() / exact.var().item() - 1) < 0.02
    assert abs(x.var().item() / (s**2 + bottom**2) - 1) < 0.03  # the analytic variance


@pytest.mark.parametrize("name,options", [("als", {}), ("heun", {}), ("heun", {"churn": 10.0}),
                                          ("pc", {}), ("cas", {}), ("dpmpp-2m", {}),
                                          ("dpmpp-2m-sde", {}), ("ipndm", {})])
def test_seeded_samplers_are_bit_reproducible(name, options):
    steps = 61 if name == "als" else 30
    a = _sample(name, steps, n=64, seed=5, **options)[1]
    assert torch.equal(a, _sample(name, steps, n=64, seed=5, **options)[1])
    if name not in ("heun", "dpmpp-2m", "ipndm") or options:  # an ODE: deterministic from its start
        assert not torch.equal(a, _sample(name, steps, n=64, seed=6, **options)[1])


def test_budgets_and_grids():
    assert plan_sampler("heun", SCHEDULE, 35).evaluations == 35  # 18 Karras sigmas
    assert len(plan_sampler("heun", SCHEDULE, 35).sigmas) == 18
    assert plan_sampler("pc", SCHEDULE, 200).evaluations == 200
    assert plan_sampler("cas", SCHEDULE, 60).evaluations == 60
    # Grids keep to the levels a discrete network knows: 100 levels allow at most 101 cas
    # evaluations; a network that knows every sigma walks the sampler's own grid.
    assert plan_sampler("cas", SCHEDULE, 200, round_sigma=LEVELS).evaluations == 101
    assert set(plan_sampler("heun", SCHEDULE, 35, round_sigma=LEVELS).sigmas.tolist()) <= set(
        SCHEDULE.sigmas().tolist())
    assert plan_sampler("cas", SCHEDULE, 200).evaluations == 200
    assert plan_sampler("als", SCHEDULE).evaluations == SCHEDULE.evaluations == 501
    coarse = plan_sampler("als", SCHEDULE, 101)  # 20 levels of T = 5, eps re-planned
    assert coarse.evaluations == 101 and len(coarse.sigmas) == 20
    assert coarse.options["eps"] > SCHEDULE.eps  # fewer levels, larger gamma, larger step
    k = karras_sigmas(50.0, 0.01, 18)
    assert k[0].item() == pytest.approx(50.0) and k[-1].item() == pytest.approx(0.01)
    assert torch.all(k[1:] < k[:-1])
    assert plan_sampler("heun", SCHEDULE).stochastic is False
    assert plan_sampler("heun", SCHEDULE, churn=5.0).stochastic is True


def test_a_sampler_written_with_its_options_plans_as_options_given_in_python():
    written = plan_sampler("heun[churn=10, s_min=0.05,s_max=1]", SCHEDULE, 15)
    given = plan_sampler("heun", SCHEDULE, 15, churn=10, s_min=0.05, s_max=1)
    assert written.options == given.options and torch.equal(written.sigmas, given.sigmas)
    assert written.stochastic and written.options["churn"] == 10
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    x = torch.zeros(4, 2)
    torch.testing.assert_close(written.run(score, x, generator=g[0]),
                               given.run(score, x, generator=g[1]), rtol=0, atol=0)
    assert plan_sampler("dpmpp-2m[grid=karras]", SCHEDULE, 14).options["grid"] == "karras"


@pytest.mark.parametrize("name,steps,needle", [("ddim", None, "is not one of"),
                                               ("heun", 0, "between 1 and 100,000"),
                                               ("heun", 2, "too few"),
                                               ("ddim[eta=1]", None, "is not one of"),
                                               ("heun[eta=1]", None, "takes no option 'eta'; "
                                                "its options: churn, denoise, s_max, s_min, s_noise"),
                                               ("heun[churn=lots]", None, "must be a number"),
                                               ("dpmpp-2m[grid=3]", None, "must be a word"),
                                               ("heun[churn]", None, "is not KEY=VALUE"),
                                               ("heun[churn=-1]", None, "must be 0 or more"),
                                               ("heun[churn=nan]", None, "must be 0 or more"),
                                               ("pc[corrector_steps=0.5]", None,
                                                "must be a whole number"),
                                               ("cas[eta=0.01]", 20, "eta must be in"),
                                               ("als[steps_per_level=2]", None,
                                                "takes no option 'steps_per_level'"),
                                               ("heun[churn=1", None, "NAME[KEY=VALUE,...]")])
def test_bad_sampler_requests(name, steps, needle):
    with pytest.raises(FieldError, match=re.escape(needle)):
        plan_sampler(name, SCHEDULE, steps)


def test_cas_refuses_an_inconsistent_eta():
    with pytest.raises(FieldError, match="eta must be in"):  # before any work, as a plan
        plan_sampler("cas", SCHEDULE, 20, eta=0.01)
    plan = plan_sampler("cas", SCHEDULE, 20)  # the pure function checks its own callers too
    with pytest.raises(ValueError, match="eta must be in"):
        consistent_annealed(score, torch.zeros(2, 2), plan.sigmas, eta=0.01)


@pytest.mark.parametrize("name,options", [("pc", {}), ("cas", {}), ("heun", {"churn": 20.0})])
def test_eq4_blends_with_every_stochastic_sampler(name, options):
    """Column 0 is the plain chain on stream p, for any sampler that injects noise."""
    plan = plan_sampler(name, SCHEDULE, 30, **options)
    x0 = plan.start_point(None, torch.randn(3, 2, generator=torch.Generator().manual_seed(9)))
    gp, gq = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    strips = blend_strips(score, x0, plan, n=3, noise_p=gaussian_noise_sampler(x0, gp),
                          noise_q=gaussian_noise_sampler(x0, gq))
    plain = plan.run(score, x0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(strips[:, 0], plain, rtol=0, atol=1e-5)
    assert not torch.allclose(strips[:, 1], strips[:, 0])


def test_slerp_blends_the_ode_from_interpolated_starts():
    plan = plan_sampler("heun", SCHEDULE, 21)
    g = torch.Generator().manual_seed(3)
    zp, zq = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    strips = slerp_strips(score, zp, zq, plan, n=3)
    torch.testing.assert_close(strips[:, 0], plan.run(score, plan.start_point(None, zp)))
    torch.testing.assert_close(strips[:, -1], plan.run(score, plan.start_point(None, zq)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="injects none"):
        blend_strips(score, zp, plan, n=3, noise_p=lambda: zp, noise_q=lambda: zq)


# Data like images: every coordinate near 0.6, far from 0 on the scale of sigma_1 (whose sphere
# of radius sigma_1 sqrt(D) the start lies on). Two components, 0.4 apart per coordinate.
BRIGHT = GaussianMixture(weights=[0.5, 0.5], means=[[0.4] * 8, [0.8] * 8], stds=[0.05, 0.05])
BRIGHT_SCHEDULE = Schedule(sigma_max=1.5, sigma_min=0.01, levels=60, steps_per_level=3, eps=2e-5)


@pytest.mark.parametrize("name,steps", [("heun", 29), ("pc", 112), ("cas", 32)])
def test_samplers_started_at_the_datas_centre_land_on_its_mean(name, steps):
    """p_sigma_1 is the data blurred by N(0, sigma_1^2): centred on the data's mean (0.6 here),
    not on 0. Started at centre + sigma_1 z, each sampler lands on the mixture with its weights
    and so on its mean; the ODE started at 0 + sigma_1 z carries the offset to the end (it lands
    mostly on the component nearer 0), which is what made heun's images too dark; pc and cas
    mix part of the way back."""
    plan = plan_sampler(name, BRIGHT_SCHEDULE, steps)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4000, 8, generator=g)

    def mean_of(centre):
        x = plan.run(BRIGHT.score, plan.start_point(None, z, centre), generator=g)
        return x.mean().item(), torch.bincount(BRIGHT.nearest(x), minlength=2).double() / len(x)

    mean, shares = mean_of(0.6)
    assert abs(mean - 0.6) < 0.01, (name, mean)
    assert torch.all((shares - 0.5).abs() < 0.03), (name, shares.tolist())
    assert mean_of(0.0)[0] < 0.57  # heun 0.44, pc 0.55, cas 0.52


def _free(name, steps, n=6000, seed=2, **options):
    """A sampler on its own grid (the exact score knows every sigma), from sigma_1 z."""
    plan = plan_sampler(name, SCHEDULE, steps, **options)
    g = torch.Generator().manual_seed(seed)
    x0 = plan.start_point(None, torch.randn(n, 2, generator=g), 0.0)
    return plan, plan.run(score, x0, generator=g)


@pytest.mark.parametrize("name,grid", [("dpmpp-2m", "log-uniform"), ("dpmpp-2m", "karras"),
                                       ("dpmpp-2m-sde", "log-uniform"), ("heun", None),
                                       ("ipndm", None)])
def test_the_ode_and_sde_solvers_recover_the_mixture_weights_in_about_20_evaluations(name, grid):
    options = {"grid": grid} if grid else {}
    plan, x = _free(name, 21 if name == "heun" else 20, **options)
    assert plan.evaluations == (21 if name == "heun" else 20)  # unsnapped: the whole budget
    shares = torch.bincount(MIXTURE.nearest(x), minlength=3).double() / len(x)
    assert torch.all((shares - MIXTURE.weights).abs() < 0.02), (name, grid, shares.tolist())
    spread = (x.double() - MIXTURE.means[MIXTURE.nearest(x)]).norm(dim=1).median()
    assert spread < 1.3 * 0.6 * 1.1774


@pytest.mark.parametrize("name,steps", [("dpmpp-2m", 24), ("dpmpp-2m-sde", 48), ("ipndm", 24)])
def test_the_new_solvers_carry_a_gaussian_onto_its_analytic_moments(name, steps):
    """Data N(m, s^2) in 4 dimensions: the exact score of its perturbation; from N(m, s^2 +
    sigma_1^2) both end on N(m, s^4 / (s^2 + sigma_L^2)), Tweedie's last step included. The ODE
    carries each point to its exact image, m + (x0 - m) sqrt((s^2 + sigma_L^2) / (s^2 +
    sigma_1^2)) then Tweedie, to second order: 4x closer for twice the steps."""
    m, s, top, bottom = 0.3, 0.2, 20.0, 0.01

    def gaussian(x, sigma):
        return -(x - m) / (s**2 + sigma.view(-1, *([1] * (x.dim() - 1))) ** 2)

    schedule = Schedule(top, bottom, 50, 3, 1e-5)
    g = torch.Generator().manual_seed(0)
    x0 = m + math.sqrt(top**2 + s**2) * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    x = plan_sampler(name, schedule, steps).run(gaussian, x0, generator=g)
    assert abs(x.mean().item() - m) < 0.005
    assert abs(x.var().item() / (s**4 / (s**2 + bottom**2)) - 1) < 0.03
    if name in ("dpmpp-2m", "ipndm"):
        at_bottom = m + (x0 - m) * math.sqrt((s**2 + bottom**2) / (s**2 + top**2))
        exact = m + s**2 / (s**2 + bottom**2) * (at_bottom - m)

        def error(n):
            y = plan_sampler(name, schedule, n).run(gaussian, x0)
            return ((y - exact).norm() / (exact - m).norm()).item()

        assert error(steps) < 0.01 and error(2 * steps) < error(steps) / 3.5
        if name == "ipndm":  # its 1st-order form (Euler) is first order, and far off
            first = plan_sampler(name, schedule, steps, order=1)
            assert ((first.run(gaussian, x0) - exact).norm() / (exact - m).norm()) > 3 * error(steps)


def test_a_continuous_run_walks_its_own_grid_and_a_discrete_unet_keeps_to_its_levels():
    from pegasus.config import build_config
    from pegasus.model.build import build_score_model
    from pegasus.run.trained import TrainedRun

    def run(training, backbone):
        config = build_config(None, overrides=[f'model.backbone="{backbone}"',
                                               f'noise.training="{training}"', "noise.sigma_max=10.0",
                                               "noise.levels=20", "noise.eps=1e-5"])
        return TrainedRun(config, build_score_model(config, device="meta")[0],
                          Schedule.from_noise(config.noise), 0, None,
                          torch.device("cpu"))

    levels = set(run("levels", "unet").schedule.sigmas().tolist())
    for training, backbone, snapped in (("levels", "unet", True), ("log-uniform", "unet", False),
                                        ("log-normal", "unet", False),
                                        ("levels", "refinenet", False)):
        trained = run(training, backbone)
        assert trained.model.knows_every_sigma is not snapped
        plan = trained.plan("heun", 61)
        on_levels = set(plan.sigmas.tolist()) <= levels
        assert on_levels is snapped, (training, backbone)
        assert (plan.evaluations < 61) is snapped  # 20 levels hold fewer grid points
