"""Where one network evaluation's time goes, per mode (eager fp32, bf16, the compiled fast
path): device time and kernels per evaluation, and the top kernels by self device time, from
torch.profiler: the "where the time goes" tables of bench/README.md's H100 figures, re-measured
by the project's own script. On a CPU the same tables list aten operators by self CPU time.

    python bench/profile_kernels.py --case refinenet-cifar10 --batch 100     # on a GPU
    python bench/profile_kernels.py --case small --batch 4 --backend aot_eager
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch.profiler import ProfilerActivity, profile

from common import build, device_name, failure, sync
from pegasus.fastpath.compile import fast_score
from pegasus.registry import get_backbone
from sample_throughput import CASES, modes


def profile_mode(score, x, sigma, device, evaluations: int, top: int) -> None:
    cuda = device.type == "cuda"
    with torch.no_grad():
        for _ in range(2):  # the compile and cuDNN's search happen here, outside the profile
            score(x, sigma)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(evaluations):
                score(x, sigma)
            sync(device)
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    rows = [e for e in prof.key_averages() if e.device_type == kind]

    def self_time(e) -> float:  # microseconds
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    total = sum(self_time(e) for e in rows)
    calls = sum(e.count for e in rows)
    unit = "kernels" if cuda else "operator calls (nested ones too)"
    print(f"    {total / evaluations / 1e3:8.2f} ms of {'kernel' if cuda else 'CPU'} time and "
          f"{calls / evaluations:6.0f} {unit} per evaluation")
    for e in sorted(rows, key=self_time, reverse=True)[:top]:
        print(f"      {e.key[:60]:60s} {self_time(e) / evaluations / 1e3:8.3f} ms "
              f"{100 * self_time(e) / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=CASES, default="small")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--evaluations", type=int, default=5, help="profiled evaluations per mode")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone, res, options = CASES[args.case]
    model = build(backbone, res, options, device).eval().requires_grad_(False)
    x = torch.rand(args.batch, 3, res, res, device=device)
    sigma = torch.full((args.batch,), 0.5, device=device)
    print(f"{args.case}: {backbone} {options} at {res} px, batch {args.batch}, "
          f"on {device_name(device)}")
    for name, path in modes(get_backbone(backbone)[0].channels_last, args.backend).items():
        print(f"  {name}:")
        score = model if path is None else fast_score(copy.deepcopy(model), device, path)
        try:
            profile_mode(score, x, sigma, device, args.evaluations, args.top)
        except Exception as e:  # noqa: BLE001 - the other modes' tables still count
            print(f"    {failure(e)}")


if __name__ == "__main__":
    main()
