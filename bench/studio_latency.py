"""The studio's latency: from a slider move to the new image on the page, in a headless Chromium.

    python bench/studio_latency.py --run runs/demo-ct --moves 20

Starts `pegasus studio` on the run, opens the page, and for each setting moves the seed slider
`--moves` times (one key press each), timing from the key press to the page showing the new
draw. Also times the HTTP draw alone (no browser) for the same settings. Prints the median and
the 90th percentile of each, in seconds. The target: under 0.5 s for a strip at 2 evaluations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

# (label, the page's fields): the sampler's budgets the studio is for, and a slow one.
SETTINGS = [
    ("blend strip, consistency 2", {"sampler": "consistency", "steps": "2", "guidance": "10"}),
    ("blend strip, consistency 4", {"sampler": "consistency", "steps": "4", "guidance": "10"}),
    ("winged horses (4), consistency 2", {"mode": "hybrid", "sampler": "consistency",
                                          "steps": "2"}),
]


def serve(run: Path, out: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    process = subprocess.Popen([sys.executable, "-m", "pegasus", "studio", "--run", str(run),
                                "--port", "0", "--out", str(out), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = process.stdout.readline()
    if "http://" not in line:
        raise SystemExit(line + process.stdout.read())
    return process, line.split(" at ")[1].split()[0]


def http_seconds(url: str, fields: dict, moves: int) -> list[float]:
    times = []
    for seed in range(moves + 1):
        query = urllib.parse.urlencode({**fields, "seed": str(100 + seed)})
        start = time.perf_counter()
        with urllib.request.urlopen(f"{url}api/draw?{query}", timeout=120) as reply:
            reply.read()
        times.append(time.perf_counter() - start)
    return times[1:]  # the first draw of a setting holds one-off costs


def browser_seconds(page, fields: dict, moves: int) -> list[float]:
    for name, value in {"mode": "blend", **fields}.items():
        page.eval_on_selector(f"#{name}", "(el, v) => { el.value = v; }", value)
    page.eval_on_selector("#mode", "el => el.dispatchEvent(new Event('input'))")
    wait_drawn(page, page.evaluate("document.body.dataset.drawn"))
    times = []
    for _ in range(moves):
        before = page.evaluate("document.body.dataset.drawn")
        page.focus("#seed")
        start = time.perf_counter()
        page.keyboard.press("ArrowRight")
        wait_drawn(page, before)
        times.append(time.perf_counter() - start)
    return times


def wait_drawn(page, before: str | None) -> None:
    """Until the page shows a draw other than `before` (None: any draw)."""
    shown = "undefined" if before is None else repr(before)
    page.wait_for_function(f"document.body.dataset.drawn !== {shown}", timeout=120000, polling=5)


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(times):.3f} s, p90 {p90:.3f} s ({len(times)} moves)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--screenshot", type=Path, help="a PNG of the page after the last move")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as out:
        process, url = serve(args.run, Path(out))
        try:
            for label, fields in SETTINGS:
                print(f"{label}: HTTP draw {summary(http_seconds(url, fields, args.moves))}",
                      flush=True)
            if chromium is None:
                print("no Chromium installed: the slider-to-image figures need one")
                return 0
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 760})
                page.goto(url)
                wait_drawn(page, None)
                for label, fields in SETTINGS:
                    print(f"{label}: slider to image {summary(browser_seconds(page, fields, args.moves))}",
                          flush=True)
                if args.screenshot is not None:
                    browser_seconds(page, SETTINGS[0][1], 1)
                    page.click("#keep")
                    page.wait_for_function("document.querySelector('#tray img')?.complete "
                                           "&& document.querySelector('#tray img').naturalWidth > 0")
                    page.screenshot(path=str(args.screenshot), full_page=True)
                    print(f"screenshot: {args.screenshot}")
                browser.close()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
