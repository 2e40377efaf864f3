"""An analytic Gaussian mixture: the exact score of its noise-perturbed density, for tests."""

from __future__ import annotations

import torch


class GaussianMixture:
    """Isotropic components: p(x) = sum_k w_k N(x; mu_k, s_k^2 I)."""

    def __init__(self, weights, means, stds) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        return (self.means[k] + self.stds[k, None] * z).float()

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """grad log p_sigma(x) where p_sigma = p * N(0, sigma^2 I): each component's variance
        grows to s_k^2 + sigma^2, and the score is the responsibility-weighted sum."""
        x = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        var = self.stds[None, :] ** 2 + sigma**2  # (B or 1, K)
        diff = x[:, None, :] - self.means[None]  # (B, K, D)
        d = x.shape[1]
        log_comp = (
            self.weights.log()[None]
            - 0.5 * diff.square().sum(-1) / var
            - 0.5 * d * torch.log(2 * torch.pi * var)
        )
        resp = log_comp.softmax(dim=1)  # (B, K)
        return (resp[..., None] * (-diff / var[..., None])).sum(1).float()

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x.double(), self.means).argmin(dim=1)

    def score_error(self, model, points: torch.Tensor, sigma: float,
                    generator: torch.Generator) -> float:
        """E||s_theta - s||^2 / E||s||^2 of `model` against this mixture's exact score, at
        `points` perturbed by sigma."""
        x = points + sigma * torch.randn(points.shape, generator=generator)
        truth = self.score(x, sigma)
        with torch.no_grad():
            learned = model(x, torch.full((len(x),), sigma))
        return ((learned - truth).square().sum(1).mean() / truth.square().sum(1).mean()).item()
