#!/usr/bin/env bash
# The test command the README gives: the notebooks (nbdev_test), then the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
nbdev_test --n_workers 2 --timing
python3 -m pytest -q tests "$@"
