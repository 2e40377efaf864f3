#!/usr/bin/env bash
# Every GPU figure and check of the fast-path work, sized to the lent machine's budget: 15 minutes
# of device time per session, start-up included, at most 10 minutes a call, 8 files back.
#
#   bash bench/gpu_checks.sh first     # the targets: sampling and training ratios, CUDA tests
#   bash bench/gpu_checks.sh second    # compile cache, InstanceNorm++, the bf16 check on a trained
#                                      # run, U-Net compiled training, the loss curve, profiles
#   bash bench/gpu_checks.sh all       # both, for a longer lease
#   ONLY="loss-curve bf16-quality" bash bench/gpu_checks.sh all   # just the steps named
#
# The steps run in order of importance. Each has an estimate of its seconds on an H100 (from
# bench/README.md's H100 figures of the earlier fast path, compiles included); a step that would not fit in what is left of
# BUDGET seconds (default 555, inside a 600 s call) is skipped and named at the end, and a step
# that overruns its estimate is stopped at the budget, so a call always returns its log. Call the
# second part right after the first (the machine stays warm for 30 s) with BUDGET set to the
# device time left less about 40 s.
#
# Everything goes to ONE log, $OUT/<part>.log (default OUT: gpu-results/), and a short summary
# is printed last (the call's reply carries the end of the output). Run folders and images stay
# in $WORK (default: a temporary folder), away from $OUT. Install first (scripts/gpu_wheels.sh
# says how); PYTHON is the interpreter (default python3).
#
# SMOKE=1 runs the same steps at sizes a CPU runs in a few minutes (no CUDA: CUDA-only tests are
# skipped there), to check the script before a lease is spent on it.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
out=${OUT:-gpu-results}
py=${PYTHON:-python3}
smoke=${SMOKE:-0}
budget=${BUDGET:-$((smoke ? 3600 : 555))}
only=" ${ONLY:-} "
case "$part" in first|second|all) ;; *)
  echo "usage: [BUDGET=seconds] [ONLY=\"step ...\"] bash bench/gpu_checks.sh first|second|all" >&2
  exit 2 ;;
esac
work=${WORK:-$(mktemp -d)}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
log=$out/$part.log
: >"$log"
deadline=$((SECONDS + budget))
skipped=()

step() {  # step NAME ESTIMATE COMMAND...: run within the budget, log its output and wall time
  local name=$1 estimate=$2; shift 2
  local left=$((deadline - SECONDS))
  if [[ $only != "  " && $only != *" $name "* ]]; then return; fi
  if ((left < estimate)); then
    skipped+=("$name (~${estimate} s, ${left} s left)")
    echo "== $name: skipped, needs ~${estimate} s and ${left} s are left" | tee -a "$log"
    return
  fi
  echo "== $name (~${estimate} s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$((left > 1 ? left : 1))" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$log"
}

if ((smoke)); then  # tiny stand-ins for each case, on the CPU
  refinenet=small-refinenet unet=small big=4 huge=6 images=4 levels=3 evals=2 train_steps=2
  backend=(--backend aot_eager) device=(--device cpu) iters=40 judge_iters=20 num=16 stream=10
  loss=(--preset sprites-demo --steps 12 --log-every 2 --set train.batch_size=4 --set data.res=16)
  sprites=(--res 16 --batch-size 8 --set model.width=16) train_compile=()
else
  refinenet=refinenet-cifar10 unet=unet-64 big=100 huge=1000 images=100 levels=60 evals=20
  train_steps=20 backend=() device=(--device cuda) iters=2500 judge_iters=1000 num=1000 stream=5000
  loss=(--preset cifar10 --steps 600 --log-every 20 --set 'data.dataset="sprites"')
  sprites=(--res 32 --batch-size 128 --set model.width=64) train_compile=(--compile)
fi
runs=$work/runs

first() {
  { nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv 2>/dev/null ||
    echo "no nvidia-smi"; $py -m pegasus device; } 2>&1 | tee -a "$log"
  step train-refinenet 30 $py bench/train_throughput.py --case $refinenet --steps $train_steps \
    "${device[@]}"
  # Per evaluation at batch 100 and 1000 (each mode; the compile apart), then chains of
  # 60 x 5 + 1 evaluations at batch 100: the eager fp32, graphed fp32 and fast samplers.
  step sample-refinenet 195 $py bench/sample_throughput.py --case $refinenet --images $images \
    --batches $big,$huge --levels $levels --evaluations $evals "${backend[@]}" "${device[@]}"
  step train-refinenet-compiled 190 $py bench/train_throughput.py --case $refinenet \
    --steps $train_steps "${train_compile[@]}" "${device[@]}"
  step cuda-tests 60 $py -m pytest -q -p no:cacheprovider tests -k cuda
  step train-unet 25 $py bench/train_throughput.py --case $unet --steps $train_steps "${device[@]}"
  step sample-unet 75 $py bench/sample_throughput.py --case $unet --images $images --batches $big \
    --levels 20 --evaluations $evals "${backend[@]}" "${device[@]}"
}

second() {
  # A step that starts a chain of steps estimates the whole chain, so the chain runs whole or not.
  # The compile cache, on a short job so that start-up dominates: eager, then the first compiled
  # command (compiles, saves the cache), then the second (loads it). Target: second - eager <= 15 s.
  step cache-run 120 $py -m pegasus train --run "$runs/cache" --config sprites-demo --iters 20 \
    "${sprites[@]}"
  for name in eager:15 compile-first:60 compile-second:30; do
    estimate=${name#*:} name=${name%:*}
    step "cache-sample-$name" "$estimate" $py -m pegasus sample --run "$runs/cache" --num 16 \
      --sampler heun --steps 5 --compile "$([ $name = eager ] && echo off || echo on)" \
      --out "$work/$name.png"
  done
  # Issue 16's item 6: many samples streamed to a folder in batches sized to the free GPU memory
  # (images/s from the bar), then the same folder grown by a continued job.
  step sample-stream 40 $py -m pegasus sample --run "$runs/cache" --num $stream --sampler heun \
    --steps 9 --folder "$work/stream"
  step sample-stream-grow 20 $py -m pegasus sample --run "$runs/cache" --num $((stream + stream / 5)) \
    --sampler heun --steps 9 --folder "$work/stream"
  step instancenorm 20 $py bench/instancenorm.py "${device[@]}" --batch $((big + 28))
  # bf16 against fp32 from the same seeds, on a briefly trained 32 px sprites run and its judge.
  step bf16-run 170 $py -m pegasus train --run "$runs/sprites" --config sprites-demo --iters $iters \
    "${sprites[@]}"
  step bf16-judge 30 $py -m pegasus train-judge --run "$runs/sprites" --iters $judge_iters
  step bf16-quality 60 $py bench/bf16_quality.py --run "$runs/sprites" --num $num --sampler cas \
    --steps 32 --fp32-below 1 "${device[@]}"
  step train-unet-compiled 150 $py bench/train_throughput.py --case $unet --steps $train_steps \
    "${train_compile[@]}" "${device[@]}"
  step loss-curve 100 $py bench/loss_curve.py "${loss[@]}"
  # Where the time goes (bench/README.md's H100 profiles): kernels per evaluation, eager and fast.
  step profile-refinenet 60 $py bench/profile_kernels.py --case $refinenet --batch $big \
    "${backend[@]}" "${device[@]}"
  step profile-unet 60 $py bench/profile_kernels.py --case $unet --batch $big "${backend[@]}" \
    "${device[@]}"
}

case "$part" in
  first) first ;;
  second) second ;;
  all) first; second ;;
esac

echo
echo "== summary of $part ($((SECONDS)) s of a ${budget} s budget; full log: $log)"
grep -E "^== .*(exit|skipped)|^  [a-z0-9 +()]+:$|per evaluation$|^[a-z0-9-]+: |images/s|ms .*x eager fp32|evaluations x images|per evaluation at batch|chains: |speed-up|overhead|compile\)|passed|failed|error|ratio|^  (data|fp32|bf16)[ ,]|KID x 1e3, |compiling the network|loading the network|fast path timed on|^wrote [0-9]+ samples|^sample \(heun\)" "$log" || true
if ((${#skipped[@]})); then printf 'skipped: %s\n' "${skipped[@]}"; fi
