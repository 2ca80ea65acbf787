#!/usr/bin/env bash
# The test command the README gives: the notebooks (nbdev_test), then the pytest suite, then the reference-number
# tests again on other MKL code paths (float32 exp/sin/cos round differently per CPU: the tolerances must hold on all).
set -euo pipefail
cd "$(dirname "$0")/.."
# the browser test needs Chromium: stop now, saying so, rather than skip it or fail after minutes
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "tests/run_all.sh: chromium is not installed (the browser test needs it): run bash tools/setup.sh as root," \
       "or apt-get install chromium, or set CHROMIUM=/path/to/chrome" >&2
  exit 2
fi
# two notebooks run at once on two cores: one thread each (oversubscribed small ops run many times slower)
OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing
python3 -m pytest -q tests "$@"
for mkl in MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_ENABLE_INSTRUCTIONS=SSE4_2 MKL_CBWR=COMPATIBLE; do
  echo "== reference numbers under $mkl"
  env "$mkl" OMP_NUM_THREADS=1 python3 -m pytest -q tests/test_model_reference.py tests/test_diffusion_reference.py
done
