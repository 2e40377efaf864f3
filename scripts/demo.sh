#!/usr/bin/env bash
# The demo: train on the built-in sprites (horses and birds), draw samples, train the guide,
# then blend horses into birds (plain eq. 4 and class-guided) and make winged horses. PNGs land
# in $OUT.
# (`pegasus train-judge` and `pegasus blend --report` score blends; see the README.)
# Re-running resumes the run instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
OUT=${2:-out}
UV=$(command -v uv 2>/dev/null || echo "python3 -m uv")
pegasus() { $UV run --locked pegasus "$@"; }
mkdir -p "$OUT"

# 900 of the preset's 1600 steps, with sigmas drawn log-normally and EDM's preconditioning
# (docs/science.md): their KID at 600 steps is 2.4x below that of NCSNv2's discrete levels at 700
# (bench/README.md, "The demo's training budget"). 900 rather than 1600 so that the demo fits its
# 4 minutes on a 2-core machine at 0.15 s a step (bench/README.md, "The demo's samples", has
# what the 700 steps fewer cost); `pegasus train --run runs/demo --resume --iters 1600`
# continues the run to the preset's. The guide trains its full 1500 steps:
# at 400, 88.3% of the guided strips ran from a horse to a bird at seed 11, at 1500 96.7%
# (bench/README.md, "Blend reports and --k auto").
# Re-running resumes.
if [ -f "$RUN/checkpoints/latest" ]; then
  pegasus train --run "$RUN" --resume
else
  pegasus train --config sprites-demo --run "$RUN" --set train.iters=900 \
    --set 'noise.training="log-normal"' --set 'noise.preconditioning="edm"'
fi
# Consistency tuning (ECT) of the run, 200 steps, beside the samples, blends and inpainting of
# the run below, each process on one core: two threads of one process run this network only
# 1.4x faster than one, so the two jobs side by side finish 21 s sooner than one after the other
# (bench/README.md, "The demo's samples"). Its progress goes to $OUT/tune.log.
TUNE=
trap '[ -z "$TUNE" ] || kill "$TUNE" 2>/dev/null' EXIT  # a stopped demo stops its tuning too
if [ ! -f "$RUN-ct/checkpoints/latest" ]; then
  echo "tuning $RUN into $RUN-ct beside the blends below; progress in $OUT/tune.log"
  # uv itself in the background (not the function's subshell), so that the trap's signal
  # reaches it and it passes the signal on to pegasus.
  OMP_NUM_THREADS=1 $UV run --locked pegasus tune --run "$RUN" --to "$RUN-ct" --iters 200 \
    >"$OUT/tune.log" 2>&1 &
  TUNE=$!
  export OMP_NUM_THREADS=1  # the other core's, while the tuning has one
fi
# Consistent annealed sampling in 32 evaluations: within noise of the best few-step samplers on
# this run, and the one whose guided blends stay clean at W = 10 (bench/README.md, as above).
FAST=(--sampler cas --steps 32)
pegasus sample --run "$RUN" --num 36 --seed 0 "${FAST[@]}" --out "$OUT/samples.png"
[ -f "$RUN/guide.pt" ] || pegasus train-guide --run "$RUN"
pegasus blend --run "$RUN" --k 9 --n 15 --strips 6 --seed 0 "${FAST[@]}" --out "$OUT/blend-unguided.png"
pegasus blend --run "$RUN" --k 9 --n 15 --strips 6 --seed 0 --from horse --to bird --guidance 10 \
  "${FAST[@]}" --out "$OUT/blend.png"
# Annealed Langevin (inpainting needs its Langevin steps) on 31 of the levels, 3 steps each.
pegasus inpaint --run "$RUN" --image sample:3 --mask right-half --num 8 --steps 94 \
  --out "$OUT/inpaint.png"
if [ -n "$TUNE" ]; then
  wait "$TUNE" || { code=$?; TUNE=; tail -n 5 "$OUT/tune.log" >&2; exit "$code"; }
  TUNE=
  unset OMP_NUM_THREADS
fi
# The tuned run samples in 2 network evaluations and blends in 4. The 2-evaluation samples
# renoise to sigma 0.15 after the first: the least grainy choice measured (1.01x the data's
# neighbour-pixel difference against 1.32x on Karras's grid), at no cost in KID (bench/README.md,
# "Two evaluations").
pegasus sample --run "$RUN-ct" --num 36 --seed 0 --sampler consistency --steps 2 --sigmas 0.15 \
  --out "$OUT/samples-2-evaluations.png"
pegasus blend --run "$RUN-ct" --k 9 --n 15 --strips 6 --seed 0 --from horse --to bird \
  --guidance 10 --sampler consistency --steps 4 --out "$OUT/blend-4-evaluations.png"
# Winged horses: each a guided horse whose region above the back is regenerated toward bird,
# the best of 4 candidates by the run's guide (pegasus/tasks/hybrid.py), in 4 evaluations a
# chain on the tuned run: within noise of cas at 32 on the base run, at a sixth of its time
# (bench/README.md, "Winged horses").
pegasus hybrid --run "$RUN-ct" --base horse --with bird --num 64 --seed 0 --sampler consistency \
  --steps 4 --report --out "$OUT/hybrids.png"
echo "demo done: see $OUT/ (hybrids.png, samples.png, blend.png, blend-strips.png, blend-unguided*.png," \
  "inpaint.png, samples-2-evaluations.png, blend-4-evaluations*.png)"
