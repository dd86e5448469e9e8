#!/usr/bin/env bash
# Prepares, on a machine with pip and git, what travels to the GPU machine for bench/gpu.py
# (docs/gpu-check.md), all under .whl/ (ignored through .git/info/exclude, never committed):
#   - the wheels of leapkd's dependencies that the device image lacks (pydantic and its needs,
#     platformdirs; /work/.library/device/KINDS.md lists what is there), at the versions of .venv;
#   - a Fashion-MNIST subset for the README's demo and `leapkd eval` (the first 10,000 training
#     and 2,000 test images, in the package's own .gz idx format);
#   - COMMIT: the leapkd commit being measured (.git does not travel);
#   - with a revision argument, that revision's src/ in .whl/baseline/src (bench/gpu.py part j).
# Usage: bash scripts/device_wheels.sh [BASELINE_REV]
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE_REV="${1:-}"
PY=.venv/bin/python
FMNIST="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
rm -rf .whl
mkdir -p .whl

# The device runs Python 3.12 on x86-64; pins are the versions this checkout is tested with.
pins=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions platformdirs; do
  pins+=("$name==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

$PY - "$FMNIST" .whl/fashion-mnist <<'PYEOF'
import gzip, struct, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True)
for prefix, count in (("train", 10_000), ("t10k", 2_000)):
    for kind, ndim in (("images", 3), ("labels", 1)):
        name = f"{prefix}-{kind}-idx{ndim}-ubyte.gz"
        data = gzip.decompress((src / name).read_bytes())
        shape = list(struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]))
        item = 1
        for d in shape[1:]:
            item *= d
        body = data[4 + 4 * ndim : 4 + 4 * ndim + count * item]
        (dst / name).write_bytes(gzip.compress(data[:4] + struct.pack(f">{ndim}I", count, *shape[1:]) + body))
PYEOF

rev="$(git rev-parse --short HEAD)"
[ -z "$(git status --porcelain --untracked-files=no)" ] || rev="$rev+changes"
echo "$rev" > .whl/COMMIT
if [ -n "$BASELINE_REV" ]; then
  mkdir -p .whl/baseline
  git archive "$BASELINE_REV" src | tar -x -C .whl/baseline
  echo "baseline: src/ of $(git rev-parse --short "$BASELINE_REV") in .whl/baseline/src"
fi

ls -l .whl
wheels=$(du -sb .whl | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
echo "commit $rev; .whl: $((wheels / 1024)) KiB; working tree that travels: $((tree / 1024)) KiB;" \
  "together $(((wheels + tree) / 1024 / 1024)) MiB of the 64 MiB limit"
