"""The prepared device check (issue 23): leapkd on one CUDA GPU, in one command within a budget.

Usage:
  python bench/gpu.py                        # on the GPU: docs/benchmarks/gpu.json + "On a GPU" in docs/benchmarks.md
  python bench/gpu.py --out DIR              # DIR/gpu.json and DIR/gpu.md (the section) instead
  python bench/gpu.py --dry-run [--out DIR]  # the same code paths on the CPU, tiny sizes, < 1 minute; never docs/
  python bench/gpu.py --render-only --from-json A[,B] [--out DIR]  # the section from gpu.json file(s), merged
  options: --parts a,c (letters or names) --budget-seconds 420 --commit REV --data-root DIR --baseline-src DIR

Parts, run in this order (each guarded: an error is recorded and the next part runs; each
checks the budget's clock and skips, with a note, what would overrun it):
  a tests       `pytest -m gpu` of the tests marked gpu: passed / failed / skipped
  b peak        the bf16 matrix-product rate (8192³, CUDA events, median): MFU's denominator
  c throughput  DINOv2 ViT-B/14 and ViT-L/14 (random init) into vit-small, 224 px, batch 128 and the
                largest of 512/384/256 that fits, bf16-mixed, `fixed`, JPEGs decoded by the loader:
                images/s, s/step, MFU, peak memory; `leapkd plan`'s estimate beside them
  d early_exit  the ViT-L teacher stopped at L/4, L/2, 3L/4, L (`fixed_level`): time against FLOPs
  e overhead    the engine against bench/overhead.py's BareLoop on the device, interleaved
  g pipeline    the training loader alone with 0, 2, 4, 8, 15 workers
  h demo        the README's `leapkd distill` as a command (teacher architecture at random init)
  i eval_export `leapkd eval` (knn) and `export --format onnx` of h's student, parity with the CPU
  j baseline    c's ViT-B run with another leapkd source tree (--baseline-src) in a child process
  f compile     `compile: true` against eager (last: compilation time is the least predictable)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_page import render_section, replace_section  # noqa: E402
from gpu_setup import DRY, FULL, REPO, Budget, Context  # noqa: E402

LETTERS = {"a": "tests", "b": "peak", "c": "throughput", "d": "early_exit", "e": "overhead", "f": "compile",
           "g": "pipeline", "h": "demo", "i": "eval_export", "j": "baseline"}  # fmt: skip
ORDER = ("tests", "peak", "throughput", "early_exit", "overhead", "pipeline", "demo", "eval_export", "baseline",
         "compile")  # fmt: skip
# the least time (s) a part needs on the device to be worth starting; the dry run needs a few seconds
NEEDS = {"tests": 30, "peak": 5, "throughput": 45, "early_exit": 35, "overhead": 45, "pipeline": 15, "demo": 35,
         "eval_export": 20, "baseline": 45, "compile": 75}  # fmt: skip
DOCS_JSON = REPO / "docs" / "benchmarks" / "gpu.json"
DOCS_PAGE = REPO / "docs" / "benchmarks.md"


def parse_parts(text: str | None) -> list[str]:
    """`a,c` or `tests,throughput` -> part names in run order."""
    if not text:
        return list(ORDER)
    asked = [LETTERS.get(t.strip(), t.strip()) for t in text.split(",") if t.strip()]
    unknown = [p for p in asked if p not in ORDER]
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}: use letters a-j or {', '.join(ORDER)}")
    return [p for p in ORDER if p in asked]


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def _run_text(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def git_commit(given: str | None) -> str | None:
    """--commit, else $LEAPKD_COMMIT, else .whl/COMMIT (written where git is), else git itself."""
    if given:
        return given
    if os.environ.get("LEAPKD_COMMIT"):
        return os.environ["LEAPKD_COMMIT"]
    written = REPO / ".whl" / "COMMIT"
    if written.is_file():
        return written.read_text().strip() or None
    rev = _run_text(["git", "rev-parse", "--short", "HEAD"])
    if rev and _run_text(["git", "status", "--porcelain", "--untracked-files=no"]):
        rev += "+changes"
    return rev


def header(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import leapkd

    cuda = ctx.cuda
    props = torch.cuda.get_device_properties(0) if cuda else None
    driver = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if cuda else None
    return {
        "device": props.name if props else f"CPU ({platform.processor() or platform.machine()})",
        "device_memory_gib": props.total_memory / 1024**3 if props else None,
        "compute_capability": f"{props.major}.{props.minor}" if props else None,
        "driver": driver.splitlines()[0] if driver else None,
        "cuda": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
        "timm": _version("timm"),
        "lightning": _version("lightning"),
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "commit": git_commit(args.commit),
        "leapkd_file": leapkd.__file__,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "budget_seconds": ctx.budget.seconds,
        "scale": ctx.scale.name,
    }


def part_functions() -> dict[str, Callable[[Context], dict[str, Any]]]:
    import gpu_parts as p
    import gpu_parts_io as io

    return {"tests": p.part_tests, "peak": p.part_peak, "throughput": p.part_throughput,
            "early_exit": p.part_early_exit, "overhead": p.part_overhead, "compile": p.part_compile,
            "pipeline": io.part_pipeline, "demo": io.part_demo, "eval_export": io.part_eval_export,
            "baseline": io.part_baseline}  # fmt: skip


def run_part(ctx: Context, name: str, fn: Callable[[Context], dict[str, Any]]) -> dict[str, Any]:
    """One part, guarded: its figures, or the error's text; its seconds either way."""
    from gpu_parts import jsonable
    from gpu_run import release_memory

    need = NEEDS[name] if ctx.cuda else 1
    if not ctx.budget.allows(need):
        return {"status": "skipped", "note": f"{ctx.budget.left():.0f} s of the budget left, the part needs ~{need} s"}
    print(f"[gpu] part {name} ({ctx.budget.left():.0f} s of the budget left)", flush=True)
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(ctx)}
    except Exception as err:
        trace = traceback.format_exc()
        print(trace, flush=True)
        result = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": trace[-4000:]}
    finally:
        release_memory()
    result["part_seconds"] = time.perf_counter() - start
    print(f"[gpu] part {name}: {result['status']} in {result['part_seconds']:.1f} s", flush=True)
    return jsonable(result)


def write_outputs(results: dict[str, Any], out: Path | None) -> tuple[Path, Path]:
    """gpu.json and the markdown section: into `out` (gpu.json, gpu.md), or into docs/ (a GPU run only)."""
    section = render_section(results)
    text = json.dumps(results, indent=2, default=str) + "\n"
    if out is None:
        if results.get("dry_run"):
            raise SystemExit("a dry run never writes into docs/: give --out")
        DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
        DOCS_JSON.write_text(text)
        DOCS_PAGE.write_text(replace_section(DOCS_PAGE.read_text(), section))
        return DOCS_JSON, DOCS_PAGE
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(text)
    (out / "gpu.md").write_text(section)
    return out / "gpu.json", out / "gpu.md"


def output_dir(args: argparse.Namespace) -> Path | None:
    """Where results go; a dry run's default is a new temporary folder, and never docs/."""
    if args.out is None:
        return Path(tempfile.mkdtemp(prefix="leapkd-gpu-dry-")) if args.dry_run else None
    out = Path(args.out).resolve()
    if args.dry_run and out.is_relative_to(REPO / "docs"):
        raise SystemExit("a dry run never writes into docs/: choose another --out")
    return out


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --dry-run for the CPU check")
    out = output_dir(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="leapkd-gpu-work-"))
    try:
        return _run_parts(args, work, out)
    finally:
        if args.work_dir is None:  # a temporary work folder goes; a given one is kept for a look
            shutil.rmtree(work, ignore_errors=True)


def _run_parts(args: argparse.Namespace, work: Path, out: Path | None) -> dict[str, Any]:
    os.environ.setdefault("LEAPKD_CACHE", str(work / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = Context(DRY if args.dry_run else FULL, "cpu" if args.dry_run else "cuda", work, Budget(args.budget_seconds),
                  fmnist_root=args.data_root, baseline_src=args.baseline_src)  # fmt: skip
    if args.peak_tflops:
        ctx.peak_flops = args.peak_tflops * 1e12
    ctx.results.update(dry_run=args.dry_run, header=header(ctx, args), parts={})
    functions = part_functions()
    for name in parse_parts(args.parts):
        ctx.results["parts"][name] = run_part(ctx, name, functions[name])
        _finish_header(ctx)
        if out is not None:  # after every part: a run cut short keeps what it measured
            write_outputs(ctx.results, out)
    paths = write_outputs(ctx.results, out)
    print(render_section(ctx.results), flush=True)
    print(f"[gpu] written: {', '.join(map(str, paths))}", flush=True)
    return ctx.results


def _finish_header(ctx: Context) -> None:
    ctx.results["header"] |= {
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": ctx.budget.used(),
        "peak_tflops_used_for_mfu": ctx.peak_flops / 1e12 if ctx.peak_flops else None,
    }


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several gpu.json of one device session as one (a rerun of some parts after the first run):
    a later run's part replaces an earlier one unless the later failed or was skipped and the
    earlier did not; the header is the first run's, with every command listed."""
    if not runs or any(r.get("dry_run") != runs[0].get("dry_run") for r in runs):
        raise SystemExit("give one or more gpu.json files, all dry runs or all GPU runs")
    merged = json.loads(json.dumps(runs[0]))
    for later in runs[1:]:
        for name, part in later["parts"].items():
            earlier = merged["parts"].get(name)
            if earlier is None or part.get("status") == "ok" or earlier.get("status") != "ok":
                merged["parts"][name] = part
        merged["dataset"] = later.get("dataset") or merged.get("dataset")
    if len(runs) > 1:
        merged["header"]["command"] = " ; then ".join(r["header"]["command"] for r in runs)
        merged["header"]["seconds"] = sum(r["header"]["seconds"] for r in runs)
        merged["header"]["budget_seconds"] = sum(r["header"]["budget_seconds"] for r in runs)
        merged["header"]["finished"] = runs[-1]["header"]["finished"]
    merged["parts"] = {name: merged["parts"][name] for name in ORDER if name in merged["parts"]}
    return merged


def render_only(args: argparse.Namespace) -> None:
    if not args.from_json:
        raise SystemExit("--render-only needs --from-json FILE[,FILE...]")
    results = merge_results([json.loads(Path(f).read_text()) for f in args.from_json.split(",")])
    paths = write_outputs(results, None if args.out is None else Path(args.out))
    print(f"written: {', '.join(map(str, paths))}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU with tiny sizes")
    p.add_argument("--out", help="folder for gpu.json and gpu.md (default: docs/; a dry run: a temporary folder)")
    p.add_argument("--parts", help="comma list of parts, letters a-j or names (default: all)")
    p.add_argument("--budget-seconds", type=float, default=420.0, help="wall-clock budget of all parts")
    p.add_argument("--commit", help="leapkd's commit (default: $LEAPKD_COMMIT, .whl/COMMIT, or git)")
    p.add_argument("--data-root", help="folder of Fashion-MNIST's .gz files (default: the system package)")
    p.add_argument("--baseline-src", help="another leapkd source tree (its src/) for part j")
    p.add_argument("--peak-tflops", type=float, help="bf16 peak for MFU when part b is not run")
    p.add_argument("--work-dir", help="folder for runs, images and caches (default: a temporary one)")
    p.add_argument("--render-only", action="store_true", help="only draw the section from --from-json")
    p.add_argument("--from-json", help="gpu.json file(s) to draw the section from (a comma list: merged, later wins)")
    p.add_argument("--child-run", help=argparse.SUPPRESS)  # part j's child: one measured run, as JSON
    args = p.parse_args(argv)
    if args.child_run:
        from gpu_parts_io import child_run

        child_run(args.child_run)
    elif args.render_only:
        render_only(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
