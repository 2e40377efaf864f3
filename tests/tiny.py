"""A tiny, fast configuration for training tests."""

from pegasus.config import build_config

TINY = [
    "data.dataset=sprites", "data.res=16", "data.size=12",
    'model.backbone="unet"', "model.width=8", "model.emb_dim=16", "model.heads=2",
    "model.head_dim=8",
    "noise.sigma_max=10.0", "noise.levels=4", "noise.steps_per_level=2", "noise.eps=1e-4",
    "train.batch_size=4", "train.iters=6", "train.log_every=1", "train.sample_every=0",
    "train.checkpoint_every=100", "train.grid=4", 'train.device="cpu"', "train.lr=1e-3",
]


def tiny_config(*extra: str):
    return build_config(overrides=TINY + list(extra))


def sample_images(score_fn, schedule, *, num, res, seed, batch_size=None, plan=None,
                  device="cpu"):
    """Images by `plan` (default: annealed Langevin on `schedule`) as a sampling job draws them
    (run/job.py): the chains graphed by the fast path's rule, each image from its own stream."""
    import torch

    from pegasus.fastpath.graphs import chain_graphs
    from pegasus.run.job import blocks, draw_block
    from pegasus.samplers.plan import plan_sampler

    plan = plan or plan_sampler("als", schedule)
    score, capture = chain_graphs(plan, score_fn, device)
    return torch.cat([draw_block(score, plan, first=first, size=size, shape=(3, res, res),
                                 seed=seed, device=device, capture=capture)[: num - first]
                      for first, size in blocks(0, num, batch_size)])


def on_levels(schedule):
    """The sigma rounding of a network that knows `schedule`'s levels alone
    (ScoreModel.round_sigma), for plan_sampler's `round_sigma`."""
    import torch

    from pegasus.model.score import ScoreModel

    model = ScoreModel(torch.nn.Identity(), discrete=True)
    model.know(schedule.sigmas())
    return model.round_sigma
