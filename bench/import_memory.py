"""Peak memory of importing a reference NCSNv2 checkpoint, against the file's size, in one run.

    python bench/import_memory.py                         # FFHQ-sized: NCSNv2Deepest, ngf 128
    python bench/import_memory.py --stages ncsnv2 --ngf 8 --res 32   # a tiny one

A synthetic checkpoint in the reference runner's format (score, Adam with both moments, epoch,
step, EMA shadow, config.yml) is written to a temporary folder, then `pegasus import ncsnv2`
runs in a child process whose peak resident memory (ru_maxrss) is read when it ends. The
importer maps the file (torch.load mmap=True) and moves tensors without copying them, so the
peak should be about the file itself, not a multiple of it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synthetic(folder: Path, stages: str, ngf: int, res: int, levels: int) -> Path:
    """Write the checkpoint (in its own process: see main) and its config.yml."""
    import torch
    import yaml

    from pegasus.config import build_config
    from pegasus.interop.ncsnv2_config import reference_config
    from pegasus.interop.ncsnv2_names import reference_name, registration_key
    from pegasus.model.build import build_score_model
    from pegasus.noise.schedule import geometric_sigmas

    config = build_config(None, overrides=[
        'model.backbone="refinenet"', f"model.ngf={ngf}", f'model.stages="{stages}"',
        f"data.res={res}", "noise.sigma_max=348.0", "noise.sigma_min=0.01",
        f"noise.levels={levels}", "noise.steps_per_level=3", "noise.eps=9e-7"])
    model, _ = build_score_model(config)
    names = sorted((reference_name(n, stages) for n, _ in model.named_parameters()),
                   key=lambda r: registration_key(r, stages))
    tensors = {reference_name(n, stages): p.detach() for n, p in model.named_parameters()}
    score = {"module.sigmas": geometric_sigmas(348.0, 0.01, levels)}
    score |= {f"module.{n}": tensors[n] for n in names}
    adam = {"state": {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(tensors[n]),
                          "exp_avg_sq": torch.rand_like(tensors[n])} for i, n in enumerate(names)},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-3, "weight_decay": 0.0,
                              "amsgrad": False, "params": list(range(len(names)))}]}
    ema = {n: tensors[n].clone() for n in names}
    path = folder / "checkpoint_1000.pth"
    torch.save([score, adam, 0, 1000, ema], path)
    written = reference_config(config, 1000)
    written["data"]["dataset"] = {"ncsnv2": "CIFAR10", "deeper": "LSUN", "deepest": "FFHQ"}[stages]
    written["data"].pop("category", None)
    (folder / "config.yml").write_text(yaml.safe_dump(written))
    return path


def measured(command: list[str]) -> tuple[int, int, str]:
    """(exit code, peak resident bytes, output) of a child process, its own rusage alone."""
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return child.returncode, usage.ru_maxrss * 1024, log.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="deepest", choices=["ncsnv2", "deeper", "deepest"])
    parser.add_argument("--ngf", type=int, default=128)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--levels", type=int, default=2311)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the writing child
    args = parser.parse_args()
    if args.write is not None:
        synthetic(args.write, args.stages, args.ngf, args.res, args.levels)
        return 0
    # This process imports no torch and holds no tensors: a child's peak resident memory counts
    # what it inherits at fork, so every measured child starts from a small parent.
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        code, _, output = measured([sys.executable, __file__, "--stages", args.stages, "--ngf",
                                    str(args.ngf), "--res", str(args.res), "--levels",
                                    str(args.levels), "--write", tmp])
        if code:
            print(output, file=sys.stderr)
            return code
        path = Path(tmp) / "checkpoint_1000.pth"
        size = path.stat().st_size
        print(f"synthetic {args.stages} ngf {args.ngf} at {args.res} px: {size / 2**20:.0f} MiB "
              f"(written in {time.perf_counter() - start:.1f} s)", flush=True)
        start = time.perf_counter()
        code, peak, output = measured([sys.executable, "-m", "pegasus", "import", "ncsnv2",
                                       str(path), "--run", str(Path(tmp) / "run")])
        seconds = time.perf_counter() - start
        if code:
            print(output, file=sys.stderr)
            return code
        _, base, _ = measured([sys.executable, "-c", "import pegasus.cli, pegasus.interop.ncsnv2; "
                                                    "from pegasus.registry import registry; registry()"])
        written = next((Path(tmp) / "run" / "checkpoints").glob("checkpoint-*.pt")).stat().st_size
        print(f"import: {seconds:.1f} s, peak resident memory {peak / 2**20:.0f} MiB, of which "
              f"{base / 2**20:.0f} MiB is python, torch and pegasus themselves: "
              f"{(peak - base) / 2**20:.0f} MiB for the checkpoint = {(peak - base) / size:.2f}x "
              f"the file; the pegasus checkpoint written is {written / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
