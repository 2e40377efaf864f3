#!/usr/bin/env bash
# Wheels for a lent GPU machine (/work/.library/device/KINDS.md lists what its image holds: torch,
# torchvision, safetensors, torchmetrics, pytest and the rest of pegasus's needs, but not tomli-w):
# pegasus itself and tomli-w at uv.lock's version, into .whl/ (ignored by git). There, with .whl
# carried:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# then bench/gpu_checks.sh. GPU_PYTHON is the machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
uv build --wheel -o .whl >/dev/null
pins=$(uv export --frozen --no-hashes --no-dev --no-emit-project | grep -E '^tomli-w==' | cut -d' ' -f1)
uv run --no-project --with pip python -m pip download -q --no-deps --only-binary=:all: \
  --python-version "${GPU_PYTHON:-3.12}" --implementation cp -d .whl $pins 2>/dev/null
ls .whl
