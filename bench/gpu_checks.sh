#!/usr/bin/env bash
# Every GPU figure and check of the fast-path work, in four parts, each well inside one
# 10-minute call of a lent GPU machine (estimates from the H100 timings in FIGURES.md):
#   bash bench/gpu_checks.sh sampling   # ~6 min: per-evaluation modes, chains, InstanceNorm++
#   bash bench/gpu_checks.sh training   # ~7 min: eager fp32 vs fast (vs compiled), both presets
#   bash bench/gpu_checks.sh run        # ~6 min: CUDA tests, a sprites run, compile cache, bf16
#   bash bench/gpu_checks.sh loss       # ~5 min: the fast path's loss curve against fp32
# Each writes its logs under $OUT (default gpu-results/). Install first (scripts/gpu_wheels.sh
# says how); PYTHON is the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

step() {  # step NAME COMMAND...: run, show and keep its output and wall time
  local name=$1; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" 2>&1 | tee "$out/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$out/$name.txt"
}

case "${1:-}" in
  sampling)
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$out/device.txt"
    step sample-refinenet $py bench/sample_throughput.py --case refinenet-cifar10 --images 100 \
      --batches 100,1000
    step sample-unet $py bench/sample_throughput.py --case unet-64 --images 100 --batches 100 \
      --levels 40
    step instancenorm $py bench/instancenorm.py --device cuda --batch 128
    ;;
  training)
    for case in refinenet-cifar10 unet-64; do
      step "train-$case" $py bench/train_throughput.py --case $case --steps 20
      step "train-$case-compiled" $py bench/train_throughput.py --case $case --steps 20 --compile
    done
    ;;
  run)
    step cuda-tests $py -m pytest -q -p no:cacheprovider tests -k cuda
    runs=$out/runs
    step train-sprites $py -m pegasus train --run "$runs/sprites" --config sprites-demo \
      --res 32 --iters 2500 --batch-size 128 --set model.width=64
    step train-judge $py -m pegasus train-judge --run "$runs/sprites"
    # The compile cache, on a short job so that start-up dominates: eager, then the first compiled
    # command (compiles, saves the cache), then the second (loads it). Target: second - eager <= 15 s.
    for name in eager compile-first compile-second; do
      step "sample-$name" $py -m pegasus sample --run "$runs/sprites" --num 16 --sampler heun \
        --steps 5 --compile "$([ $name = eager ] && echo off || echo on)" --out "$out/$name.png"
    done
    step bf16-quality $py bench/bf16_quality.py --run "$runs/sprites" --num 1000 --fp32-below 0.1,1
    ;;
  loss)
    # CIFAR-10 itself cannot be downloaded on the lent machines: the preset's model and schedule
    # on sprites at 32 px instead.
    step loss-curve $py bench/loss_curve.py --preset cifar10 --steps 2000 \
      --set 'data.dataset="sprites"'
    ;;
  *)
    echo "usage: bash bench/gpu_checks.sh sampling|training|run|loss" >&2
    exit 2
    ;;
esac
