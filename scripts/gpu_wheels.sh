#!/usr/bin/env bash
# Wheels for a GPU machine that has torch, einops, typer, rich, pluggy and tensorboard but not the
# rest of pegasus's locked dependencies: pegasus itself plus tomli-w, safetensors, torchmetrics
# and lightning-utilities, at the versions of uv.lock, into .whl/ (ignored by git). On the machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# then bench/gpu_checks.sh. GPU_PYTHON is the machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
uv build --wheel -o .whl >/dev/null
pins=$(uv export --frozen --no-hashes --no-dev --no-emit-project \
       | grep -E '^(tomli-w|safetensors|torchmetrics|lightning-utilities)==' | cut -d' ' -f1)
uv run --no-project --with pip python -m pip download -q --no-deps --only-binary=:all: \
  --python-version "${GPU_PYTHON:-3.12}" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
ls .whl
