#!/usr/bin/env bash
# Issue 6's measurements in one device run: DiT-XL/2 at 256px, the fast path's variants against a same-run baseline,
# guided sampling, the CUDA smoke run of dit-train/generate, and the reference mode. Each part is a separate process
# under its own time limit, so one slow compile costs only its part; parts are skipped when the budget runs out,
# so they are ordered by priority.
# Usage (repo root, on the GPU machine): OUT=/some/dir BUDGET=500 bash tools/gpu_bench.sh
# The device image lacks fastcore: carry .whl (fastcore-1.14.5-py3-none-any.whl) and start the command with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
# CPU dry run of the whole script (tiny model, minutes):
#   OUT=/tmp/dry BUDGET=900 EXTRA="--model DiT-Nano/8 --device cpu --num-classes 10 --image-size 64 --sample-steps 3" \
#   SMOKE_MODEL=DiT-S/8 SMOKE_DEVICE=cpu bash tools/gpu_bench.sh
# Writes to $OUT: report.md (the table), summary.json (every part's JSON), all.log, profile_*.txt, smoke.json.
set -u
OUT=${OUT:-/tmp/dit_bench_out}; BUDGET=${BUDGET:-500}; EXTRA=${EXTRA:-}; WORK=/tmp/dit_bench_work
rm -rf "$WORK"; mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
T0=$SECONDS
report() { python3 tools/bench_report.py "$WORK" "$OUT/summary.json" > "$OUT/report.md" 2>&1; cp "$WORK/all.log" "$OUT/all.log"; }
left() { echo $(( BUDGET - (SECONDS - T0) )); }
part() {   # part NAME LIMIT_S dit-bench args...: skipped when less than 40 s of the budget is left
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  if (( l < 40 )); then echo "== $name skipped: ${l}s left" | tee -a "$WORK/all.log"; return; fi
  (( limit > l )) && limit=$l
  echo "== $name (limit ${limit}s, $((SECONDS - T0))s elapsed): $*" | tee -a "$WORK/all.log"
  # shellcheck disable=SC2086
  timeout -k 5 "$limit" python3 -c "from dit_edu.bench import main; main()" --model DiT-XL/2 "$@" $EXTRA --json "$WORK/$name.json" \
    > "$WORK/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - T0))s" | tee -a "$WORK/all.log"
  cat "$WORK/$name.log" >> "$WORK/all.log"; grep -v -i "warn" "$WORK/$name.log" | tail -4
  report                                                                   # kept if a later part is killed
}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$WORK/all.log"
# 1. the baseline of this run: the fast path as measured before (fp32 residual stream), batch 128
part fast_train_b128 130 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2
# 2. bf16 residual stream (half the bytes of every layer norm / modulation / residual add, less activation memory) + profile
part fast_train_b128_r16 140 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2 --bf16-residual \
  --profile "$OUT/profile_b128_r16.txt"
# 3. sampling: bf16 weights (no per-step weight casts, bf16 stream), CUDA graphs, 64 images, bf16 vs fp32 on 4 of them
part fast_sample_64_w16 100 --modes fast --tasks sample --batch-size 128 --sample-images 64 --compare 4 \
  --sample-compile-mode reduce-overhead --sample-bf16-weights
# 4. dit-train and generate on CUDA end to end (synthetic latents)
l=$(left); if (( l >= 60 )); then
  lim=$(( l < 120 ? l : 120 )); echo "== smoke (limit ${lim}s)" | tee -a "$WORK/all.log"
  timeout -k 5 "$lim" python3 tools/gpu_smoke.py "$OUT" "${SMOKE_MODEL:-DiT-B/4}" "${SMOKE_DEVICE:-cuda}" > "$WORK/smoke.log" 2>&1
  echo "   exit $? after $((SECONDS - T0))s" | tee -a "$WORK/all.log"; cat "$WORK/smoke.log" >> "$WORK/all.log"; tail -3 "$WORK/smoke.log"
fi
# 5. reference mode (fp32/TF32, hand-written attention, eager): the same first 8 training steps as parts 1-2 (loss tracking),
#    and guided sampling of 64 images (3 steps timed, x250)
part ref 80 --modes reference --tasks train,sample --batch-size 128 --micro 2 --steps 6 --warmup 2 --sample-images 64 --ref-sample-steps 3
# 6. the memory target (<= 50 GiB at batch 128) if the bf16 residual alone misses it: checkpoint the first 2 of 28 blocks
part fast_train_b128_r16_ck2 130 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2 --bf16-residual --checkpointing 2
# 7. bf16 residual + Inductor's coordinate-descent tuning of the fused kernels' block sizes
part fast_train_b128_r16_cdt 180 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2 --bf16-residual \
  --inductor coordinate_descent_tuning=1
# 8. sampling 128 images per chain (a 256 forward batch)
part fast_sample_128_w16 90 --modes fast --tasks sample --batch-size 256 --sample-images 128 --compare 0 \
  --sample-compile-mode reduce-overhead --sample-bf16-weights
# 9. the largest batch, bf16 residual
part fast_train_b256_r16 140 --modes fast --tasks train --batch-size 256 --steps 6 --warmup 2 --bf16-residual
# 10. matmul autotuning (Triton GEMM templates, epilogue fusion): sampler (with CUDA graphs), then the training step
part fast_sample_64_w16_ma 240 --modes fast --tasks sample --batch-size 128 --sample-images 64 --compare 0 \
  --sample-compile-mode max-autotune --sample-bf16-weights
part fast_train_b128_r16_ma 300 --modes fast --tasks train --batch-size 128 --steps 10 --warmup 2 --bf16-residual \
  --compile-mode max-autotune-no-cudagraphs
report; cat "$OUT/report.md"
