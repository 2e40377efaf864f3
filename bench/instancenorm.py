"""InstanceNorm++ as pegasus computes it (one var_mean, (B, C) arithmetic, one fused
multiply-add) against the straightforward form the reference code uses (a mean, instance_norm,
then the alpha term and the affine as separate full-size operations), in eager mode.

    python bench/instancenorm.py                       # CPU, RefineNet-like sizes
    python bench/instancenorm.py --device cuda --batch 128
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import build, device_name, seconds_of_one_call
from pegasus.backbones.layers import InstanceNormPlus

PEGASUS_FORWARD = InstanceNormPlus.forward


def straightforward(norm: InstanceNormPlus, x: torch.Tensor) -> torch.Tensor:
    """The reference code's InstanceNorm++ (NCSNv2's InstanceNorm2dPlus), written out."""
    means = x.mean(dim=(2, 3))
    centred = (means - means.mean(dim=1, keepdim=True)) / torch.sqrt(
        means.var(dim=1, keepdim=True) + norm.eps)
    h = F.instance_norm(x, eps=norm.eps) + centred[..., None, None] * norm.alpha[:, None, None]
    return norm.gamma[:, None, None] * h + norm.beta[:, None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"InstanceNorm++ eager, batch {args.batch}, on {device_name(device)}")
    for channels, res in ((128, 32), (256, 16), (256, 8), (64, 64)):
        norm = InstanceNormPlus(channels).to(device)
        x = torch.randn(args.batch, channels, res, res, device=device)
        with torch.no_grad():
            torch.testing.assert_close(norm(x), straightforward(norm, x), rtol=1e-4, atol=1e-4)
            times = {name: best_of(fn, x, norm, device, args.repeats)
                     for name, fn in (("straightforward", straightforward),
                                      ("pegasus", lambda n, t: n(t)))}
        ratio = times["straightforward"] / times["pegasus"]
        print(f"  {channels:4d} ch x {res:3d} px: straightforward {1e3 * times['straightforward']:7.3f} "
              f"ms  pegasus {1e3 * times['pegasus']:7.3f} ms  speed-up {ratio:.2f}x")


    # Whole networks, eager: the same weights with each form of the norm.
    for name, options in (("refinenet", {"ngf": 64}), ("unet", {"width": 64})):
        model = build(name, 32, options, device).eval()
        x = torch.rand(args.batch, 3, 32, 32, device=device)
        times = {}
        with torch.no_grad():
            for label, forward in (("straightforward", straightforward), ("pegasus", PEGASUS_FORWARD)):
                InstanceNormPlus.forward = forward
                times[label] = best_of(lambda m, t: m(t, torch.ones(len(t), device=t.device)), x,
                                       model, device, max(3, args.repeats // 4))
        InstanceNormPlus.forward = PEGASUS_FORWARD
        print(f"  {name} {options} at 32 px, whole forward: straightforward "
              f"{1e3 * times['straightforward']:7.1f} ms  pegasus {1e3 * times['pegasus']:7.1f} ms  "
              f"speed-up {times['straightforward'] / times['pegasus']:.2f}x")


def best_of(fn, x, norm, device, repeats: int) -> float:
    fn(norm, x)  # warm-up
    return min(seconds_of_one_call(lambda: fn(norm, x), device) for _ in range(repeats))

if __name__ == "__main__":
    main()
