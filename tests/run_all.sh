#!/usr/bin/env bash
# The test command the README gives: the notebooks (nbdev_test), then the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# two notebooks run at once on two cores: one thread each (oversubscribed small ops run many times slower)
OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing
python3 -m pytest -q tests "$@"
