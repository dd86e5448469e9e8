"""bench/leap_lead_page.py: LEAP against the fixed target, paired by seed, drawn between markers."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from leap_lead_page import END, START_PREFIX, paired, render_section  # noqa: E402

CONFIG = {"data": "animal-mnist", "subset_per_class": 80, "image_size": 112, "batch_size": 32, "eval_every": 100,
          "eval_images_per_class": 50, "student": "vit-tiny"}  # fmt: skip


def _run(knn: float, linear: float, last: int | None, saving: float) -> dict:
    return {"config": CONFIG, "knn_top1": knn, "linear_top1": linear, "last_block_from_step": last,
            "flops_saving": saving, "curve": [[0, 0.1], [100, knn - 0.05], [200, knn]]}  # fmt: skip


def test_differences_are_paired_by_seed_and_count_only_beyond_their_spread():
    fixed = {0: _run(0.50, 0.6, 0, 0.0), 1: _run(0.40, 0.6, 0, 0.0), 2: _run(0.45, 0.6, 0, 0.0)}
    ahead = {0: _run(0.52, 0.6, 100, 0.1), 1: _run(0.43, 0.6, 75, 0.1), 2: _run(0.46, 0.6, 100, 0.1)}
    d = paired(ahead, fixed, "knn_top1")  # +2, +3, +1 points: the seeds' 10-point spread cancels out
    assert d["seeds"] == 3 and abs(d["diff"] - 0.02) < 1e-9 and d["verdict"] == "better"
    assert paired({0: ahead[0]}, fixed, "knn_top1")["verdict"] == "one seed: untested"
    assert paired({5: ahead[0]}, fixed, "knn_top1") is None  # no seed in common


def test_the_section_tables_both_parts_and_draws_the_curves(tmp_path):
    runs = {}
    for seed in (0, 1):
        runs[f"grid/vit-nano/demo/fixed/s{seed}"] = _run(0.5, 0.6, 0, 0.0)
        runs[f"grid/vit-nano/demo/leap/s{seed}"] = _run(0.4 + 0.01 * seed, 0.5, 100, 0.02)
        runs[f"ablation/fixed/s{seed}"] = _run(0.3, 0.5, 0, 0.0)
        runs[f"ablation/leap, CLS term 0.05/s{seed}"] = _run(0.35 + 0.01 * seed, 0.5, 75, 0.04)
    text = render_section({"runs": runs, "machine": {"cpu": "x", "cores": 2}, "finished": "now"}, tmp_path)
    assert text.startswith(START_PREFIX) and text.rstrip().endswith(END)
    assert "### Across students and recipes, 200 steps" in text and "(vit-tiny, 200 steps)" in text
    assert (
        "| vit-nano / demo / `fixed` | 2 | 50.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 0.0 (200, 200) | – | – | 0, 0 | 0.0% |"
        in text
    )
    assert (
        "| vit-nano / demo / `leap` | 2 | 40.5 ± 0.7 | 50.0 ± 0.0 | 40.5 ± 0.7 (200, 200) | -9.5 ± 0.7 (worse) |"
        in text
    )
    assert (
        "| `leap, CLS term 0.05` | 2 | 35.5 ± 0.7 | 50.0 ± 0.0 | 35.5 ± 0.7 (200, 200) | +5.5 ± 0.7 (better) |" in text
    )
    for png in ("leap_lead_curves.png", "leap_lead_ablation_curves.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_the_header_names_each_machine_that_ran_runs(tmp_path):
    runs = {"grid/vit-nano/demo/fixed/s0": _run(0.5, 0.6, 0, 0.0), "grid/vit-nano/demo/leap/s0": _run(0.4, 0.5, 9, 0.0)}
    store = {"runs": runs, "machine": {"cpu": "B", "cores": 2}, "finished": "now"}
    assert "(machine: unknown, 2 cores" in render_section(store, tmp_path)
    runs["grid/vit-nano/demo/fixed/s0"]["cpu"] = runs["grid/vit-nano/demo/leap/s0"]["cpu"] = "A"
    assert "(machine: A, 2 cores" in render_section(store, tmp_path)
    runs["grid/vit-nano/demo/leap/s0"]["cpu"] = "B"
    assert "(machines: A (1 run), B (1 run), 2 cores" in render_section(store, tmp_path)
