"""Annealed Langevin dynamics (NCSNv2) on exact scores, and the CUDA-graph chains every sampler
replays on a GPU (fastpath/graphs.py), checked against the eager chains."""

import pytest
import torch

from pegasus.fastpath.graphs import GraphedScore, cuda_graph_capture, default_capture
from pegasus.noise.schedule import Schedule, geometric_sigmas, langevin_step_sizes
from pegasus.samplers.als import annealed_langevin


def _gaussian_score(mean: float, std: float):
    """Exact score of N(mean, std^2) perturbed by sigma: -(x - mean)/(std^2 + sigma^2)."""

    def score(x, sigma):
        return -(x - mean) / (std**2 + sigma.view(-1, *([1] * (x.dim() - 1))) ** 2)

    return score


def test_step_sizes_follow_alpha_i():
    sigmas = geometric_sigmas(50.0, 0.01, 232)
    alphas = langevin_step_sizes(sigmas, 6.2e-6)
    torch.testing.assert_close(alphas[-1], torch.tensor(6.2e-6))
    torch.testing.assert_close(alphas[0], torch.tensor(6.2e-6 * 5000.0**2), rtol=1e-4, atol=0)


def test_geometric_sigmas_are_exact_at_both_ends_and_decreasing():
    s = Schedule(50.0, 0.01, 232, 5, 6.2e-6)
    sig = s.sigmas()
    torch.testing.assert_close(sig[0], torch.tensor(50.0))
    torch.testing.assert_close(sig[-1], torch.tensor(0.01))
    assert torch.all(sig[1:] < sig[:-1])
    ratios = sig[:-1].double() / sig[1:].double()
    torch.testing.assert_close(ratios, torch.full_like(ratios, s.gamma), rtol=1e-5, atol=0)
    assert s.evaluations == 1161


def _run(seed: int, **kw):
    sigmas = geometric_sigmas(3.0, 0.05, 6)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(16, 3, 4, 4, generator=g)  # the uniform prior (docs/science.md)
    return annealed_langevin(_gaussian_score(0.5, 0.1), x0, sigmas, steps_per_level=3, eps=1e-4,
                             generator=g, **kw)


def test_seeded_sampling_is_bit_identical():
    assert torch.equal(_run(7), _run(7))
    assert not torch.equal(_run(7), _run(8))


def test_callback_sees_every_evaluation_and_denoise_is_switchable():
    calls = []
    _run(0, callback=lambda info: calls.append((info["level"], info["step"], info["index"])))
    assert len(calls) == 6 * 3 + 1
    assert [c[2] for c in calls] == list(range(19))
    calls.clear()
    _run(0, denoise=False, callback=lambda info: calls.append(info["index"]))
    assert len(calls) == 18


def test_final_denoising_step_is_tweedie():
    """x + sigma_L^2 s(x, sigma_L) applied once after the Langevin steps."""
    sigmas = geometric_sigmas(1.0, 0.1, 2)
    score = _gaussian_score(0.0, 1.0)
    x0 = torch.full((1, 1), 2.0)
    no_noise = lambda: torch.zeros(1, 1)  # noqa: E731 - a tiny deterministic noise stream
    plain = annealed_langevin(score, x0, sigmas, steps_per_level=1, eps=0.01,
                              noise_sampler=no_noise, denoise=False)
    denoised = annealed_langevin(score, x0, sigmas, steps_per_level=1, eps=0.01,
                                 noise_sampler=no_noise, denoise=True)
    expected = plain + 0.1**2 * score(plain, torch.tensor([0.1]))
    torch.testing.assert_close(denoised, expected)


def test_sampling_a_gaussian_recovers_its_moments():
    """Annealed Langevin with the exact score of N(0.5, 0.1^2) lands on that distribution."""
    sigmas = geometric_sigmas(2.0, 0.01, 20)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(20000, 1, generator=g)
    x = annealed_langevin(_gaussian_score(0.5, 0.1), x0, sigmas, steps_per_level=20, eps=2e-5,
                          generator=g, denoise=False)
    assert abs(x.mean().item() - 0.5) < 0.005
    assert abs(x.std().item() - 0.1) < 0.005


def test_input_is_not_modified():
    x0 = torch.rand(2, 1)
    before = x0.clone()
    annealed_langevin(_gaussian_score(0.0, 1.0), x0, geometric_sigmas(1.0, 0.1, 3),
                      steps_per_level=2, eps=1e-3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x0, before)


def test_graphs_are_captured_on_cuda_only():
    assert default_capture("cpu") is None
    assert default_capture("cuda") is cuda_graph_capture


def _warm_up_then_replay(step):
    """A stand-in for cuda_graph_capture on CPU: the same warm-up runs that change the step's
    buffers, then the step itself as the 'replay'."""
    for _ in range(3):
        step()
    return step


@pytest.mark.parametrize("capture", [lambda step: step, _warm_up_then_replay], ids=["plain", "warm-up"])
def test_replayed_step_gives_the_eager_chain(capture):
    """The static buffers of the graphed sampler (sigma, alpha, noise refilled before each
    replay, the state restored after warm-up) give the eager chain exactly, callbacks included."""
    sigmas = geometric_sigmas(3.0, 0.05, 5)
    x0 = torch.rand(6, 3, 4, 4)
    kw = dict(steps_per_level=3, eps=1e-3)
    seen = {"eager": [], "replayed": []}

    def recorder(name):
        return lambda info: seen[name].append((info["index"], info["x"].sum().item()))

    eager = annealed_langevin(_gaussian_score(0.5, 0.1), x0, sigmas,
                              generator=torch.Generator().manual_seed(3), callback=recorder("eager"), **kw)
    replayed = annealed_langevin(
        _gaussian_score(0.5, 0.1), x0, sigmas, generator=torch.Generator().manual_seed(3),
        callback=recorder("replayed"), capture=capture, **kw)
    assert torch.equal(eager, replayed)
    assert seen["eager"] == seen["replayed"]
    assert len(seen["eager"]) == 5 * 3 + 1


def test_replayed_step_takes_its_noise_from_a_noise_sampler():
    """Noise interpolation supplies its own noise; the replayed step must use it, not a stream
    of its own."""
    sigmas = geometric_sigmas(2.0, 0.1, 4)
    x0 = torch.rand(4, 2)

    def noise_stream(seed):
        g = torch.Generator().manual_seed(seed)
        return lambda: torch.randn(4, 2, generator=g) * 0.5

    kw = dict(steps_per_level=2, eps=1e-2)
    eager = annealed_langevin(_gaussian_score(0.0, 1.0), x0, sigmas, noise_sampler=noise_stream(5), **kw)
    replayed = annealed_langevin(_gaussian_score(0.0, 1.0), x0, sigmas,
                                 noise_sampler=noise_stream(5), capture=_warm_up_then_replay, **kw)
    other = annealed_langevin(_gaussian_score(0.0, 1.0), x0, sigmas,
                              noise_sampler=noise_stream(6), capture=_warm_up_then_replay, **kw)
    assert torch.equal(eager, replayed)
    assert not torch.equal(eager, other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_sampler_matches_eager_on_cuda():
    sigmas = geometric_sigmas(3.0, 0.05, 6).cuda()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ELU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).cuda()

    def score(x, sigma):
        return net(x) / sigma.view(-1, 1, 1, 1)

    x0 = torch.rand(8, 3, 16, 16, device="cuda")
    kw = dict(steps_per_level=3, eps=1e-4)
    eager = annealed_langevin(score, x0, sigmas, generator=torch.Generator("cuda").manual_seed(0), **kw)
    graphed = annealed_langevin(score, x0, sigmas, generator=torch.Generator("cuda").manual_seed(0),
                                capture=cuda_graph_capture, **kw)
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batches_fill_the_free_memory_they_are_told_of_on_cuda(monkeypatch):
    from pegasus.fastpath.memory import sampling_batch_size as fill_gpu_batch_size
    from pegasus.model.build import build_score_model
    from tiny import tiny_config

    device = torch.device("cuda")
    model = build_score_model(tiny_config())[0].to(device).eval()
    shape = (3, 16, 16)
    free = 2 * 2**30  # far less than any test GPU has, so the check cannot run out of memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 4 * free))
    size = fill_gpu_batch_size(model, shape, device, fraction=0.8)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        model(torch.rand(size, *shape, device=device), torch.ones(size, device=device))
    torch.cuda.synchronize(device)
    used = torch.cuda.max_memory_allocated(device) - before + 3 * 4 * size * 768
    # The batch uses most of the 80% it was sized for, and not more than that (10% leeway).
    assert 0.5 * 0.8 * free < used <= 1.1 * 0.8 * free, (size, used / free)


def test_gpu_batch_sizing_counts_the_fixed_memory_once(monkeypatch):
    """An evaluation's peak memory is fixed + batch x per_image (a fake allocator here): the
    batch is sized by the per-image part alone, with the fixed part taken off the free memory."""
    from pegasus.fastpath.memory import sampling_batch_size as fill_gpu_batch_size

    fixed, per_image, free, shape = 300e6, 2e6, 40e9, (3, 32, 32)
    peak = {"now": 0}

    def model(x, sigma):
        peak["now"] = int(fixed + len(x) * per_image)

    for name, fake in {"synchronize": lambda device=None: None,
                       "reset_peak_memory_stats": lambda device=None: peak.update(now=0),
                       "memory_allocated": lambda device=None: 0,
                       "max_memory_allocated": lambda device=None: peak["now"],
                       "mem_get_info": lambda device=None: (int(free), int(2 * free))}.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    size = fill_gpu_batch_size(model, shape, torch.device("cpu"), fraction=0.8)
    assert size == int((0.8 * free - fixed) / (per_image + 12 * 3 * 32 * 32))


class _CountingCapture:
    """A stand-in for cuda_graph_capture on CPU that counts its captures: the warm-up runs,
    then the step itself as the 'replay'."""

    def __init__(self) -> None:
        self.captures = 0

    def __call__(self, step):
        self.captures += 1
        return _warm_up_then_replay(step)


def test_a_graphed_score_gives_the_plain_chain_of_every_sampler_and_captures_once_per_shape():
    from pegasus.samplers.plan import plan_sampler

    schedule = Schedule(3.0, 0.05, 12, 2, 1e-3)
    x = torch.rand(5, 3, 4, 4)
    score = _gaussian_score(0.5, 0.2)
    for name in ("heun", "pc", "cas"):
        plan = plan_sampler(name, schedule, 9)
        capture = _CountingCapture()
        graphed = GraphedScore(score, capture)
        plain = plan.run(score, x, generator=torch.Generator().manual_seed(0))
        # Heun holds one slope while it asks for the next: a replay that handed out its static
        # output buffer instead of a copy would overwrite the first slope and change the chain.
        replayed = plan.run(graphed, x, generator=torch.Generator().manual_seed(0))
        again = plan.run(graphed, x, generator=torch.Generator().manual_seed(0))
        assert torch.equal(plain, replayed) and torch.equal(plain, again), name
        assert capture.captures == 1, name
        plan.run(graphed, x[:2], generator=torch.Generator().manual_seed(0))
        assert capture.captures == 2, name  # a new shape, a new graph


def test_sampling_jobs_graph_the_network_once_for_samplers_that_do_not_capture_steps(monkeypatch):
    import tiny as sampling
    from pegasus.fastpath import graphs
    from pegasus.samplers.plan import plan_sampler

    schedule = Schedule(3.0, 0.05, 12, 2, 1e-3)
    score = _gaussian_score(0.5, 0.2)
    for name in ("heun", "als"):
        plan = plan_sampler(name, schedule, 9)
        plain = sampling.sample_images(score, schedule, num=7, res=4, seed=1, batch_size=3, plan=plan)
        capture = _CountingCapture()
        monkeypatch.setattr(graphs, "default_capture", lambda device, c=capture: c)
        graphed = sampling.sample_images(score, schedule, num=7, res=4, seed=1, batch_size=3,
                                         plan=plan)
        monkeypatch.undo()
        assert torch.equal(plain, graphed), name
        # heun: one graph of the network for the job's 3 batches; als: its step, once a chain.
        assert capture.captures == (1 if name == "heun" else 3), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_heun_and_cas_match_eager_on_cuda(monkeypatch):
    import tiny as sampling
    from pegasus.fastpath import graphs
    from pegasus.samplers.plan import plan_sampler

    schedule = Schedule(3.0, 0.05, 12, 2, 1e-3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ELU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).cuda()

    def score(x, sigma):
        return net(x) / sigma.view(-1, 1, 1, 1)

    for name in ("heun", "cas"):
        plan = plan_sampler(name, schedule, 9)
        kw = dict(num=6, res=16, seed=0, batch_size=3, plan=plan, device="cuda")
        graphed = sampling.sample_images(score, schedule, **kw)
        monkeypatch.setattr(graphs, "default_capture", lambda device: None)
        eager = sampling.sample_images(score, schedule, **kw)
        monkeypatch.undo()
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler,captures", [("pc", 1), ("als", 1)])
def test_an_inpainting_chain_is_graphed_as_a_sampling_job_is(monkeypatch, sampler, captures):
    from pegasus.fastpath import graphs
    from pegasus.samplers.plan import plan_sampler
    from pegasus.tasks.inpaint import inpaint
    from pegasus.tasks.inputs import builtin_mask

    schedule = Schedule(3.0, 0.05, 12, 2, 1e-3)
    plan, image, mask = plan_sampler(sampler, schedule, 9), torch.rand(3, 4, 4), builtin_mask("top", 4)
    score = _gaussian_score(0.5, 0.2)
    plain = inpaint(score, image, mask, plan, num=3, seed=0)
    capture = _CountingCapture()
    monkeypatch.setattr(graphs, "default_capture", lambda device: capture)
    assert torch.equal(inpaint(score, image, mask, plan, num=3, seed=0), plain)
    assert capture.captures == captures


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sampler", ["pc", "als"])
def test_graphed_inpainting_matches_eager_on_cuda(monkeypatch, sampler):
    from pegasus.fastpath import graphs
    from pegasus.samplers.plan import plan_sampler
    from pegasus.tasks.inpaint import inpaint
    from pegasus.tasks.inputs import builtin_mask

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ELU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).cuda()

    def score(x, sigma):
        return net(x) / sigma.view(-1, 1, 1, 1)

    plan = plan_sampler(sampler, Schedule(3.0, 0.05, 12, 2, 1e-3), 9)
    image, mask = torch.rand(3, 16, 16, device="cuda"), builtin_mask("top", 16).cuda()
    graphed = inpaint(score, image, mask, plan, num=4, seed=0)
    monkeypatch.setattr(graphs, "default_capture", lambda device: None)
    torch.testing.assert_close(graphed, inpaint(score, image, mask, plan, num=4, seed=0),
                               rtol=1e-4, atol=1e-4)
