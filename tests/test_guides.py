"""Guides as composable objects (model/guides.py), checked against the closed form of a Gaussian
mixture's class posterior: a class guide's gradient is grad log p(c | x, sigma) exactly, and
sums, weights (numbers or functions of sigma) and masks compose as the arithmetic says."""

import torch

from gmm import GaussianMixture
from pegasus.model.guides import ClassGuide, Masked, Sum, Weighted, guided

MIXTURE = GaussianMixture(weights=[0.3, 0.7], means=[[-2.0, 0.5], [1.5, -1.0]], stds=[0.6, 0.6])


def log_prob(x, sigma):
    """log p(component | x, sigma) of the perturbed mixture, differentiable in x."""
    var = MIXTURE.stds.double() ** 2 + sigma.double()[:, None] ** 2
    d2 = (x.double()[:, None, :] - MIXTURE.means[None]).square().sum(-1)
    return (MIXTURE.weights.log() - 0.5 * d2 / var - var.log()).log_softmax(dim=1)


def exact(x, sigma, c):
    """grad_x log p(c | x, sigma) = grad log p(x | c) - grad log p(x): the component's own
    Gaussian score less the mixture's."""
    var = MIXTURE.stds[c] ** 2 + sigma.double()[:, None] ** 2
    own = -(x.double() - MIXTURE.means[c]) / var
    return own - MIXTURE.score(x, sigma).double()


X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
SIGMA = torch.linspace(0.05, 3.0, 64, dtype=torch.float64)
ONE_HOT = torch.eye(2, dtype=torch.float64)


def test_a_class_guide_is_the_exact_gradient_of_the_class_posterior():
    for c in (0, 1):
        got = ClassGuide(log_prob, ONE_HOT[c])(X, SIGMA)
        torch.testing.assert_close(got, exact(X, SIGMA, c), rtol=1e-5, atol=1e-6)
    per_image = ONE_HOT[torch.arange(64) % 2]  # class 0 for even images, 1 for odd
    got = ClassGuide(log_prob, per_image)(X, SIGMA)
    torch.testing.assert_close(got[::2], exact(X, SIGMA, 0)[::2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1::2], exact(X, SIGMA, 1)[1::2], rtol=1e-5, atol=1e-6)


def test_guides_compose_as_sums_weights_and_masks():
    a, b = ClassGuide(log_prob, ONE_HOT[0]), ClassGuide(log_prob, ONE_HOT[1])
    both = a + b
    assert isinstance(both, Sum) and isinstance(3.0 * a, Weighted) and isinstance(a * 2, Weighted)
    # A sum of two one-class guides is the guide of both weights at once (the log-probabilities
    # sum): a product of experts (Composable Diffusion).
    torch.testing.assert_close(both(X, SIGMA), ClassGuide(log_prob, ONE_HOT.sum(0))(X, SIGMA))
    # Two posteriors that sum to one: their gradients cancel, weighted by the classes' odds.
    torch.testing.assert_close((0.5 * a + 0.5 * b)(X, SIGMA), 0.5 * (a(X, SIGMA) + b(X, SIGMA)))
    # A weight that is a function of sigma: one class above sigma 1, the other below (MagicMix's
    # split of layout and details by noise level).
    high = (lambda s: (s > 1).double()) * a + (lambda s: (s <= 1).double()) * b
    got, big = high(X, SIGMA), SIGMA > 1
    torch.testing.assert_close(got[big], a(X, SIGMA)[big])
    torch.testing.assert_close(got[~big], b(X, SIGMA)[~big])
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    masked = a.masked(mask)
    assert isinstance(masked, Masked)
    assert torch.all(masked(X, SIGMA)[:, 1] == 0)
    torch.testing.assert_close(masked(X, SIGMA)[:, 0], a(X, SIGMA)[:, 0])


def test_a_guided_score_adds_the_guide_and_none_leaves_the_score_alone():
    def score(x, sigma):
        return MIXTURE.score(x, sigma).double()

    assert guided(score, None) is score
    guide = 4.0 * ClassGuide(log_prob, ONE_HOT[1])
    # W = 1 on class c gives the score of p(x | c): Bayes' rule, exactly.
    # (The mixture's score is float32, hence the tolerance.)
    torch.testing.assert_close(guided(score, ClassGuide(log_prob, ONE_HOT[1]))(X, SIGMA),
                               -(X - MIXTURE.means[1]) / (0.36 + SIGMA[:, None] ** 2),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guided(score, guide)(X, SIGMA),
                               score(X, SIGMA) + 4.0 * exact(X, SIGMA, 1), rtol=1e-5, atol=1e-6)
