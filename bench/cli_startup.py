"""Wall time of `pegasus --help`, with and without the example plugin enabled, in one run
(median of several launches each).

    python bench/cli_startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def launch(env: dict[str, str], repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pegasus", "--help"], env=env, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with_plugin = {**os.environ}
    with_plugin.pop("PEGASUS_DISABLE_PLUGINS", None)
    without = {**with_plugin, "PEGASUS_DISABLE_PLUGINS": "resnet"}
    a, b = launch(without), launch(with_plugin)
    bare = statistics.median(
        [_time([sys.executable, "-c", "pass"]) for _ in range(7)])
    print(f"python -c pass:                      {bare * 1e3:6.0f} ms")
    print(f"pegasus --help (example plugin off): {a * 1e3:6.0f} ms")
    print(f"pegasus --help (example plugin on):  {b * 1e3:6.0f} ms  ({100 * (b / a - 1):+.1f}%)")


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
