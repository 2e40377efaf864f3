"""The engine end to end on a 2-D Gaussian mixture, where the true score is known exactly:
train a small MLP with this very loss and schedule, compare its score with the analytic score
of the perturbed mixture, then sample with annealed Langevin and count the modes."""

import pytest
import torch
from torch import nn

from gmm import GaussianMixture
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.objectives.dsm import dsm_loss
from pegasus.samplers.als import annealed_langevin

# One worker trains the module's MLP once for all its tests (tests/conftest.py: xdist).
pytestmark = pytest.mark.xdist_group("gmm")

MIXTURE = GaussianMixture(
    weights=[0.2, 0.3, 0.5], means=[[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], stds=[0.6, 0.6, 0.6]
)
# Technique 1: sigma_1 ~ the largest distance between data points (about 10 here).
SCHEDULE = Schedule(sigma_max=10.0, sigma_min=0.1, levels=12, steps_per_level=50, eps=1e-3)


class MLPBackbone(nn.Module):
    """Follows the backbone contract: forward(x, sigma) shaped like x; no 1/sigma inside."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2),
        )

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma.log()[:, None]], dim=1))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = ScoreModel(MLPBackbone())
    sigmas = SCHEDULE.sigmas()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = 2000  # relative score errors 0.1-1.6% and weights within 0.012: margin enough
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = MIXTURE.sample(512, generator=g)
        loss = dsm_loss(model, x, sigmas, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0, 8.0])
def test_learned_score_matches_the_analytic_score(trained, sigma):
    """Relative mean squared error E||s_theta - s||^2 / E||s||^2 under p_sigma below 10%."""
    g = torch.Generator().manual_seed(1)
    x = MIXTURE.sample(4000, generator=g)
    x = x + sigma * torch.randn(x.shape, generator=g)
    s_true = MIXTURE.score(x, sigma)
    s_model = trained(x, torch.full((len(x),), sigma))
    rel = (s_model - s_true).square().sum(1).mean() / s_true.square().sum(1).mean()
    assert rel < 0.10, f"relative score error {rel:.3f} at sigma={sigma}"


def test_annealed_langevin_recovers_the_mixture_weights(trained):
    g = torch.Generator().manual_seed(2)
    x0 = SCHEDULE.sigma_max * torch.randn(6000, 2, generator=g)  # the sigma_1-perturbed prior
    x = annealed_langevin(trained, x0, SCHEDULE.sigmas(), steps_per_level=SCHEDULE.steps_per_level,
                          eps=SCHEDULE.eps, generator=g)
    counts = torch.bincount(MIXTURE.nearest(x), minlength=3).double() / len(x)
    assert torch.all((counts - MIXTURE.weights).abs() < 0.02), counts.tolist()
    # Samples also sit where the components are, not between them.
    spread = (x.double() - MIXTURE.means[MIXTURE.nearest(x)]).norm(dim=1).median()
    assert spread < 1.5 * 0.6 * 1.1774  # median radius of a 2-D Gaussian is 1.1774 std
