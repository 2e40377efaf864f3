"""EDM's preconditioning (model/precondition.py) against EDM's own formulas (Karras et al. 2022,
Table 1), written here from the denoiser, not from pegasus's score form; and a preconditioned
run through training, its checkpoint, its exports and loading."""

import math

import pytest
import torch
from torch import nn

from pegasus.model.precondition import EDMPreconditioning
from pegasus.model.score import ScoreModel
from pegasus.objectives.dsm import dsm_loss


class Wavy(nn.Module):
    """A fixed nonlinear backbone that depends on x and sigma, so that every coefficient shows."""

    def forward(self, x, sigma):
        return torch.sin(3 * x + sigma.log().view(-1, 1, 1, 1)) + 0.3 * x.square()


def _edm_denoiser(x, sigma, centre, sigma_data):
    s = sigma.view(-1, 1, 1, 1)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1 / (s**2 + sigma_data**2).sqrt()
    offset = x - centre
    return centre + c_skip * offset + c_out * Wavy()(c_in * offset, sigma), (c_skip, c_out)


CENTRE = torch.tensor([0.2, 0.5, 0.7]).view(3, 1, 1)


def test_the_score_is_tweedies_of_edms_denoiser():
    """s = (D - x) / sigma^2 with D = c_skip x + c_out F(c_in x, sigma) about the centre."""
    model = ScoreModel(Wavy(), EDMPreconditioning(CENTRE, 0.3)).double()
    model.edm.centre = model.edm.centre.double()
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64) * 3
    sigma = torch.tensor([0.01, 0.1, 0.3, 2.0, 14.0], dtype=torch.float64)
    denoised, _ = _edm_denoiser(x, sigma, CENTRE.double(), 0.3)
    expected = (denoised - x) / sigma.view(-1, 1, 1, 1) ** 2
    got = model.edm.score(model.backbone, x, sigma).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_the_weighted_loss_is_edms_unit_variance_target_loss():
    """lambda(sigma) (sigma s + z)^2 / 2 = ||F - (x - c_skip x~) / c_out||^2 / 2 (EDM eq. 8)."""
    model = ScoreModel(Wavy(), EDMPreconditioning(CENTRE, 0.3))
    x = torch.rand(6, 3, 4, 4)
    sigmas = torch.tensor([8.0, 1.0, 0.1, 0.01])
    levels = torch.tensor([0, 1, 2, 3, 0, 2])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    got = dsm_loss(model, x, sigmas, nearest=levels, noise=noise,
                   weight=model.loss_weight).per_sample
    sigma = sigmas[levels]
    s = sigma.view(-1, 1, 1, 1)
    noisy = x + s * noise
    _, (c_skip, c_out) = _edm_denoiser(noisy, sigma, CENTRE, 0.3)
    inner = Wavy()((noisy - CENTRE) / (s**2 + 0.09).sqrt(), sigma)
    target = ((x - CENTRE) - c_skip * (noisy - CENTRE)) / c_out
    expected = 0.5 * (inner - target).square().flatten(1).sum(1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_zero_network_scores_the_gaussian_of_the_datas_centre_and_spread():
    """With F = 0 the preconditioned score is that of N(mu, sigma_data^2) perturbed by sigma: the
    exact score when the data are that Gaussian."""
    model = ScoreModel(lambda x, sigma: torch.zeros_like(x), EDMPreconditioning(CENTRE, 0.3))
    x = torch.randn(4, 3, 2, 2)
    for sigma in (0.05, 1.0, 9.0):
        expected = -(x - CENTRE) / (sigma**2 + 0.09)
        torch.testing.assert_close(model(x, torch.tensor(sigma)), expected)


def test_edm_preconditioning_learns_the_mixtures_score_between_the_levels():
    """The 2-D mixture of tests/test_loss.py, log-normal sigmas, preconditioned: the learned score
    matches the analytic one at sigmas that are no level."""
    from test_gmm_score import MLPBackbone

    from gmm import GaussianMixture
    from pegasus.noise.draws import SigmaDraw
    from pegasus.noise.schedule import geometric_sigmas

    mixture = GaussianMixture(weights=[0.5, 0.5], means=[[-3.0, 0.0], [3.0, 0.0]], stds=[0.6, 0.6])
    sigmas = geometric_sigmas(10.0, 0.1, 12)
    draw = SigmaDraw("log-normal", sigmas, p_mean=math.log(1.0), p_std=1.5)
    torch.manual_seed(0)
    model = ScoreModel(MLPBackbone(64), EDMPreconditioning(torch.zeros(2), 3.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        loss = dsm_loss(model, mixture.sample(256, generator=g), sigmas, generator=g, draw=draw,
                        weight=model.loss_weight).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    fixed = mixture.sample(4000, generator=torch.Generator().manual_seed(5))
    for sigma in (0.13, 0.77, 3.3):  # none of them a level
        error = mixture.score_error(model, fixed, sigma, g)
        assert error < 0.15, (sigma, error)


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory):
    from pegasus.training import train
    from tiny import tiny_config

    path = tmp_path_factory.mktemp("edm")
    config = tiny_config('noise.preconditioning="edm"', 'noise.training="log-normal"',
                         "train.iters=3")
    train(config, path, tensorboard=False)
    return path


def test_a_preconditioned_run_loads_with_its_centre_and_exports(edm_run, tmp_path):
    from pegasus import load
    from pegasus.data import load_images
    from pegasus.errors import CheckpointError
    from pegasus.interop.ncsnv2 import export_checkpoint
    from pegasus.run.export import export_run
    from pegasus.run.load import load_trained_run

    run = load_trained_run(edm_run, device="cpu")
    assert run.config.noise.preconditioning == "edm" and run.centre_recorded
    images = load_images(run.config.data).images
    mean = images.double().mean(dim=(0, 2, 3)).div(255).float().view(-1, 1, 1)
    torch.testing.assert_close(run.model.edm.centre, mean)
    torch.testing.assert_close(run.centre, mean)
    x = torch.rand(2, 3, 16, 16)
    out = export_run(edm_run, tmp_path / "w.safetensors")
    exported = load(out)
    torch.testing.assert_close(exported.trained.model(x, torch.tensor(0.5)),
                               run.model(x, torch.tensor(0.5)))
    with pytest.raises(CheckpointError, match="preconditioned as EDM's"):
        export_checkpoint(edm_run, tmp_path / "ref.pth")
