import torch

from pegasus.model.loss import dsm_loss
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import geometric_sigmas


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

    out = dsm_loss(score, x, sigmas, levels=levels, noise=noise)
    expected = []
    for i in range(2):
        s = sigmas[levels[i]]
        residual = -a * (x[i] + s * noise[i]) / s + noise[i]
        expected.append(0.5 * residual.square().sum())
    expected = torch.stack(expected)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    assert out.levels.tolist() == [0, 2]


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
    counts = torch.bincount(out.levels, minlength=4).float() / 8000
    assert torch.all((counts - 0.25).abs() < 0.02)
