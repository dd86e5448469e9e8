"""Show a refactor kept behaviour: fingerprints of six tiny runs, to compare before and after.

    git worktree add /tmp/old <old commit> && cp scripts/refactor_check.py /tmp/old/scripts/
    (cd /tmp/old && PYTHONPATH=src python scripts/refactor_check.py /tmp/before.json)  # the old code
    python scripts/refactor_check.py /tmp/after.json                                    # this code
    python scripts/refactor_check.py --compare /tmp/before.json /tmp/after.json  # exit 1 on a difference

Each run (default, fixed, fixed + CLS, leap + evaluation during training, spectralkd + CE + KD,
leap + gradient accumulation + patch embedding + EMA) is fingerprinted by metrics.csv without its
timing columns, student.safetensors, and summary.json without seconds, throughput and version.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY  # noqa: E402

CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "fixed": {"method": "fixed"},
    "fixed+cls": {"method": "fixed", "cls_weight": 0.05},
    "leap+eval": {"method": "leap", "eval_every": 2},
    "spectral+ce+kd": {"method": "spectralkd", "spectral_weight": 1.0, "ce_weight": 1.0, "kd_weight": 1.0},
    "leap+accum+patch+ema": {
        "method": "leap",
        "accumulate_grad_batches": 2,
        "batch_size": 4,
        "patch_embed_weight": 0.5,
        "ema_decay": 0.9,
    },
}
TIMING = ("seconds", "wall", "images_per_s", "throughput", "time", "share")
DROPPED = ("version", "finished", "started", "hardware")


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not any(t in k for t in TIMING) and k not in DROPPED}
    return [_clean(v) for v in value] if isinstance(value, list) else value


def fingerprints() -> dict[str, dict[str, Any]]:
    import leapkd

    out = {}
    with tempfile.TemporaryDirectory() as root:
        for name, keys in CASES.items():
            run = leapkd.distill(name=name, output_dir=root, **{**TINY, **keys}).run_dir
            rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
            kept = [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]
            summary = _clean(json.loads((run / "summary.json").read_text()))
            out[name] = {
                "metrics": _hash(json.dumps(kept).encode()),
                "student": _hash((run / "student.safetensors").read_bytes()),
                "summary": summary,
            }
            print(name, out[name]["metrics"], out[name]["student"], flush=True)
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    diffs = []
    for name in before:
        for part in ("metrics", "student"):
            if before[name][part] != after.get(name, {}).get(part):
                diffs.append(f"{name}: {part} differs")
        old, new = before[name]["summary"], after.get(name, {}).get("summary", {})
        diffs += [f"{name}: summary {k} differs" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, help="write the fingerprints here")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = p.parse_args()
    if args.compare:
        diffs = compare(*(json.loads(path.read_text()) for path in args.compare))
        print("\n".join(diffs) or "identical")
        return 1 if diffs else 0
    if args.out is None:
        p.error("give a file to write, or --compare BEFORE AFTER")
    args.out.write_text(json.dumps(fingerprints(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
