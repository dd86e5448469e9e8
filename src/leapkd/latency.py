"""How fast an exported student runs on this machine's CPU: ONNX Runtime, batch 1.

`measure_latency` times one session (`threads` intra-op threads, one inter-op thread,
sequential execution) on a fixed seeded input shaped as the model's first input, its batch
axis set to 1; `student_latency` measures with one thread and with every core this process
may use, the two figures an edge deployment chooses between. The figures describe this
machine only; the table and the Pareto front of several students are in `edge`.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from leapkd.edge import Latency
from leapkd.errors import LeapkdError
from leapkd.hardware import cpus_available

__all__ = ["Latency", "measure_latency", "require_onnx", "student_latency"]

# ONNX element types of an input, as numpy dtypes (the seeded input is drawn in float64, then cast).
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def require_onnx(purpose: str, modules: tuple[str, ...] = ("onnx", "onnxruntime")) -> None:
    """A LeapkdError naming the extra to install when one of `modules` is missing."""
    try:
        for name in modules:
            importlib.import_module(name)
    except ImportError as err:
        raise LeapkdError(
            f"{purpose} needs {' and '.join(modules)} ({err.name} is missing)",
            "pip install leapkd[onnx]",
        ) from err


def measure_latency(onnx_path: Path, threads: int, runs: int = 50, warmup: int = 10) -> Latency:
    """Median and 90th percentile time of one batch-1 inference of `onnx_path`, in ms, over
    `runs` timed runs after `warmup` untimed ones."""
    if threads < 1 or runs < 1 or warmup < 0:
        raise LeapkdError(
            f"cannot measure latency with {threads} threads, {runs} runs and {warmup} warm-up runs",
            "use at least 1 thread and 1 run, and 0 or more warm-up runs",
        )
    session = _session(Path(onnx_path), threads)
    feeds = _inputs(session, Path(onnx_path))
    for _ in range(warmup):
        session.run(None, feeds)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times[i] = time.perf_counter() - start
    times *= 1e3
    return Latency(
        threads=threads, runs=runs, median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90))
    )


def student_latency(onnx_path: Path, runs: int = 50, warmup: int = 10) -> list[Latency]:
    """Latency with one thread and with all the cores this process may use (one row when that is one)."""
    counts = sorted({1, cpus_available()})
    return [measure_latency(onnx_path, threads, runs, warmup) for threads in counts]


def _session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session of `path` with `threads` intra-op threads, run sequentially."""
    require_onnx("latency measurement", ("onnxruntime",))
    import onnxruntime as ort

    if not path.is_file():
        raise LeapkdError(f"{path} does not exist", "export the run with `format` onnx first, then measure its file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise LeapkdError(
            f"{path} is not a readable ONNX model ({type(err).__name__}: {str(err).strip()[:300]})",
            "export the run again with `format` onnx and measure the new file",
        ) from err


def _inputs(session: Any, path: Path) -> dict[str, np.ndarray]:
    """Seeded normal noise for every input of the model; a named (dynamic) axis is set to 1."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        if spec.type not in _DTYPES:
            raise LeapkdError(
                f"{path}: input '{spec.name}' is {spec.type}, and latency is measured on float inputs only",
                "export the student with `format` onnx (float32 images)",
            )
        shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(_DTYPES[spec.type])
    return feeds
