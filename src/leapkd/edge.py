"""The edge table: several students side by side, by size, cost, CPU latency and quality.

Pure data and text, no torch and no onnxruntime: `Latency` is what `latency.measure_latency`
returns, `EdgeRow` one student's figures, `edge_rows` the text table, `pareto_front` which
students no other beats on both latency and quality (the ones worth deploying). The plot of
the same rows is `plots.plot_edge`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from leapkd.errors import LeapkdError


class Latency(BaseModel):
    """One latency measurement of a model: batch 1 on the CPU with `threads` threads."""

    threads: int = Field(ge=1, description="intra-op threads of the session")
    runs: int = Field(ge=1, description="timed runs (after the warm-up)")
    median_ms: float = Field(ge=0, description="median time of one run, milliseconds")
    p90_ms: float = Field(ge=0, description="90th percentile of one run's time, milliseconds")

    def text(self) -> str:
        """`1 thread: median 1.23 ms, p90 1.50 ms`."""
        threads = f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        return f"{threads}: median {self.median_ms:.2f} ms, p90 {self.p90_ms:.2f} ms"


class EdgeRow(BaseModel):
    """One student of the edge table; `quality` holds fractions (knn_top1: 0.5 is 50%)."""

    name: str
    params: int = Field(ge=0)
    flops_per_image: int | None = None
    latency: list[Latency] = []
    quality: dict[str, float] = {}

    def latency_at(self, threads: int) -> Latency | None:
        return next((m for m in self.latency if m.threads == threads), None)

    def widest(self) -> Latency | None:
        """The measurement with the most threads, when it has more than one."""
        most = max(self.latency, key=lambda m: m.threads, default=None)
        return most if most is not None and most.threads > 1 else None


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For each (latency, quality) point, whether it is on the front: no other point is at least
    as fast and at least as good, and strictly better in one. Equal points are all on it."""
    return [
        not any(lat <= p_lat and q >= p_q and (lat < p_lat or q > p_q) for j, (lat, q) in enumerate(points) if j != i)
        for i, (p_lat, p_q) in enumerate(points)
    ]


def quality_names(rows: list[EdgeRow]) -> list[str]:
    """The quality figures any row has, in the order they first appear."""
    return list(dict.fromkeys(name for row in rows for name in row.quality))


def front_marks(rows: list[EdgeRow], quality: str) -> list[bool]:
    """Which rows are on the Pareto front of `quality` against 1-thread median latency; a row
    without either figure is not."""
    placed = [
        (i, (one.median_ms, row.quality[quality]))
        for i, row in enumerate(rows)
        if quality in row.quality and (one := row.latency_at(1)) is not None
    ]
    marks = [False] * len(rows)
    for (i, _), on_front in zip(placed, pareto_front([point for _, point in placed])):
        marks[i] = on_front
    return marks


def edge_rows(rows: list[EdgeRow], quality: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The edge table as text: a header and one row per student (a dash where a figure is
    missing). The last column marks with `*` the rows on the Pareto front of `quality` (default:
    the first quality figure present) against 1-thread median latency."""
    names = quality_names(rows)
    quality = quality if quality is not None else (names[0] if names else None)
    if quality is not None and quality not in names:
        raise LeapkdError(
            f"no student has the quality figure '{quality}'",
            f"choose one of {', '.join(names)}" if names else "evaluate the students first",
        )
    header = [
        "student",
        "params (M)",
        "GFLOPs/image",
        "1 thread ms (median / p90)",
        "all threads ms (median / p90)",
        *names,
        f"Pareto ({quality})" if quality else "Pareto",
    ]
    marks = front_marks(rows, quality) if quality is not None else [False] * len(rows)
    table = [
        [
            row.name,
            f"{row.params / 1e6:.2f}",
            f"{row.flops_per_image / 1e9:.2f}" if row.flops_per_image is not None else "-",
            _ms(row.latency_at(1)),
            _ms(row.widest()),
            *(f"{100 * row.quality[n]:.1f}%" if n in row.quality else "-" for n in names),
            "*" if mark else "",
        ]
        for row, mark in zip(rows, marks)
    ]
    return header, table


def _ms(measured: Latency | None) -> str:
    return f"{measured.median_ms:.2f} / {measured.p90_ms:.2f}" if measured is not None else "-"
