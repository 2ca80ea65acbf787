#!/usr/bin/env bash
# Issue 6's measurements in one device run: reference and fast modes of DiT-XL/2 at 256px, training and guided
# sampling, each part a separate dit-bench process under its own time limit so that one slow compile costs only its part.
# Usage (repo root, on the GPU machine): OUT=/some/dir BUDGET=480 bash tools/gpu_bench.sh
# Writes 4 files to $OUT: report.md (the table), summary.json (every part's JSON), all.log, profile_b128.txt.
set -u
OUT=${OUT:-/tmp/dit_bench_out}; BUDGET=${BUDGET:-480}; WORK=/tmp/dit_bench_work; mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
T0=$SECONDS
part() {   # part NAME LIMIT_S dit-bench args...: skipped when less than 40 s of the budget is left
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - (SECONDS - T0) ))
  if (( left < 40 )); then echo "== $name skipped: ${left}s left"; return; fi
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s, $((SECONDS - T0))s elapsed): $*" | tee -a "$WORK/all.log"
  timeout -k 5 "$limit" python3 -c "from dit_edu.bench import main; main()" --model DiT-XL/2 "$@" --json "$WORK/$name.json" \
    > "$WORK/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - T0))s" | tee -a "$WORK/all.log"
  cat "$WORK/$name.log" >> "$WORK/all.log"; grep -v -i "warn" "$WORK/$name.log" | tail -6
  python3 tools/bench_report.py "$WORK" "$OUT/summary.json" > "$OUT/report.md" 2>&1; cp "$WORK/all.log" "$OUT/all.log"   # kept if killed later
}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$WORK/all.log"
# fast mode training at 128 (+ kernel profile): the headline number
part fast_train_b128 200 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2 --profile "$OUT/profile_b128.txt"
# fast guided sampling: 64 images, 250 steps, bf16 vs fp32 on 4 of them
part fast_sample_64 130 --modes fast --tasks sample --batch-size 128 --sample-images 64 --compare 4
# reference mode (fp32/TF32, hand-written attention, eager): training at 128 in two micro-batches of 64 (the same first
# 8 steps as fast_train_b128, for the loss comparison); guided sampling of 64 images (3 steps timed, x250)
part ref 80 --modes reference --tasks train,sample --batch-size 128 --micro 2 --steps 6 --warmup 2 --sample-images 64 --ref-sample-steps 3
# fast mode at 256
part fast_train_b256 170 --modes fast --tasks train --batch-size 256 --steps 6 --warmup 2
# CUDA graphs for the sampler, if time is left
part fast_sample_64_cg 110 --modes fast --tasks sample --batch-size 128 --sample-images 64 --compare 0 --sample-compile-mode reduce-overhead
python3 tools/bench_report.py "$WORK" "$OUT/summary.json" | tee "$OUT/report.md"
cp "$WORK/all.log" "$OUT/all.log"
