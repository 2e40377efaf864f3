#!/usr/bin/env bash
# The whole test suite: the package's tests (slow end-to-end ones included), then the example
# plugin's own tests, its conformance check and a few training steps through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv 2>/dev/null || echo "python3 -m uv")
# Two workers (pytest-xdist), one thread each (tests/conftest.py): the suite is mostly
# short processes and single-threaded Python, which one process leaves a core idle for.
$UV run --locked pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadgroup tests plugins/pegasus-resnet/tests
