"""Consistency tuning (ECT) and multistep consistency sampling: the boundary condition, the
closed-form consistency function of a Gaussian, and `pegasus tune` end to end."""

import hashlib
import math
import shutil

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.model.precondition import EDMPreconditioning
from pegasus.model.score import ScoreModel
from pegasus.noise.draws import ECT_P_MEAN, ECT_P_STD, SigmaDraw
from pegasus.noise.schedule import geometric_sigmas
from pegasus.objectives.ect import ConsistencyOutput, c_out, consistency, ect_loss, partner
from pegasus.samplers.consistency import consistency_sampler

runner = CliRunner()
M, S, SIGMA_MIN, SIGMA_MAX, SIGMA_DATA = 0.3, 0.2, 0.01, 10.0, 0.25


def exact_f(x, sigma):
    """The consistency function of data N(M, S^2): the probability-flow ODE carries x at sigma
    to M + (x - M) sqrt(S^2 + sigma_min^2) / sqrt(S^2 + sigma^2) at sigma_min."""
    s = torch.as_tensor(sigma, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return M + (x - M) * math.sqrt(S**2 + SIGMA_MIN**2) / (S**2 + s.square()).sqrt()


def exact_score(x, sigma):
    """The score whose x + sigma^2 s is exact_f: what a perfectly tuned run returns."""
    s = torch.as_tensor(sigma, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (exact_f(x, sigma) - x) / s.square()


def config_overrides(backbone, preconditioning, sizes):
    return [f'model.backbone="{backbone}"', *sizes, f'noise.preconditioning="{preconditioning}"',
            'objective.name="ect"']


@pytest.mark.parametrize("backbone", ["unet", "refinenet"])
@pytest.mark.parametrize("preconditioning", ["ncsnv2", "edm"])
def test_f_at_the_boundary_is_x_exactly_for_every_backbone(backbone, preconditioning):
    """For any weights (the plugins' backbones through pegasus.testing.check_backbone): at the
    run's sigma_L, or at a boundary set below it (ECT's sigma_min), where f at sigma_L then
    moves x."""
    from pegasus.config import build_config
    from pegasus.model.build import build_score_model
    from pegasus.objectives.ect import boundary

    sizes = ["model.ngf=8", "data.res=32"] if backbone == "refinenet" else [
        "model.width=8", "model.emb_dim=16", "model.heads=2", "model.head_dim=8", "data.res=16"]
    config = build_config(overrides=config_overrides(backbone, preconditioning, sizes))
    model = build_score_model(config)[0].eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # not an initialisation that happens to be benign
    x = torch.rand(3, 3, config.data.res, config.data.res)
    assert boundary(config) == config.noise.sigma_min
    bottom = torch.full((3,), config.noise.sigma_min)
    with torch.no_grad():
        assert torch.equal(consistency(model, x, bottom), x)
        above = consistency(model, x, bottom * 4)
    assert torch.isfinite(above).all() and not torch.equal(above, x)
    ect = build_config(overrides=[*config_overrides(backbone, preconditioning, sizes),
                                  "objective.boundary=0.001"])
    model = build_score_model(ect)[0].eval()
    with torch.no_grad():
        assert torch.equal(consistency(model, x, torch.full((3,), 0.001)), x)
        assert not torch.equal(consistency(model, x, bottom), x)


def test_c_out_and_the_partner_schedule():
    sigma = torch.tensor([SIGMA_MIN, 2 * SIGMA_MIN, 1.0, 100.0])
    assert c_out(sigma, SIGMA_MIN).tolist() == pytest.approx([0.0, 0.5, 0.99, 0.9999])
    t = torch.logspace(-2, 1, 50)
    r = [partner(t, stage, q=4, k=8, b=1) for stage in range(6)]
    assert torch.all(r[0][t < 0.2] == 0)  # stage 0 at small t: denoising, the clean image
    for early, late in zip(r[:-1], r[1:], strict=True):
        assert torch.all(late >= early) and torch.all(late < t)
    assert torch.all(r[5] > 0.99 * t)  # late stages: neighbouring points of one trajectory


class Linear(nn.Module):
    """A backbone linear in its input with sigma-dependent weights, F = A(u) x + B(u) for
    u = log(sigma) / 4: rich enough to hold a Gaussian's exact consistency function."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 2))

    def forward(self, x, sigma):
        a, b = self.net(sigma.float().log().div(4).view(-1, 1)).unbind(1)
        return a.view(-1, 1, 1, 1) * x + b.view(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def tuned_gaussian():
    """Data N(M, S^2) as 1-pixel images; EDM's preconditioning; ECT in 4 stages."""
    torch.manual_seed(0)
    edm = EDMPreconditioning(torch.full((1, 1, 1), 0.5), SIGMA_DATA)
    model = ScoreModel(Linear(), edm, output=ConsistencyOutput(SIGMA_MIN), learns="consistency")
    draw = SigmaDraw("log-normal", geometric_sigmas(SIGMA_MAX, SIGMA_MIN, 10), ECT_P_MEAN,
                     ECT_P_STD)
    iters = 2400
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Decayed to 0, so that what is left is the loss's bias, not the last steps' noise.
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / iters)
    g = torch.Generator().manual_seed(1)
    for step in range(iters):
        x = M + S * torch.randn(512, 1, 1, 1, generator=g)
        loss = ect_loss(model, x, draw=draw, stage=step // (iters // 4), q=4, k=8, b=1, c=0,
                        sigma_min=SIGMA_MIN, sigma_data=SIGMA_DATA, generator=g).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return model.eval()


def test_a_short_tuning_learns_the_gaussians_consistency_function(tuned_gaussian):
    """Within 6% of the data's spread at every sigma from 0.02 to 8, across +-2 of the noisy
    data's own spread (4.5% at worst on this seed)."""
    for sigma in (0.02, 0.1, 0.5, 2.0, 8.0):
        x = M + math.sqrt(S**2 + sigma**2) * torch.linspace(-2, 2, 9).view(-1, 1, 1, 1)
        sigmas = torch.full((9,), sigma)
        with torch.no_grad():
            error = (consistency(tuned_gaussian, x, sigmas) - exact_f(x, sigmas)).abs().max()
        assert error < 0.06 * S, (sigma, error.item())


@pytest.mark.parametrize("steps", [1, 2])
def test_one_and_two_step_samples_of_the_tuned_gaussian_have_its_moments(tuned_gaussian, steps):
    from pegasus.noise.schedule import karras_sigmas

    g = torch.Generator().manual_seed(3)
    x0 = 0.5 + SIGMA_MAX * torch.randn(20000, 1, 1, 1, generator=g)
    grid = karras_sigmas(SIGMA_MAX, SIGMA_MIN, steps + 1)[:-1]
    x = consistency_sampler(tuned_gaussian, x0, grid, sigma_min=SIGMA_MIN, generator=g)
    assert abs(x.mean().item() - M) < 0.02  # its standard error is 0.0014
    assert abs(x.var().item() / (S**2 + SIGMA_MIN**2) - 1) < 0.1


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_exact_consistency_function_samples_the_data_in_any_number_of_steps(steps):
    """With f exact, each step lands on N(M, S^2 + sigma_min^2) and its renoising on the data's
    perturbation at the next sigma: the moments hold for any grid."""
    from pegasus.noise.schedule import karras_sigmas

    g = torch.Generator().manual_seed(4)
    x0 = M + math.sqrt(S**2 + SIGMA_MAX**2) * torch.randn(20000, 4, generator=g,
                                                          dtype=torch.float64)
    grid = karras_sigmas(SIGMA_MAX, SIGMA_MIN, steps + 1)[:-1].double()
    x = consistency_sampler(exact_score, x0, grid, sigma_min=SIGMA_MIN, generator=g)
    assert abs(x.mean().item() - M) < 0.005
    assert abs(x.var().item() / (S**2 + SIGMA_MIN**2) - 1) < 0.03


def test_eq4_interpolates_the_noise_each_consistency_step_injects():
    """Column k renoises with cos(theta_k) z_p + sin(theta_k) z_q (eq. 4): column 0 is the plain
    chain on stream p, column N + 1 the one on stream q, and the columns between differ."""
    from pegasus.noise.schedule import Schedule
    from pegasus.noise.streams import gaussian_noise_sampler
    from pegasus.samplers.plan import plan_sampler
    from pegasus.tasks.interpolation import blend_strips

    schedule = Schedule(SIGMA_MAX, SIGMA_MIN, 10, 1, 1e-5)
    plan = plan_sampler("consistency", schedule, 3)
    x0 = plan.start_point(None, torch.randn(4, 2, generator=torch.Generator().manual_seed(9)))
    gp, gq = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    strips = blend_strips(exact_score, x0, plan, n=3, noise_p=gaussian_noise_sampler(x0, gp),
                          noise_q=gaussian_noise_sampler(x0, gq))
    plain = [plan.run(exact_score, x0, generator=torch.Generator().manual_seed(seed))
             for seed in (1, 2)]
    torch.testing.assert_close(strips[:, 0], plain[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(strips[:, -1], plain[1], rtol=0, atol=1e-6)
    for k in range(1, 4):
        assert not torch.allclose(strips[:, k], strips[:, k - 1])


@pytest.fixture(scope="module")
def tuned_run(run, tmp_path_factory):
    """The module's tiny run, guide and judge trained, then tuned for 4 steps by the CLI."""
    for command in ("train-guide", "train-judge"):
        result = runner.invoke(app, [command, "--run", str(run), "--iters", "2",
                                     "--batch-size", "8"])
        assert result.exit_code == 0, result.output
    before = _digest(run)
    target = tmp_path_factory.mktemp("tuned") / "ct"
    result = runner.invoke(app, ["tune", "--run", str(run), "--to", str(target), "--iters", "4"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "objective ect: easy consistency tuning (ECT" in said and f"from {run}" in said
    assert "done: step 4" in said
    assert _digest(run) == before  # the source run is only read
    return target


def _digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_tuned_run_starts_from_its_sources_ema_and_is_an_ordinary_run(run, tuned_run, tmp_path):
    import pegasus
    from pegasus.run.checkpoint import load_checkpoint

    state = load_checkpoint(next((tuned_run / "checkpoints").glob("*.pt")))
    assert state["config"]["objective"]["name"] == "ect"
    assert state["config"]["objective"]["source"] == str(run)
    # The recipe unless told: the source's dropout (none), EDM's weight, 4 stages, f the
    # identity at sigma_L.
    from pegasus.training.tune import STAGES

    assert state["config"]["model"]["dropout"] == 0.0
    assert state["config"]["objective"]["weight"] == "edm"
    assert state["config"]["objective"]["boundary"] == "sigma_L"
    assert state["config"]["objective"]["stage_every"] == max(1, 4 // STAGES)
    assert (tuned_run / "guide.pt").is_file() and (tuned_run / "judge.pt").is_file()
    source, tuned = pegasus.load(run), pegasus.load(tuned_run)
    assert tuned.trained.model.learns == "consistency" and source.trained.model.learns == "score"
    # Resumed as any run is; exported to safetensors and loaded back as one network.
    result = runner.invoke(app, ["train", "--run", str(tuned_run), "--resume", "--iters", "6"])
    assert result.exit_code == 0 and "done: step 6" in result.output, result.output
    result = runner.invoke(app, ["export", "--run", str(tuned_run), "--out",
                                 str(tmp_path / "ct.safetensors")])
    assert result.exit_code == 0, result.output
    exported = pegasus.load(tmp_path / "ct.safetensors")
    assert exported.trained.model.learns == "consistency"
    assert exported.trained.weights_digest() == pegasus.load(tuned_run).trained.weights_digest()


def test_consistency_sampling_is_seeded_and_image_i_is_the_same_for_any_num_or_batch(tuned_run):
    import pegasus

    model = pegasus.load(tuned_run)
    for steps in (1, 3):
        eight = model.job(num=8, sampler="consistency", steps=steps, batch_size=3).images(seed=5)
        three = model.job(num=3, sampler="consistency", steps=steps, batch_size=2).images(seed=5)
        # Equal up to the last float bits: the network's kernels are chosen by batch size on a
        # CPU (as tests/test_training.py's sampling check says).
        torch.testing.assert_close(eight[:3], three, rtol=0, atol=1e-4)
        assert torch.isfinite(eight).all()
        assert torch.equal(three, model.job(num=3, sampler="consistency", steps=steps,
                                            batch_size=2).images(seed=5))
        other = model.job(num=3, sampler="consistency", steps=steps).images(seed=6)
        assert not torch.equal(other, three)
    plan = model.trained.plan("consistency", 3)
    assert plan.evaluations == 3 and len(plan.sigmas) == 3 and plan.stochastic
    assert not model.trained.plan("consistency", 1).stochastic


def test_blends_inpainting_and_guidance_with_the_consistency_sampler(tuned_run):
    import pegasus

    model = pegasus.load(tuned_run)
    a = model.blend(n=3, k=2, strips=1, sampler="consistency", steps=2).strips
    assert a.shape == (1, 5, 3, 16, 16) and torch.isfinite(a).all()
    # One step injects nothing: it blends by slerp of the start.
    one = model.blend(n=3, k=2, strips=1, sampler="consistency", steps=1, mode="slerp").strips
    assert torch.isfinite(one).all()
    guided = model.blend(n=3, k=2, strips=1, sampler="consistency", steps=2, source="horse",
                         target="bird", guidance=2.0, report=True)
    assert guided.strips.shape == a.shape and guided.reports
    inpainted = model.inpaint("sample:1", num=2, sampler="consistency", steps=2)
    kept = inpainted.mask[0] < 0.5
    assert torch.equal(inpainted.completions[:, :, kept], inpainted.given[None, :, kept].expand(
        2, -1, -1))


def _one_line(result, needle):
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], text


def test_refusals_are_one_line(run, tuned_run, tmp_path):
    out = ["--out", str(tmp_path / "x.png")]
    _one_line(runner.invoke(app, ["sample", "--run", str(run), "--sampler", "consistency", *out]),
              "consistency-tuned")
    _one_line(runner.invoke(app, ["sample", "--run", str(tuned_run), "--sampler", "consistency",
                                  "--steps", "0", *out]), "steps")
    _one_line(runner.invoke(app, ["encode", "--run", str(tuned_run), "--image", "sample:0",
                                  "--out", str(tmp_path / "z.pt")]), "consistency")
    _one_line(runner.invoke(app, ["export", "--run", str(tuned_run), "--format", "ncsnv2",
                                  "--out", str(tmp_path / "c.pth")]), "consistency-tuned run")
    _one_line(runner.invoke(app, ["tune", "--run", str(tuned_run), "--to", str(tmp_path / "b")]),
              "consistency-tuned already")
    _one_line(runner.invoke(app, ["tune", "--run", str(run), "--to", str(run)]), "folder of its own")
    _one_line(runner.invoke(app, ["tune", "--run", str(run), "--to", str(tuned_run)]),
              "already holds a run")
    _one_line(runner.invoke(app, ["tune", "--run", str(run), "--to", str(tmp_path / "c"),
                                  "--set", 'objective.name="dsm"']), "objective.name")


def test_every_verb_plans_through_one_door(run, tuned_run, tmp_path):
    """Consistency sampling of an untuned run is refused in one line by every verb, drawn,
    masked and two-picture blends included, and by Model.blend; a tuned run refuses the
    samplers of a diffusion model's score (ODEs among them), and a budget past what
    consistency sampling takes."""
    import pegasus
    from pegasus.errors import FieldError

    out = ["--out", str(tmp_path / "o.png")]
    consistency = ["--sampler", "consistency", "--steps", "2"]
    blend = ["blend", "--run", str(run), "--n", "3", "--k", "1", "--strips", "1", *out]
    for args in ([*blend, *consistency], [*blend, "--sampler", "consistency"],
                 [*blend, *consistency, "--image", "sample:1", "--mask", "top"],
                 [*blend, *consistency, "--image-a", "sample:1", "--image-b", "sample:2",
                  "--mode", "sdedit"],
                 ["inpaint", "--run", str(run), "--image", "sample:1", *consistency, *out],
                 ["eval", "--run", str(run), "--num", "4", *consistency],
                 ["sample", "--run", str(run), *consistency, *out]):
        _one_line(runner.invoke(app, args), "consistency-tuned runs only")
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(FieldError, match="consistency-tuned runs only"):
        pegasus.load(run).blend(sampler="consistency", steps=2, n=3, k=1, strips=1)
    for sampler, needle in (("ipndm", "integrates a diffusion model's score"),
                            ("als", "integrates a diffusion model's score"),
                            ("heun", "integrates a diffusion model's score")):
        _one_line(runner.invoke(app, ["sample", "--run", str(tuned_run), "--sampler", sampler,
                                      *out]), needle)
    _one_line(runner.invoke(app, ["sample", "--run", str(tuned_run), "--sampler", "consistency",
                                  "--steps", "1000", *out]), "between 1 and 8")
    # Their defaults: the tuned run's own sampler, the base run's for its training.
    result = runner.invoke(app, ["sample", "--run", str(tuned_run), "--num", "2", *out])
    assert result.exit_code == 0 and "(consistency, 2 evaluations" in result.output, result.output
    result = runner.invoke(app, ["samplers", "--run", str(tuned_run)])
    assert "draws with consistency in 2 evaluations unless told: it is consistency-tuned" in (
        " ".join(result.output.split()))


def test_tune_refuses_in_one_line_before_any_work_and_leaves_no_folder(run, tmp_path):
    """The third audit's cases: the network's options are the source's, the objective's are
    checked up front, provenance is tune's to write, and the target lies outside the source."""
    target = tmp_path / "t"
    link = tmp_path / "link"
    link.symlink_to(run)
    for extra, needle in (
            (["--set", "model.width=32"], "cannot change the model section when tuning"),
            (["--set", "model.mults=[1]"], "cannot change the model section when tuning"),
            (["--set", "model.emb_dim=32"], "cannot change the model section when tuning"),
            (["--set", "objective.c=nan"], "c must be a finite number"),
            (["--set", "objective.q=1.0"], "q must be above 1"),
            (["--q", "0.5"], "q must be above 1"),
            (["--dropout", "1"], "dropout must be in [0, 1)"),
            (["--weight", "huber"], "weight"),
            (["--c", "-1"], "k, b and c must be 0 or more"),
            (["--c", "often"], "objective.c"),
            (["--stages", "0"], "stages must be at least 1"),
            (["--ema", "1.5"], "ema must be in [0, 1)"),
            (["--set", 'objective.source="/etc"'], "cannot change objective.name or "
                                                   "objective.source"),
            (["--iters", "1000000000000"], "iters must be at most 100,000,000")):
        # The last --iters given counts: the case that gives its own overrides the 2.
        _one_line(runner.invoke(app, ["tune", "--run", str(run), "--to", str(target),
                                      "--iters", "2", *extra]), needle)
        assert not target.exists(), extra
    before = _digest(run)
    for inside in (run / "checkpoints" / "x", link / "y"):
        _one_line(runner.invoke(app, ["tune", "--run", str(run), "--to", str(inside)]),
                  "lies inside the run it tunes")
    assert _digest(run) == before
    # A damaged newest checkpoint is passed over, as resuming does; a hostile guide is refused
    # before anything is written.
    source = tmp_path / "source"
    shutil.copytree(run, source)
    shutil.copy(source / "checkpoints" / sorted(p.name for p in (source / "checkpoints").glob(
        "checkpoint-*.pt"))[-1], source / "checkpoints" / "checkpoint-00000099.pt")
    (source / "checkpoints" / "checkpoint-00000099.pt").write_bytes(b"not a checkpoint")
    (source / "checkpoints" / "latest").write_text("checkpoint-00000099.pt")
    (source / "guide.pt").write_bytes(b"\x80\x04not a guide")
    _one_line(runner.invoke(app, ["tune", "--run", str(source), "--to", str(target), "--iters",
                                  "2"]), "guide.pt")
    assert not target.exists()
    (source / "guide.pt").unlink()
    result = runner.invoke(app, ["tune", "--run", str(source), "--to", str(target), "--iters", "2"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "falling back to the previous checkpoint" in said, said


def test_a_guide_trained_beside_the_tuning_is_carried_when_it_ends(run, tmp_path):
    """The demo trains the guide while the tuning runs: one the source gains meanwhile is
    copied when the tuning ends; one the tuned run already has is never replaced, and a damaged
    late one costs a warning, not the tuning."""
    from pegasus.training.tune import tune

    source = tmp_path / "source"
    shutil.copytree(run, source, ignore=shutil.ignore_patterns("guide.pt", "judge.pt"))
    guide = (run / "guide.pt").read_bytes() if (run / "guide.pt").is_file() else None
    if guide is None:
        assert runner.invoke(app, ["train-guide", "--run", str(run), "--iters", "2"]).exit_code == 0
        guide = (run / "guide.pt").read_bytes()
    said = []

    def guide_trained_meanwhile(*args):
        (source / "guide.pt").write_bytes(guide)
        (source / "judge.pt").write_bytes(b"not a judge")

    tune(source, tmp_path / "ct", iters=2, on_start=guide_trained_meanwhile, warn=said.append,
         tensorboard=False)
    assert (tmp_path / "ct" / "guide.pt").read_bytes() == guide
    assert not (tmp_path / "ct" / "judge.pt").exists()
    assert len(said) == 1 and "judge.pt" in said[0] and "not copied" in said[0], said


def test_searched_sigmas_are_written_into_the_run_and_walked_at_their_budgets(run, tuned_run,
                                                                            tmp_path):
    """search-sigmas writes 2 and 3 evaluations' sigmas; consistency walks them there, refuses
    4 in one line until it is searched, and takes given ones instead (--sigmas)."""

    import pegasus
    from pegasus.run.sigmas import SearchedSigmas

    tuned = tmp_path / "ct"
    shutil.copytree(tuned_run, tuned)
    result = runner.invoke(app, ["search-sigmas", "--run", str(tuned), "--steps", "3",
                                 "--num", "8", "--probes", "1"])
    assert result.exit_code == 0, result.output
    searched = SearchedSigmas.read(tuned / "consistency-sigmas.toml")
    assert set(searched.by_steps) == {2, 3} and searched.num == 8
    two, three = searched.by_steps[2].sigmas, searched.by_steps[3].sigmas
    assert len(two) == 1 and three[0] == two[0] and three[1] < three[0]
    assert "3 evaluations: sigma_1, then" in " ".join(result.output.split())
    model = pegasus.load(tuned)

    def given(below, steps):  # the tiny run's U-Net knows its levels: the sigmas snap to them
        return model.trained.plan(f"consistency[sigmas={list(below)}]", steps).sigmas

    for steps, below in ((2, two), (3, three)):
        assert torch.equal(model.trained.plan("consistency", steps).sigmas, given(below, steps))
    assert torch.equal(model.trained.plan("consistency").sigmas, given(two, 2))
    assert len(model.trained.plan("consistency", 1).sigmas) == 1
    out = ["--out", str(tmp_path / "x.png")]
    _one_line(runner.invoke(app, ["sample", "--run", str(tuned), "--sampler", "consistency",
                                  "--steps", "4", *out]), "were searched for 2 and 3")
    result = runner.invoke(app, ["sample", "--run", str(tuned), "--num", "2", "--steps", "4",
                                 "--sigmas", "0.5,0.2,0.1", *out])
    assert result.exit_code == 0, result.output
    _one_line(runner.invoke(app, ["sample", "--run", str(tuned), "--sampler", "heun",
                                  "--sigmas", "0.5", *out]), "are the consistency sampler's")
    _one_line(runner.invoke(app, ["sample", "--run", str(tuned), "--sigmas", "half", *out]),
              "give numbers separated by commas")
    # Untuned runs and runs without a judge are refused before any sampling.
    _one_line(runner.invoke(app, ["search-sigmas", "--run", str(run)]), "is not consistency-tuned")
    (tuned / "judge.pt").unlink()
    _one_line(runner.invoke(app, ["search-sigmas", "--run", str(tuned)]), "train-judge")
