"""`pegasus device`'s report, for bug reports about speed: the device and torch, what each fast-path
switch does there on "auto", the user's compile cache, and what a run folder keeps of its fast
path."""

from __future__ import annotations

from pegasus.devices import device_facts
from pegasus.fastpath.cache import cache_summary
from pegasus.fastpath.probe import read_record
from pegasus.fastpath.rules import auto_rules
from pegasus.run.layout import RunDir


def device_report(device, run_dir=None) -> dict:
    """`pegasus device`'s report: `device_facts`, what each "auto" switch does there
    (fastpath/rules.py), the compiled networks the user's cache keeps (fastpath/cache.py), and
    with `run_dir` the fast path timings that run keeps."""
    report = {**device_facts(device), "auto": auto_rules(device), "compile cache": cache_summary()}
    if run_dir is not None:
        folder = RunDir(run_dir)
        folder.require()
        report["run"] = {
            "path": str(run_dir),
            "timed": [e for e in read_record(folder.probes).values() if isinstance(e, dict)]}
    return report
