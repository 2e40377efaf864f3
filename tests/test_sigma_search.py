"""The consistency sampler's chosen sigmas (samplers/consistency.py), its clipping, the
golden-section search (tasks/sigma_search.py) and the file a run keeps them in
(run/sigmas.py)."""

import math

import pytest
import torch

from pegasus.errors import FieldError, UserError
from pegasus.noise.schedule import Schedule
from pegasus.run.sigmas import Searched, SearchedSigmas
from pegasus.samplers import split_sampler
from pegasus.samplers.consistency import consistency_sampler
from pegasus.samplers.plan import plan_sampler
from pegasus.tasks.sigma_search import Probe, SearchRequest, _golden, _search

SCHEDULE = Schedule(sigma_max=10.0, sigma_min=0.01, levels=20, steps_per_level=1, eps=1e-5)


def test_a_sampler_option_may_be_a_list():
    assert split_sampler("consistency[sigmas=[0.8, 0.2]]") == ("consistency",
                                                              {"sigmas": [0.8, 0.2]})
    assert split_sampler("heun[churn=10,s_min=0.05]") == ("heun", {"churn": 10, "s_min": 0.05})


def test_chosen_sigmas_lay_the_grid_below_sigma_1():
    plan = plan_sampler("consistency[sigmas=[0.8, 0.2]]", SCHEDULE, 3)
    torch.testing.assert_close(plan.sigmas, torch.tensor([10.0, 0.8, 0.2]))
    assert plan.evaluations == 3
    assert plan_sampler("consistency[sigmas=0.5]", SCHEDULE).sigmas.tolist() == pytest.approx(
        [10.0, 0.5])  # one number: two evaluations
    assert plan.options["clip"] == (0.0, 1.0)
    for text, steps, needle in (("[0.8, 0.2]", 2, "make 3 evaluations, not 2"),
                                ("[20.0]", None, "between sigma_L"),
                                ("[0.005]", None, "between sigma_L"),
                                ("[0.2, 0.8]", None, "must fall"),
                                ('"high"', None, "must be a numbers")):
        with pytest.raises(FieldError, match=needle):
            plan_sampler(f"consistency[sigmas={text}]", SCHEDULE, steps)


def test_the_denoised_estimate_is_clipped_to_the_data_range_before_renoising():
    """f = 2 at sigma_1 (outside [0, 1]) and the identity below it: clipped, the next point is
    1 + sqrt(sigma^2 - sigma_min^2) z and the image its mean 1; unclipped, 2."""
    def score(x, sigma):
        return torch.where(sigma.view(-1, 1, 1, 1) > 5, (2 - x) / sigma.view(-1, 1, 1, 1) ** 2,
                           torch.zeros_like(x))

    x0 = 10 * torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    grid = torch.tensor([10.0, 0.5])
    for clip, mean in (((0.0, 1.0), 1.0), (None, 2.0)):
        out = consistency_sampler(score, x0, grid, sigma_min=0.01, clip=clip,
                                  generator=torch.Generator().manual_seed(1))
        assert out.mean().item() == pytest.approx(mean, abs=0.03)
        assert out.std().item() == pytest.approx(math.sqrt(0.5**2 - 0.01**2), rel=0.05)


def test_the_search_finds_the_minimum_of_a_known_figure():
    """A figure whose minimum is at sigma = 0.3, in the log: found within 3% in 12 probes after
    the bracket's two, a grid's 7 then a golden section's 7 (the bracket shrinking by the golden
    ratio each probe)."""
    heard = []
    probes = _search(lambda s: Probe(2, (s,), (math.log(s / 0.3)) ** 2, 0.0), 0.02, 9.5, 12,
                     heard.append)
    best = min(probes, key=lambda p: p.kid)
    assert best.sigmas[0] == pytest.approx(0.3, rel=0.03)
    assert len(probes) == 14 and heard == probes
    with pytest.raises(UserError, match="no room for another sigma"):
        _search(lambda s: None, 0.5, 0.4, 3, None)


def test_the_grid_finds_the_lower_of_two_basins_that_a_golden_section_alone_misses():
    """The grain of a 32 px run's 2 evaluations has two basins in sigma (bench/README.md): a
    deep, narrow one near 0.15 and a shallow, wide one near 2.6. A golden section's first two
    probes (at 0.33 and 1.7 of this bracket) point it to the wide one; the grid's lowest points
    land in the deep one."""
    def grain(s):
        return min(1.2 + 2 * math.log(s / 0.15) ** 2, 1.58 + 0.05 * math.log(s / 2.6) ** 2)

    def figure(s):
        return Probe(2, (s,), 0.05, 0.0, grain(s), 1.1)

    alone = _golden(figure, math.log(0.02), math.log(27.0), 8, None)
    assert min(alone, key=lambda p: p.figure).sigmas[0] == pytest.approx(2.6, rel=0.1)
    found = _search(figure, 0.02, 27.0, 8, None)
    assert len(found) == 10
    assert min(found, key=lambda p: p.figure).sigmas[0] == pytest.approx(0.15, rel=0.05)


def test_a_grainy_candidate_ranks_after_every_one_within_the_bound():
    """KID decides within the grain bound; past it the less grainy wins, whatever its KID, and
    no bound is KID alone."""
    clean, grainy, grainier = (Probe(2, (0.2,), 0.09, 0.0, 1.05, 1.1),
                               Probe(2, (0.5,), 0.001, 0.0, 1.4, 1.1),
                               Probe(2, (0.9,), 0.0005, 0.0, 1.6, 1.1))
    assert min([grainier, grainy, clean], key=lambda p: p.figure) is clean
    assert min([grainier, grainy], key=lambda p: p.figure) is grainy
    assert Probe(2, (0.5,), 0.001, 0.0, 1.4, None).figure == 0.001
    # A figure with its KID minimum at sigma 0.5 and grain falling with sigma below 0.3: the
    # search lands at the bound's edge, not at the KID minimum.
    probes = _search(lambda s: Probe(2, (s,), math.log(s / 0.5) ** 2, 0.0, 1.0 + s / 3, 1.1),
                     0.02, 9.5, 14, None)
    assert min(probes, key=lambda p: p.figure).sigmas[0] == pytest.approx(0.3, rel=0.05)
    with pytest.raises(FieldError, match="grain"):
        SearchRequest(grain=0.0).validate()


def test_searched_sigmas_round_trip_and_a_damaged_file_is_one_line(tmp_path):
    path = tmp_path / "consistency-sigmas.toml"
    assert SearchedSigmas.read(path) is None
    kept = SearchedSigmas(300, 256, 0, {2: Searched((0.52,), 0.008, 0.02),
                                        3: Searched((0.52, 0.18), 0.004, 0.02)})
    kept.write(path)
    assert SearchedSigmas.read(path) == kept
    for text, needle in (("steps = [", "cannot read"),
                         ('step = 1\nnum = 2\nseed = 0\n[steps.3]\nsigmas = [0.1, 0.5]\n'
                          'kid = 0.0\nkid_std = 0.0\n', "must be 2 falling positive numbers")):
        path.write_text(text)
        with pytest.raises(UserError, match=needle):
            SearchedSigmas.read(path)
