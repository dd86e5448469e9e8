"""bench/leap_lead_page.py: LEAP against the fixed target, paired by seed, drawn between markers."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from leap_lead_page import END, START_PREFIX, lead_by_step, lead_table, paired, render_section  # noqa: E402

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


def test_the_lead_along_the_run_pairs_curves_by_recipe_and_seed_per_student(tmp_path):
    def curve(at_100: float, at_200: float) -> dict:
        return {**_run(at_200, 0.6, 0, 0.0), "curve": [[0, 0.1], [100, at_100], [200, at_200]]}

    grid = {
        "vit-nano / demo": {"fixed": {0: curve(0.30, 0.50), 1: curve(0.20, 0.40)},
                            "leap": {0: curve(0.35, 0.45), 1: curve(0.26, 0.38), 2: curve(0.9, 0.9)}},
        "vit-nano / leap-paper": {"fixed": {0: curve(0.30, 0.50)}, "leap": {0: curve(0.37, 0.49)}},
        "vit-tiny / demo": {"fixed": {0: curve(0.30, 0.50)}, "leap": {0: curve(0.20, 0.50)}},
    }  # fmt: skip
    lead = lead_by_step(grid)  # leap's seed 2 has no fixed partner: left out
    assert list(lead) == ["vit-nano", "vit-tiny"] and len(lead["vit-nano"]) == 3
    assert [round(100 * pair[100]) for pair in lead["vit-nano"]] == [5, 6, 7]
    rows = lead_table(lead)
    assert rows[0] == "| step | vit-nano | vit-tiny | all pairs |"
    step_100 = "+6.0 ± 1.0 (3 of 3; better) | -10.0 (0 of 1; one seed: untested) | +2.0 ± 8.0 (3 of 4; no difference)"
    assert rows[2] == f"| 100 | {step_100} |"
    step_200 = "-2.7 ± 2.1 (0 of 3; worse) | +0.0 (0 of 1; one seed: untested) | -2.0 ± 2.2 (0 of 4; no difference)"
    assert rows[3] == f"| 200 | {step_200} |"
    assert len(rows) == 4  # step 0, the shared initialisation, has no row
    runs = {
        f"grid/{setting.replace(' / ', '/')}/{arm}/s{seed}": run
        for setting, arms in grid.items()
        for arm, seeds in arms.items()
        for seed, run in seeds.items()
    }
    text = render_section({"runs": runs, "machine": {"cpu": "x", "cores": 2}, "finished": "now"}, tmp_path)
    assert "### LEAP's lead along the run" in text and rows[2] in text
    assert (tmp_path / "leap_lead_by_step.png").stat().st_size > 10_000
