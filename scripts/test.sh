#!/usr/bin/env bash
# The whole test suite: the package's tests (slow end-to-end ones included), then the example
# plugin's own tests, its conformance check and a few training steps through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv 2>/dev/null || echo "python3 -m uv")
$UV run --locked pytest -q tests plugins/pegasus-resnet/tests
