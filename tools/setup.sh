#!/usr/bin/env bash
# All the set-up the README's commands need, on a fresh Debian/Ubuntu machine that reaches only the package
# registries as on an ordinary one: the package with its Python dependencies, then Fashion-MNIST (dit-train's data)
# and Chromium (the browser test) from apt when we are root, else a note saying what to do; last it checks the data.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e ".[dev,eval]"
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "${CHROMIUM:-}" ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q "${need[@]}"
  else
    echo "setup: not root or no apt-get, so not installed: ${need[*]}."
    echo "  Fashion-MNIST: dit-train then downloads it with torchvision (needs internet), or give --data-path DIR."
    echo "  chromium: the browser test needs it (or CHROMIUM=/path/to/chrome); tests/run_all.sh stops without it."
  fi
fi
# the data now: Debian's files, the cache, or a torchvision download; else one clear message
python3 -c "from dit_edu.data import find_fashion_mnist as f; print('setup: Fashion-MNIST at', f(train=True)[0].parent); f(train=False)"
