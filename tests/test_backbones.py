import pytest
import torch

from pegasus.backbones.refinenet import RefineNet, stages_for
from pegasus.backbones.unet import LinearAttention, ReZero, UNet
from pegasus.model.score import ScoreModel
from pegasus.registry import RegistryError, get_backbone


@pytest.mark.parametrize("res", [32, 48, 64, 96])
def test_refinenet_shapes_and_finite_outputs(res):
    spec, _ = get_backbone("refinenet")
    model = ScoreModel(spec.build({"ngf": 8}, res=res))
    x = torch.rand(2, 3, res, res)
    out = model(x, torch.tensor([10.0, 0.01]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_refinenet_parameter_count_matches_the_published_network():
    """NCSNv2 at ngf=128 for 32 px has about 30 M parameters (docs/science.md)."""
    model = RefineNet(3, 128, stages_for("auto", 32))
    count = sum(p.numel() for p in model.parameters())
    assert 29_000_000 < count < 31_000_000, count


def test_refinenet_uses_the_deeper_variant_from_96_px():
    assert len(stages_for("auto", 64)) == 4
    assert len(stages_for("auto", 96)) == 5


def test_score_is_the_backbone_output_divided_by_sigma():
    spec, _ = get_backbone("refinenet")
    backbone = spec.build({"ngf": 8}, res=32)
    model = ScoreModel(backbone)
    x, sigma = torch.rand(2, 3, 32, 32), torch.tensor([2.0, 0.5])
    torch.testing.assert_close(model(x, sigma), backbone(x, sigma) / sigma.view(-1, 1, 1, 1))


def test_unsupported_resolution_is_a_clear_error():
    spec, _ = get_backbone("refinenet")
    with pytest.raises(RegistryError, match="does not support 20 px"):
        spec.build({"ngf": 8}, res=20)


@pytest.mark.parametrize("res", [32, 48, 64, 96])
def test_unet_shapes_and_finite_outputs(res):
    spec, _ = get_backbone("unet")
    model = ScoreModel(spec.build({"width": 8, "emb_dim": 16, "head_dim": 8, "heads": 2}, res=res))
    x = torch.rand(2, 3, res, res)
    out = model(x, torch.tensor([10.0, 0.01]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unet_groupnorm_silu_option():
    spec, _ = get_backbone("unet")
    model = spec.build({"width": 8, "emb_dim": 16, "head_dim": 8, "norm": "groupnorm",
                        "act": "silu"}, res=32)
    assert torch.isfinite(model(torch.rand(1, 3, 32, 32), torch.ones(1))).all()


def test_linear_attention_matches_a_naive_computation():
    """out_i = sum_j (q_i . k_j) v_j with an explicit pixels x pixels matrix, per head."""
    attn = LinearAttention(channels=8, heads=2, head_dim=4)
    x = torch.randn(3, 8, 5, 6)
    q, k, v = attn.qkv_heads(x)
    b, h, d, n = q.shape
    naive = torch.zeros(b, h, d, n)
    for bi in range(b):
        for hi in range(h):
            weights = q[bi, hi].T @ k[bi, hi]  # (n, n): pixel i attends to pixel j
            naive[bi, hi] = (weights @ v[bi, hi].T).T
    expected = attn.out(naive.reshape(b, h * d, 5, 6))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_rezero_starts_as_identity_and_its_gate_learns():
    block = ReZero(LinearAttention(8, 2, 4))
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(block(x), x)  # a = 0 at the start
    block(x).square().sum().backward()
    assert block.gate.grad is not None and block.gate.grad.abs().item() > 0
    with torch.no_grad():
        block.gate.fill_(0.5)
    assert not torch.allclose(block(x), x)  # the attention output reaches the result


def test_unet_embeds_log_sigma():
    model = UNet(3, 8, (1, 2, 2), emb_dim=16, head_dim=8)
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(model(x, torch.tensor([0.01])), model(x, torch.tensor([10.0])))


def test_instancenorm_plus_plus_is_the_published_formula():
    """docs/science.md, in float64 and naively: gamma ((x - mu)/sqrt(s^2 + e) + alpha (mu - mean(mu)) /
    sqrt(var(mu) + e)) + beta, with the channel variance of the means unbiased, as the reference
    computes it."""
    from pegasus.backbones.layers import InstanceNormPlus, instance_norm_plus

    norm = InstanceNormPlus(5).double()
    with torch.no_grad():
        norm.beta.copy_(torch.randn(5))
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64) * 3 + 1
    mu = x.mean(dim=(2, 3), keepdim=True)
    s2 = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    m = mu.mean(dim=1, keepdim=True)
    v = mu.var(dim=1, unbiased=True, keepdim=True)
    g, a, b = (p.view(1, -1, 1, 1) for p in (norm.gamma, norm.alpha, norm.beta))
    expected = g * ((x - mu) / (s2 + 1e-5).sqrt() + a * (mu - m) / (v + 1e-5).sqrt()) + b
    torch.testing.assert_close(norm(x), expected, rtol=1e-12, atol=1e-12)
    for single_pass in (True, False):  # the GPU form and the CPU form
        out = instance_norm_plus(x, norm.gamma, norm.alpha, norm.beta, norm.eps, single_pass=single_pass)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("single_pass", [True, False], ids=["gpu-form", "cpu-form"])
def test_instancenorm_plus_plus_keeps_float32_statistics_for_bf16_activations(single_pass):
    """Under bf16 autocast a convolution hands the norm bf16 activations. Its statistics must
    not be rounded to bf16: that shifts each channel by an error all its pixels share (about
    0.1 here before the statistics were kept in float32). Against float64 on the same bf16
    input, with channel means up to 10 standard deviations."""
    from pegasus.backbones.layers import instance_norm_plus

    g = torch.Generator().manual_seed(0)
    channels = 64
    x = (10 * torch.randn(1, channels, 1, 1, generator=g)
         + torch.randn(8, channels, 16, 16, generator=g)).bfloat16()
    gamma, alpha = (1 + 0.02 * torch.randn(channels, generator=g) for _ in range(2))
    beta = 0.1 * torch.randn(channels, generator=g)
    out = instance_norm_plus(x, gamma, alpha, beta, 1e-5, single_pass=single_pass)
    exact = instance_norm_plus(x.double(), gamma.double(), alpha.double(), beta.double(), 1e-5,
                               single_pass=False)
    error = out.double() - exact
    assert error.abs().max() < 2e-3
    assert error.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # nothing a whole channel shares


@pytest.mark.parametrize("backbone", ["refinenet", "unet"])
def test_the_output_layer_computes_in_float32_under_bf16_autocast(backbone):
    """bf16 autocast rounds the output convolution's weights and bias, which moves every
    sample's colours the same way (FloatConv2d's note); the output layer stays float32 and its
    parameters keep a plain Conv2d's names, so checkpoints are unchanged."""
    import torch.nn.functional as F

    from pegasus.backbones.layers import FloatConv2d

    spec, _ = get_backbone(backbone)
    net = spec.build({"ngf": 16} if backbone == "refinenet" else {"width": 16}, res=32).eval()
    assert isinstance(net.end, FloatConv2d) and {"end.weight", "end.bias"} <= set(net.state_dict())
    seen = {}
    net.end.register_forward_hook(lambda module, args, out: seen.update(x=args[0], out=out))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(2, 3, 32, 32), torch.tensor([1.0, 0.1]))
    exact = F.conv2d(seen["x"].float(), net.end.weight, net.end.bias, padding=1)
    assert out.dtype == torch.float32 and torch.equal(out, exact)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what a plain conv gives
        assert F.conv2d(seen["x"], net.end.weight, net.end.bias, padding=1).dtype == torch.bfloat16
