"""ECT's recipe (objectives/ect.py, training/tune.py): dropout with one mask a pair, the
distance's c, the weight, r's stages spread over the tuning, and runs with dropout resuming
exactly."""

import math

import pytest
import torch
from torch import nn

from pegasus.backbones.refinenet import RefineNet, stages_for
from pegasus.backbones.unet import UNet
from pegasus.noise.draws import SigmaDraw
from pegasus.noise.schedule import geometric_sigmas
from pegasus.objectives.ect import ect_loss, ict_c, pair_weight, partner
from pegasus.run.checkpoint import latest_checkpoint, load_checkpoint
from pegasus.training import train
from pegasus.training.tune import STAGES, tuning_config
from tiny import tiny_config

SIGMA_MIN, SIGMA_DATA = 0.01, 0.25
DRAW = SigmaDraw("log-normal", geometric_sigmas(10.0, SIGMA_MIN, 10), -1.1, 2.0)


class Masked(nn.Module):
    """A score whose output is a dropout mask of ones (times a small number), recording each
    mask it draws."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.drop, self.masks = nn.Dropout(p), []

    def forward(self, x, sigma):
        mask = self.drop(torch.ones_like(x))
        self.masks.append(mask != 0)
        return 1e-3 * mask


def test_both_points_of_a_pair_see_one_dropout_mask():
    net = Masked(0.5).train()
    x = torch.rand(8, 3, 4, 4)
    ect_loss(net, x, draw=DRAW, stage=0, q=2, k=8, b=1, c=0.0, sigma_min=SIGMA_MIN,
             sigma_data=SIGMA_DATA, generator=torch.Generator().manual_seed(0))
    target, online = net.masks
    assert torch.equal(target, online)
    assert 0.3 < online.float().mean() < 0.7  # a real mask, neither all kept nor all dropped
    net(x, torch.ones(8))  # the next evaluation draws a new mask: the state moved on
    assert not torch.equal(net.masks[-1], online)


def _noise_of(x, seed):
    """t and z as ect_loss draws them from a generator seeded `seed`: the draw, then z."""
    g = torch.Generator().manual_seed(seed)
    t, _ = DRAW(len(x), g, x.device)
    return t, torch.randn(x.shape, generator=g)


def _after_noise(x, seed):
    """A generator seeded `seed` after ect_loss's draw of t and z."""
    g = torch.Generator().manual_seed(seed)
    DRAW(len(x), g, x.device)
    torch.randn(x.shape, generator=g)
    return g


@pytest.mark.parametrize("c", [0.0, 0.5])
@pytest.mark.parametrize("weight", ["gap", "edm"])
def test_the_distance_is_the_l2_norm_at_c_0_and_pseudo_huber_above(c, weight):
    """With s = 0, f(x, sigma) = x, so f(x_t) - f(x_r) = (t - r) z: the distance is
    sqrt((t - r)^2 |z|^2 + c^2) - c, |t - r| |z| at c = 0, then weighted."""
    x = torch.rand(16, 3, 4, 4)
    loss = ect_loss(lambda x, sigma: torch.zeros_like(x), x, draw=DRAW, stage=1, q=2, k=8, b=1,
                    c=c, weight=weight, sigma_min=SIGMA_MIN, sigma_data=SIGMA_DATA,
                    generator=torch.Generator().manual_seed(3))
    t, z = _noise_of(x, 3)
    r = partner(t, 1, q=2, k=8, b=1)
    norm = (t - r) * z.flatten(1).norm(dim=1)
    distance = (norm.square() + c * c).sqrt() - c
    w = 1 / (t - r) if weight == "gap" else (t**2 + SIGMA_DATA**2) / (t * SIGMA_DATA) ** 2
    torch.testing.assert_close(loss.per_sample, distance * w, rtol=1e-5, atol=1e-7)
    if c == 0 and weight == "gap":  # the L2 norm over the gap: |z| itself
        torch.testing.assert_close(loss.per_sample, z.flatten(1).norm(dim=1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_denoising_share_keeps_those_pairs_at_the_clean_image(share):
    """With s = 0, f is the identity: a pair kept at r = 0 has the gap t z (its target the clean
    image), any other (t - r) z. The kept pairs are drawn after the noise, so t and z are those
    of ECT's loss; at share 0 no draw is made and the loss is ECT's own."""
    x = torch.rand(64, 3, 4, 4)
    g = torch.Generator().manual_seed(5)
    loss = ect_loss(lambda x, sigma: torch.zeros_like(x), x, draw=DRAW, stage=3, q=2, k=8, b=1,
                    c=0.0, weight="edm", sigma_min=SIGMA_MIN, sigma_data=SIGMA_DATA,
                    denoise=share, generator=g)
    t, z = _noise_of(x, 5)
    kept = (torch.rand(len(x), generator=_after_noise(x, 5)) < share) if share else (
        torch.zeros(len(x), dtype=torch.bool))
    r = torch.where(kept, 0.0, partner(t, 3, q=2, k=8, b=1))
    w = (t**2 + SIGMA_DATA**2) / (t * SIGMA_DATA) ** 2
    torch.testing.assert_close(loss.per_sample, (t - r) * z.flatten(1).norm(dim=1) * w,
                               rtol=1e-5, atol=1e-6)
    assert kept.all() if share == 1 else (not kept.any() if share == 0 else 0 < kept.sum() < 64)
    if share == 0:  # nothing more drawn: the generator stands where ECT's own loss left it
        assert torch.equal(g.get_state(), _after_noise(x, 5).get_state())


def test_a_pair_on_one_point_weighs_nothing_and_stays_finite():
    t = torch.tensor([1.0, 0.5, 2.0])
    r = torch.tensor([1.0, 0.0, 1.5])
    assert pair_weight(t, r, "gap", SIGMA_DATA).tolist() == [0.0, 2.0, 2.0]


def test_icts_c_follows_the_images_size():
    # 0.00054 sqrt(d) on [-1, 1] images, halved on [0, 1]: d = 16 x 16 x 3.
    assert ict_c(768) == pytest.approx(0.00054 * math.sqrt(768) / 2)
    assert ict_c(3 * 32 * 32) == pytest.approx(2 * ict_c(768))


def test_the_stages_follow_the_formula_over_the_tuning(tmp_path):
    source = tiny_config()
    config = tuning_config(source, tmp_path, iters=320)
    options = config.objective.options
    assert options["stage_every"] == 320 // STAGES and options["q"] == 4.0
    assert tuning_config(source, tmp_path, iters=320, stages=16).objective.options[
        "stage_every"] == 20
    # r = t (1 - q^-(s+1) (1 + k sigmoid(-b t))), b on EDM's sigma (pegasus's doubled).
    t = torch.tensor([0.5, 1.0, 4.0])
    for stage in range(4):
        shrink = 2.0 ** -(stage + 1) * (1 + 8 * torch.sigmoid(-2 * t))
        torch.testing.assert_close(partner(t, stage, q=2, k=8, b=1),
                                   (t * (1 - shrink)).clamp_min(0))
    assert partner(torch.tensor([1.0]), 0, q=2, k=8, b=1).item() == pytest.approx(
        1 - 0.5 * (1 + 8 / (1 + math.e**2)), rel=1e-5)


def test_dropout_is_a_backbone_option_and_absent_at_0():
    """At p = 0 no dropout layer exists (the reference-exact forward); above, every residual
    block of the U-Net and the RefineNet has one, and eval mode turns them off."""
    for off, on in ((UNet(3, 8, (1, 2), 16, 16.0, 2, 8), UNet(3, 8, (1, 2), 16, 16.0, 2, 8,
                                                            drop=0.3)),
                    (RefineNet(3, 8, stages_for("ncsnv2", 32)),
                     RefineNet(3, 8, stages_for("ncsnv2", 32), drop=0.3))):
        assert not any(isinstance(m, nn.Dropout) for m in off.modules())
        assert sum(isinstance(m, nn.Dropout) for m in on.modules()) >= 4
        assert off.state_dict().keys() == on.state_dict().keys()
        res = 16 if isinstance(on, UNet) else 32
        x, sigma = torch.rand(2, 3, res, res), torch.ones(2)
        on.eval()
        assert torch.equal(on(x, sigma), on(x, sigma))
        on.train()
        assert not torch.equal(on(x, sigma), on(x, sigma))


def test_a_run_with_dropout_resumes_exactly_and_samples_without_it(tmp_path):
    config = tiny_config("model.dropout=0.3")
    whole = train(config, tmp_path / "whole", tensorboard=False)
    train(config, tmp_path / "split", tensorboard=False, stop_after=3)
    second = train(config, tmp_path / "split", resume=True, tensorboard=False)
    assert whole.losses[3:] == second.losses
    a = load_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    assert all(torch.equal(a["ema"][key], b["ema"][key]) for key in a["ema"])
    import pegasus

    model = pegasus.load(tmp_path / "whole")
    job = model.job(num=2, sampler="cas", steps=4)
    first, again = job.images(seed=0), job.images(seed=0)
    assert torch.equal(first, again)  # the run samples with dropout off


def test_a_steps_dropout_masks_follow_its_seed_rank_and_step_alone():
    """On any device (the CUDA generator is not in a checkpoint) and on every rank of DDP:
    the masks are the step's, whatever was drawn before, and the state outside is kept."""
    from pegasus.training.trainer import has_dropout, step_randomness

    net, x, cpu = Masked(0.5).train(), torch.zeros(4, 3, 4, 4), torch.device("cpu")
    drawn = {}
    for key in ((0, 0, 7), (0, 0, 7), (0, 1, 7), (0, 0, 8), (1, 0, 7)):
        torch.manual_seed(len(drawn) + 100)  # a different global state each time
        before = torch.get_rng_state()
        with step_randomness(has_dropout(net), *key, cpu):
            net(x, torch.ones(4))
        assert torch.equal(torch.get_rng_state(), before)
        drawn.setdefault(key, []).append(net.masks[-1])
    first, again = drawn[(0, 0, 7)]
    assert torch.equal(first, again)
    assert all(not torch.equal(first, masks[0]) for key, masks in drawn.items()
               if key != (0, 0, 7))
    plain = nn.Linear(2, 2)
    torch.manual_seed(9)
    state = torch.get_rng_state()
    assert not has_dropout(plain)
    with step_randomness(has_dropout(plain), 0, 0, 7, cpu):  # no dropout: nothing seeded
        assert torch.equal(torch.get_rng_state(), state)
