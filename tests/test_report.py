"""The run report: every section the run directory supports, and no broken image."""

import base64
import json
import re

import pytest

from leapkd import LeapkdError
from leapkd.eval.runner import evaluate
from leapkd.report import write_report
from leapkd.training import distill


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    r = distill(
        name="rep", teacher="vit-nano", allow_random_teacher=True, student="vit-nano", image_size=32,
        subset_per_class=4, batch_size=8, epochs=2, threshold=0.6, output_dir=str(tmp_path / "runs"), progress=False,
    )  # fmt: skip
    return r.run_dir


def images_ok(html_text: str) -> int:
    tags = re.findall(r'<img [^>]*src="([^"]+)"', html_text)
    for src in tags:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return len(tags)


def test_distill_writes_the_report(run_dir):
    text = (run_dir / "report.html").read_text()
    for title in ("At a glance", "Curriculum", "Loss", "FLOPs and time", "Configuration"):
        assert f"<h2>{title}</h2>" in text
    assert "Evaluation on" not in text and "CKA map" not in text  # nothing evaluated yet
    assert images_ok(text) == 3  # curriculum, loss, accounting
    summary = json.loads((run_dir / "summary.json").read_text())
    for label, value in [("images/s (whole job)", f"{summary['images_per_second']:.1f}"),
                         ("precision", summary["precision"])]:  # fmt: skip
        assert re.search(rf"<td>{re.escape(label)}</td>\s*<td>{re.escape(value)}", text), label
    md = (run_dir / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (run_dir / link).is_file(), link


def test_report_grows_with_evaluation_and_cka_map(run_dir):
    evaluate(str(run_dir), protocols=("knn", "linear", "cka-map"), train_per_class=6, val_per_class=4, progress=False)
    html_path, _ = write_report(run_dir)
    text = html_path.read_text()
    assert "<h2>Evaluation on fashion-mnist</h2>" in text and "<h2>CKA map</h2>" in text
    assert "kNN top-1" in text and "linear probe top-1" in text
    assert images_ok(text) == 4


def test_report_needs_a_run(tmp_path):
    with pytest.raises(LeapkdError, match="no summary.json"):
        write_report(tmp_path)
