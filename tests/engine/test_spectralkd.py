"""SpectralKD end to end, and the spectral / CE / logit-KD terms inside other methods."""

import pytest

from leapkd import LeapkdError
from leapkd.methods import default_spectral_pairs
from leapkd.rundir import read_metrics
from leapkd.training import distill


def test_default_pairs_follow_the_papers_pattern():
    # DeiT-Tiny (12) <- CaiT-S24 (24): blocks (0, 1, 6..11) x (0, 1, 18..23) 0-based
    assert default_spectral_pairs(12, 24) == [(1, 1), (2, 2)] + [(s, s + 12) for s in range(7, 13)]
    assert default_spectral_pairs(6, 12) == [(1, 1), (2, 2), (3, 9), (4, 10), (5, 11), (6, 12)]


def test_spectralkd_run(tiny):
    r = distill(name="skd", method="spectralkd", **{**tiny, "epochs": 2})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert all(row["loss_spectral"] is not None and "loss_feature" not in row for row in rows)  # declared terms only
    assert r.summary.loss_terms == ["spectral"]
    assert all(row["metric"] is None for row in rows)  # no projector to measure
    assert all(row["teacher_blocks_run"] == 6 for row in rows)
    assert rows[-1]["loss_spectral"] < rows[0]["loss_spectral"]
    assert r.summary.flops_saving == 0.0


def test_spectralkd_with_labels_and_logit_kd(tiny):
    r = distill(
        name="kd", method="spectralkd", ce_weight=0.1, kd_weight=0.9, kd_temperature=2.0, **{**tiny, "epochs": 1}
    )
    row = read_metrics(r.run_dir / "metrics.csv")[0]
    expected = 0.2 * row["loss_spectral"] + 0.1 * row["loss_ce"] + 0.9 * row["loss_kd"]
    assert row["loss"] == pytest.approx(expected, rel=1e-5)


def test_spectral_term_inside_leap_uses_only_teacher_blocks_that_ran(tiny):
    r = distill(
        name="ls",
        method="leap",
        spectral_weight=0.5,
        student_layers=[1, 6],
        teacher_layers=[1, 6],
        threshold=0.99,
        calibrate=False,
        **tiny,
    )
    rows = read_metrics(r.run_dir / "metrics.csv")
    for row in rows:
        assert row["teacher_blocks_run"] == row["target_block"]  # the spectral term never runs the teacher deeper
        assert row["loss_spectral"] is not None  # pair (1, 1) is always available


def test_kd_is_refused_for_leap(tiny):
    with pytest.raises(LeapkdError, match="kd_weight"):
        distill(name="bad", method="leap", kd_weight=0.5, **tiny)


def test_pairs_out_of_range(tiny):
    with pytest.raises(LeapkdError, match="out of range"):
        distill(name="bad", method="spectralkd", student_layers=[7], teacher_layers=[1], **tiny)
