"""Noise interpolation (eq. 4) and class guidance, checked with an analytic Gaussian-mixture
score so that every property is exact rather than learned."""

import math

import pytest
import torch

from gmm import GaussianMixture
from pegasus.fastpath.graphs import cuda_graph_capture
from pegasus.model.guides import ClassGuide, guided
from pegasus.noise.schedule import Schedule
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.als import annealed_langevin
from pegasus.samplers.plan import plan_sampler
from pegasus.tasks.interpolation import (
    InterpolatedNoise,
    blend_strips,
    endpoint_class_weights,
    interpolation_angles,
)

MIXTURE = GaussianMixture(weights=[0.5, 0.5], means=[[-3.0, 0.0], [3.0, 0.0]], stds=[0.5, 0.5])
SCHEDULE = Schedule(sigma_max=8.0, sigma_min=0.1, levels=8, steps_per_level=20, eps=2e-3)


def score(x, sigma):
    return MIXTURE.score(x, sigma[:, None])


def log_prob(x, sigma):
    """Exact p(component | x, sigma) of the perturbed mixture, differentiable in x."""
    var = MIXTURE.stds.float() ** 2 + sigma[:, None] ** 2
    d2 = (x[:, None, :] - MIXTURE.means.float()[None]).square().sum(-1)
    return (MIXTURE.weights.float().log() - 0.5 * d2 / var - var.log()).log_softmax(dim=1)


def _blend(strips=3, n=4, seed=0, fn=score):
    gp = torch.Generator().manual_seed(seed)
    gq = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(strips, 2, generator=torch.Generator().manual_seed(99)) * 8
    out = blend_strips(fn, x0, plan_sampler("als", SCHEDULE), n=n, noise_p=gaussian_noise_sampler(x0, gp),
                       noise_q=gaussian_noise_sampler(x0, gq))
    return x0, out


def _plain(x0, seed):
    return annealed_langevin(score, x0, SCHEDULE.sigmas(), steps_per_level=SCHEDULE.steps_per_level,
                             eps=SCHEDULE.eps, generator=torch.Generator().manual_seed(seed))


def test_angles_follow_eq_4():
    theta = interpolation_angles(15)
    assert len(theta) == 17
    torch.testing.assert_close(theta[9], torch.tensor(9 * math.pi / 32, dtype=torch.float64))
    assert theta[0] == 0 and abs(theta[-1].item() - math.pi / 2) < 1e-7
    with pytest.raises(ValueError):
        interpolation_angles(0)


def test_column_weights_follow_eq_4_and_streams_are_shared():
    gp, gq = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    noise = InterpolatedNoise(2, 3, (4,), noise_p=gaussian_noise_sampler(torch.empty(2, 4), gp),
                              noise_q=gaussian_noise_sampler(torch.empty(2, 4), gq),
                              device=torch.device("cpu"), dtype=torch.float32)
    z = noise().view(2, 5, 4)
    p = torch.randn(2, 1, 4, generator=torch.Generator().manual_seed(1))
    q = torch.randn(2, 1, 4, generator=torch.Generator().manual_seed(2))
    for k in range(5):
        t = k * math.pi / 8
        torch.testing.assert_close(z[:, k], (math.cos(t) * p + math.sin(t) * q)[:, 0])
    # Each column is exactly standard normal in law: cos^2 + sin^2 = 1.
    many = InterpolatedNoise(20000, 3, (1,), noise_p=gaussian_noise_sampler(torch.empty(20000, 1), gp),
                             noise_q=gaussian_noise_sampler(torch.empty(20000, 1), gq),
                             device=torch.device("cpu"), dtype=torch.float32)().view(20000, 5)
    assert torch.all((many.std(0) - 1).abs() < 0.03)


def test_end_columns_are_the_plain_chains_on_streams_p_and_q():
    x0, strips = _blend(seed=5)
    assert torch.equal(strips[:, 0], _plain(x0, 5))
    torch.testing.assert_close(strips[:, -1], _plain(x0, 6), rtol=0, atol=1e-5)


def test_k_changes_the_result_and_strips_share_nothing_but_their_start():
    _, strips = _blend(strips=4, n=6)
    for k in range(1, 8):
        assert not torch.allclose(strips[:, k], strips[:, k - 1])
    assert not torch.allclose(strips[0], strips[1])


def test_seeded_blend_is_bit_identical():
    assert torch.equal(_blend(seed=3)[1], _blend(seed=3)[1])
    assert not torch.equal(_blend(seed=3)[1], _blend(seed=4)[1])


def test_no_guide_changes_nothing():
    assert guided(score, None) is score
    weights = endpoint_class_weights(4, 0, 1, 2).repeat(3, 1)
    assert torch.equal(_blend(fn=guided(score, 0.0 * ClassGuide(log_prob, weights)))[1],
                       _blend()[1])


def test_class_weights_move_with_the_noise_angle():
    w = endpoint_class_weights(15, 0, 1, 2)
    assert torch.allclose(w.sum(1), torch.ones(17))
    assert w[0].tolist() == [1.0, 0.0] and abs(w[-1, 1].item() - 1) < 1e-6
    assert torch.all(w[1:, 0] < w[:-1, 0])


def test_guidance_lands_the_ends_in_the_components_asked_for():
    """With W = 1 the guided score is exactly grad log p(x | y): every left end lands in
    component 0 and every right end in component 1."""
    strips, n = 64, 3
    weights = endpoint_class_weights(n, 0, 1, 2).repeat(strips, 1)
    _, out = _blend(strips=strips, n=n, fn=guided(score, ClassGuide(log_prob, weights)))
    assert torch.all(MIXTURE.nearest(out[:, 0]) == 0)
    assert torch.all(MIXTURE.nearest(out[:, -1]) == 1)
    _, plain = _blend(strips=strips, n=n)
    left = MIXTURE.nearest(plain[:, 0]).float().mean().item()
    assert 0.2 < left < 0.8  # unguided ends fall in either component


def _graphed_and_eager_blends_agree(score_fn) -> None:
    """Strips from a CUDA-graph replay of each step equal the eager chain's."""
    x0 = torch.rand(2, 3, 8, 8, device="cuda")

    def run(capture):
        return blend_strips(score_fn, x0, plan_sampler("als", SCHEDULE), n=3,
                            noise_p=gaussian_noise_sampler(x0, torch.Generator("cuda").manual_seed(0)),
                            noise_q=gaussian_noise_sampler(x0, torch.Generator("cuda").manual_seed(1)),
                            capture=capture)

    torch.testing.assert_close(run(cuda_graph_capture), run(None), rtol=1e-4, atol=1e-4)


def _conv_score():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ELU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).cuda()
    return lambda x, sigma: net(x) / sigma.view(-1, 1, 1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_blend_matches_eager_on_cuda():
    _graphed_and_eager_blends_agree(_conv_score())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_guided_blend_matches_eager_on_cuda():
    """Guided steps differentiate the classifier inside the step. Guided blends run eagerly
    until this passes on a GPU; then `blend_strips_of` may capture them as it does unguided ones."""
    head = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2)).cuda()

    def log_prob(x, sigma):
        return torch.log_softmax(head(x / (1 + sigma.view(-1, 1, 1, 1) ** 2).sqrt()), dim=1)

    weights = endpoint_class_weights(3, 0, 1, 2).repeat(2, 1).cuda()  # 2 strips of N + 2 = 5
    _graphed_and_eager_blends_agree(guided(_conv_score(), 2.0 * ClassGuide(log_prob, weights)))


@pytest.mark.parametrize("sampler,steps,mode,guidance,captures", [
    ("pc", 8, "eq4", 0.0, 1), ("heun", 9, "slerp", 0.0, 1), ("als", 10, "eq4", 0.0, 1),
    ("als", 10, "eq4", 5.0, 0)])
def test_blends_are_graphed_unless_guided(run, monkeypatch, sampler, steps, mode, guidance,
                                          captures):
    """Each unguided blend chain replays a graph on a GPU (its step, or its network); guided
    ones launch step by step until a GPU has checked the captured backward pass. On this CPU a
    counting stand-in for the capture shows which, and that the strips do not change."""
    from test_langevin_and_graphs import _CountingCapture
    from typer.testing import CliRunner

    from pegasus.cli import app
    from pegasus.fastpath import graphs
    from pegasus.run.load import load_trained_run
    from pegasus.tasks.blend import BlendRequest, blend

    trained = load_trained_run(run)
    if guidance and not (run / "guide.pt").exists():
        result = CliRunner().invoke(app, ["train-guide", "--run", str(run), "--iters", "2",
                                          "--device", "cpu"])
        assert result.exit_code == 0, result.output
    request = BlendRequest(n=2, k=1, strips=2, guidance=guidance, sampler=sampler, steps=steps,
                           mode=mode)
    plain = blend(trained, request).strips
    capture = _CountingCapture()
    monkeypatch.setattr(graphs, "default_capture", lambda device: capture)
    assert torch.equal(blend(trained, request).strips, plain)
    assert capture.captures == captures
