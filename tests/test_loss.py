import math

import torch

from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import geometric_sigmas
from pegasus.objectives.dsm import dsm_loss


def test_loss_matches_closed_form_with_explicit_noise():
    """With a linear score s(x, sigma) = -a x / sigma^2 and clean data x, the residual is
    sigma s(x~) + z = -a (x + sigma z)/sigma + z, so the loss has a closed form per sample."""
    sigmas = geometric_sigmas(4.0, 0.5, 3)
    x = torch.tensor([[[[0.2, -0.4], [1.0, 0.0]]], [[[0.5, 0.5], [-1.0, 2.0]]]])
    noise = torch.tensor([[[[1.0, 0.0], [-0.5, 2.0]]], [[[0.3, -1.0], [0.0, 0.7]]]])
    levels = torch.tensor([0, 2])
    a = 0.75

    def score(xt, sigma):
        return -a * xt / sigma.view(-1, 1, 1, 1) ** 2

    out = dsm_loss(score, x, sigmas, nearest=levels, noise=noise)
    expected = []
    for i in range(2):
        s = sigmas[levels[i]]
        residual = -a * (x[i] + s * noise[i]) / s + noise[i]
        expected.append(0.5 * residual.square().sum())
    expected = torch.stack(expected)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    assert out.nearest.tolist() == [0, 2]


class _Zero(torch.nn.Module):
    def forward(self, x, sigma):
        return torch.zeros_like(x)


def test_zero_network_scores_half_the_dimension():
    """An untrained net that outputs zero gives loss ||z||^2 / 2 per sample: D/2 on average."""
    x = torch.rand(4096, 3, 4, 4)
    out = dsm_loss(ScoreModel(_Zero()), x, geometric_sigmas(10.0, 0.01, 5),
                   generator=torch.Generator().manual_seed(0))
    d = 3 * 4 * 4
    assert abs(out.loss.item() - d / 2) < 0.03 * d / 2


def test_the_optimal_score_has_lower_loss_than_a_wrong_one():
    """For data at a single point the true score of p_sigma is -(x~ - x0)/sigma^2: it reaches
    the minimum of the DSM objective (zero), a scaled one does not."""
    x = torch.zeros(256, 1, 2, 2)
    sigmas = geometric_sigmas(2.0, 0.1, 4)

    def true_score(xt, sigma):
        return -xt / sigma.view(-1, 1, 1, 1) ** 2

    def wrong_score(xt, sigma):
        return 0.5 * true_score(xt, sigma)

    g = torch.Generator().manual_seed(1)
    assert dsm_loss(true_score, x, sigmas, generator=g).loss.item() < 1e-10
    # With half the true score the residual is z/2: the loss is D/8 on average.
    assert abs(dsm_loss(wrong_score, x, sigmas, generator=g).loss.item() - 4 / 8) < 0.1


def test_levels_are_drawn_uniformly():
    sigmas = geometric_sigmas(10.0, 0.01, 4)
    out = dsm_loss(lambda x, s: torch.zeros_like(x), torch.zeros(8000, 1), sigmas,
                   generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(out.nearest, minlength=4).float() / 8000
    assert torch.all((counts - 0.25).abs() < 0.02)


def test_continuous_draws_cover_the_range_and_name_the_nearest_level():
    from pegasus.noise.draws import SigmaDraw
    from pegasus.noise.schedule import geometric_sigmas

    sigmas = geometric_sigmas(14.2, 0.01, 93)
    g = torch.Generator().manual_seed(0)
    for kind in ("log-uniform", "log-normal"):
        sigma, levels = SigmaDraw(kind, sigmas)(20000, g, torch.device("cpu"))
        assert sigma.min() >= 0.01 * (1 - 1e-6) and sigma.max() <= 14.2 * (1 + 1e-6)
        nearest = (sigma.double().log()[:, None] - sigmas.double().log()[None]).abs().argmin(1)
        assert torch.equal(levels, nearest)
        assert len(torch.unique(sigma)) > 19000  # a continuum, not the 93 levels
    log = SigmaDraw("log-uniform", sigmas)(20000, g, torch.device("cpu"))[0].log()
    assert abs(log.mean().item() - (math.log(14.2) + math.log(0.01)) / 2) < 0.05
    log = SigmaDraw("log-normal", sigmas, p_mean=-1.0, p_std=0.5)(20000, g, torch.device("cpu"))[0].log()
    assert abs(log.mean().item() + 1.0) < 0.02 and abs(log.std().item() - 0.5) < 0.02


def test_continuous_training_learns_the_score_between_the_levels():
    """An MLP trained on log-uniform sigmas over [0.1, 10]: the DSM loss falls, and its score at
    sigmas between any 12 levels matches the analytic score of the perturbed mixture."""
    from test_gmm_score import MLPBackbone

    from gmm import GaussianMixture
    from pegasus.model.score import ScoreModel
    from pegasus.noise.draws import SigmaDraw
    from pegasus.noise.schedule import geometric_sigmas

    mixture = GaussianMixture(weights=[0.5, 0.5], means=[[-3.0, 0.0], [3.0, 0.0]], stds=[0.6, 0.6])
    sigmas = geometric_sigmas(10.0, 0.1, 12)
    draw = SigmaDraw("log-uniform", sigmas)
    torch.manual_seed(0)
    model = ScoreModel(MLPBackbone(64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = mixture.sample(4000, generator=torch.Generator().manual_seed(5))

    def held_out() -> float:
        with torch.no_grad():
            return dsm_loss(model, fixed, sigmas, generator=torch.Generator().manual_seed(6),
                            draw=draw).loss.item()

    before = held_out()
    for _ in range(1500):
        loss = dsm_loss(model, mixture.sample(256, generator=g), sigmas, generator=g, draw=draw).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.6 * before
    for sigma in (0.13, 0.77, 3.3):  # none of them a level
        error = mixture.score_error(model, fixed, sigma, g)
        assert error < 0.15, (sigma, error)


def test_the_default_draw_is_ncsnv2s_bit_for_bit():
    """Without a draw the loss takes the levels and the noise from the generator as it always
    did: one of the run's sigmas uniformly, then the noise."""
    sigmas = torch.tensor([5.0, 1.0, 0.2])
    x = torch.rand(6, 3, 4, 4)
    a = dsm_loss(lambda y, s: -y, x, sigmas, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(3, (6,), generator=g)
    noise = torch.randn(x.shape, generator=g)
    b = dsm_loss(lambda y, s: -y, x, sigmas, nearest=levels, noise=noise)
    assert torch.equal(a.nearest, b.nearest) and torch.equal(a.per_sample, b.per_sample)
