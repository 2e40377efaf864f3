"""Wall time of `pegasus --help`, with and without the example plugin enabled, in one run
(median of several launches each).

    python bench/cli_startup.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="launches per variant (the median counts)")
    args = parser.parse_args()
    with_plugin = {**os.environ}
    with_plugin.pop("PEGASUS_DISABLE_PLUGINS", None)
    without = {**with_plugin, "PEGASUS_DISABLE_PLUGINS": "resnet"}
    help_cmd = [sys.executable, "-m", "pegasus", "--help"]
    a = median_seconds(help_cmd, args.repeats, without)
    b = median_seconds(help_cmd, args.repeats, with_plugin)
    bare = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    print(f"python -c pass:                      {bare * 1e3:6.0f} ms")
    print(f"pegasus --help (example plugin off): {a * 1e3:6.0f} ms")
    print(f"pegasus --help (example plugin on):  {b * 1e3:6.0f} ms  ({100 * (b / a - 1):+.1f}%)")


if __name__ == "__main__":
    main()
