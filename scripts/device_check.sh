#!/usr/bin/env bash
# The GPU machine's side of bench/gpu.py (docs/gpu-check.md): run there by the device tool as
#   bash scripts/device_check.sh [bench/gpu.py options, e.g. --parts c,d]
# with carry [".whl"] (made here first by scripts/device_wheels.sh). Installs the carried
# wheels into /tmp/site, runs the benchmark within BUDGET seconds (default 420) and leaves
# gpu.json, gpu.md and log in $OUT (3 of the 8 files that come back).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT is set by the device tool}"
BUDGET="${BUDGET:-420}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee "$OUT/log"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 LEAPKD_CACHE=/tmp/leapkd-cache HF_HUB_OFFLINE=1
extra=()
[ -d .whl/fashion-mnist ] && extra+=(--data-root "$PWD/.whl/fashion-mnist")
[ -d .whl/baseline/src ] && extra+=(--baseline-src "$PWD/.whl/baseline/src")
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv || true
  python3 -c "import torch, timm, lightning, pydantic, leapkd; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'leapkd', leapkd.__file__)"
  timeout -k 15 $((${BUDGET%.*} + 60)) python3 bench/gpu.py --out "$OUT" --budget-seconds "$BUDGET" \
    --work-dir /tmp/gpu-work "${extra[@]}" "$@"
  echo "bench/gpu.py exit code $?"
} 2>&1 | tee "$OUT/log"
ls -l "$OUT"
