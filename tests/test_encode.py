"""The probability-flow ODE both ways (encode, decode), likelihood in bits per dimension, and
blends of two given pictures (ode and sdedit): closed forms on Gaussians, then a tiny run."""


import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.noise.schedule import Schedule
from pegasus.samplers.plan import plan_sampler
from pegasus.tasks.encode import integrate
from pegasus.tasks.likelihood import bits_per_dim, log_likelihood
from test_errors import one_line

runner = CliRunner()
SCHEDULE = Schedule(sigma_max=20.0, sigma_min=0.01, levels=60, steps_per_level=3, eps=1e-5)


def gaussian(m, cov):
    """The exact score of N(m, cov) blurred by N(0, sigma^2 I), for x (N, D)."""
    def score(x, sigma):
        eye = torch.eye(cov.shape[0], dtype=torch.float64)
        precision = torch.linalg.inv(cov[None] + sigma.double().view(-1, 1, 1) ** 2 * eye)
        return -(precision @ (x.double() - m)[..., None])[..., 0].to(x.dtype)
    return score


def _covariance(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(0.01, 0.09, d, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("sampler,steps", [("heun", 61), ("dpmpp-2m", 40)])
def test_encode_then_decode_returns_the_input_and_encode_is_the_exact_transport(sampler, steps):
    """For a Gaussian the ODE is linear: x(sigma) = m + A(sigma) (x0 - m) with A(sigma) =
    (cov + sigma^2)^(1/2) (cov + sigma_L^2)^(-1/2). Encoding lands there within 1%, with the
    error of a second-order solver (doubling the steps divides it by about 4), and decoding the
    encoding gives the input back within 0.2%."""
    d, m = 6, torch.full((6,), 0.4, dtype=torch.float64)
    cov = _covariance(d)
    score = gaussian(m, cov)
    g = torch.Generator().manual_seed(1)
    x = m + torch.randn(500, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    w, v = torch.linalg.eigh(cov)
    a = v @ torch.diag(((w + 20.0**2) / (w + 0.01**2)).sqrt()) @ v.T
    exact = m + (x - m) @ a.T
    errors = []
    for n in (steps, 2 * steps - 1):
        plan = plan_sampler(sampler, SCHEDULE, n, denoise=False)
        z = integrate(score, x, plan, upward=True)
        errors.append(((z - exact).norm() / (exact - m).norm()).item())
    assert errors[0] < 0.01 and errors[1] < 0.3 * errors[0], errors
    back = integrate(score, z, plan, upward=False)
    assert ((back - x).norm() / (x - m).norm()).item() < 0.002


def test_the_likelihood_is_the_closed_form_gaussian_density_within_1_percent():
    """NLL by the ODE and Hutchinson's estimator (32 Rademacher probes; the covariance is not
    diagonal, so a single probe is noisy) against log N(x; m, cov + sigma_L^2 I) in closed form:
    the mean over 200 points agrees within 1% and within 0.01 nats per dimension (measured:
    0.026 nats of 10.7, the probes' noise 0.015)."""
    d, m = 8, torch.full((8,), 0.5, dtype=torch.float64)
    cov = _covariance(d, seed=2) / 10
    plan = plan_sampler("heun", SCHEDULE, 161)
    g = torch.Generator().manual_seed(3)
    x = m + torch.randn(200, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    estimate = log_likelihood(gaussian(m, cov), x, plan.sigmas.double(), centre=0.5, probes=32,
                              generator=g)
    full = cov + 0.01**2 * torch.eye(d, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(m, full).log_prob(x)
    error = (estimate - exact).mean().item()
    assert abs(error / exact.mean().item()) < 0.01 and abs(error) < 0.01 * d, error
    # Bits per dimension of 8-bit pixels: the log2 of the bin width 1/256 added per dimension.
    assert bits_per_dim(torch.tensor([0.0]), 4).item() == 8.0


def _pictures(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (16, 16), (200, 60, 40)).save(a)
    Image.new("RGB", (16, 16), (40, 90, 210)).save(b)
    return a, b


def test_ode_strips_end_on_the_two_pictures_as_well_as_they_decode(run, tmp_path):
    import pegasus
    from pegasus.tasks.encode import psnr
    from pegasus.tasks.inputs import read_image

    a, b = _pictures(tmp_path)
    model = pegasus.load(run)
    result = model.blend_pictures(str(a), str(b), mode="ode", n=3, k=2, steps=15)
    assert result.strips.shape == (1, 5, 3, 16, 16)
    image = read_image(a, 16)
    again = model.decode(model.encode(image[None], steps=15))[0]
    assert abs(psnr(result.strips[0, 0], image) - psnr(again, image)) < 0.5  # the same decoding
    assert torch.equal(model.blend_pictures(str(a), str(b), mode="ode", n=3, k=2,
                                            steps=15).strips, result.strips)  # deterministic


def test_sdedit_at_sigma_l_keeps_the_pictures_and_at_sigma_1_forgets_them(run, tmp_path):
    import pegasus

    a, b = _pictures(tmp_path)
    model = pegasus.load(run)
    near = model.blend_pictures(str(a), str(b), mode="sdedit", n=2, k=1, strips=2, strength="0",
                                sampler="cas", steps=3)
    far = model.blend_pictures(str(a), str(b), mode="sdedit", n=2, k=1, strips=2, strength="1",
                               sampler="cas")
    near_a, far_a = (r.ends["mean |k=0 - A|"] for r in (near, far))
    # The tiny schedule's last two levels are 0.1 and 0.01: strength 0 starts at 0.1, whose noise
    # alone moves pixels by 0.1 sqrt(2 / pi) = 0.08 on average before the chain removes some.
    assert near_a < 0.12 and far_a > 4 * near_a, (near_a, far_a)
    again = model.blend_pictures(str(a), str(b), mode="sdedit", n=2, k=1, strips=2, strength="0",
                                 sampler="cas", steps=3)
    assert torch.equal(again.strips, near.strips)  # seeded


def test_encode_decode_and_two_picture_blends_through_the_cli(run, tmp_path):
    a, b = _pictures(tmp_path)
    latent = tmp_path / "a.pt"
    result = runner.invoke(app, ["encode", "--run", str(run), "--image", str(a), "--out", str(latent),
                                 "--steps", "9"])
    assert result.exit_code == 0 and "dB PSNR" in result.output, result.output
    result = runner.invoke(app, ["decode", "--run", str(run), "--latent", str(latent), "--out",
                                 str(tmp_path / "back.png")])
    assert result.exit_code == 0 and Image.open(tmp_path / "back.png").size == (16, 16)
    for mode in ("ode", "sdedit"):
        result = runner.invoke(app, ["blend", "--run", str(run), "--image-a", str(a), "--image-b",
                                     "sample:7", "--mode", mode, "--n", "2", "--k", "1", "--steps",
                                     "9" if mode == "ode" else "4", "--sampler",
                                     "heun" if mode == "ode" else "cas",
                                     "--out", str(tmp_path / f"{mode}.png")])
        assert result.exit_code == 0 and "k=0" in result.output, result.output


def test_bad_inputs_of_encoding_and_picture_blends_are_one_line_each(run, tmp_path):
    from pegasus.training import train
    from tiny import tiny_config

    a, b = _pictures(tmp_path)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    other = tmp_path / "other"
    train(tiny_config("train.iters=1", "noise.levels=5"), other, tensorboard=False)
    latent = tmp_path / "other.pt"
    assert runner.invoke(app, ["encode", "--run", str(other), "--image", str(a), "--out", str(latent),
                               "--steps", "5"]).exit_code == 0
    blend = ["blend", "--run", str(run), "--out", str(tmp_path / "x.png"), "--n", "2", "--k", "1"]
    cases = [
        (["encode", "--run", str(run), "--image", str(tiny), "--out", str(tmp_path / "t.pt")],
         "1 x 1 px"),
        (["encode", "--run", str(run), "--image", str(a), "--sampler", "cas"],
         "--sampler cas is not an ODE solver"),
        (["decode", "--run", str(run), "--latent", str(latent)], "was encoded by another run"),
        ([*blend, "--image-a", str(a), "--image-b", str(b), "--mode", "sdedit", "--strength", "2"],
         "--strength is 2; a fraction"),
        ([*blend, "--image-a", str(a), "--image-b", str(b), "--mode", "sdedit", "--strength",
          "sigma=500"], "outside the run's schedule"),
        ([*blend, "--image-a", str(a)], "needs both --image-a and --image-b"),
        ([*blend, "--image-a", str(a), "--image-b", str(b), "--mode", "eq4"], "--mode must be ode"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        one_line(result, needle)
        assert result.output.startswith("error:"), (args, result.output)


def test_masks_keep_the_first_picture_and_guidance_changes_the_strips(run, tmp_path):
    import pegasus

    a, b = _pictures(tmp_path)
    model = pegasus.load(run)
    for mode, sampler, steps in (("ode", "heun", 9), ("sdedit", "cas", 3)):
        masked = model.blend_pictures(str(a), str(b), mode=mode, n=2, k=1, sampler=sampler,
                                      steps=steps, mask="right-half")
        # Black (the left half) keeps picture A in every column, exactly.
        left = masked.strips[..., :8]
        assert torch.equal(left, masked.a[..., :8].expand_as(left).to(left.device)), mode
    assert runner.invoke(app, ["train-guide", "--run", str(run), "--iters", "3", "--batch-size",
                               "8"]).exit_code == 0
    plain = model.blend_pictures(str(a), str(b), mode="ode", n=2, k=1, steps=9)
    guided = model.blend_pictures(str(a), str(b), mode="ode", n=2, k=1, steps=9, source="horse",
                                  target="bird", guidance=5.0)
    assert guided.strips.isfinite().all() and not torch.equal(guided.strips, plain.strips)


def test_grey_transparent_and_odd_sized_pictures_are_converted_with_a_note(run, tmp_path):
    import pegasus
    from pegasus.errors import PegasusWarning

    grey, rgba = tmp_path / "grey.png", tmp_path / "rgba.png"
    Image.new("L", (20, 24), 128).save(grey)
    Image.new("RGBA", (16, 16), (10, 200, 30, 90)).save(rgba)
    with pytest.warns(PegasusWarning) as notes:
        result = pegasus.load(run).blend_pictures(str(grey), str(rgba), n=2, k=1, steps=9)
    text = " ".join(str(n.message) for n in notes)
    assert "grey image: repeated to three channels" in text
    assert "20 x 24 px: centre-cropped and resized" in text
    assert "has an alpha channel: dropped" in text
    assert result.strips.shape == (1, 4, 3, 16, 16)
