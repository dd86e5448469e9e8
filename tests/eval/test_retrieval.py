import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from leapkd.errors import LeapkdError
from leapkd.eval import RetrievalImages, class_retrieval_map, load_revisited, rank_database, revisited_map

# One query over a 6-image database: easy {0, 1}, hard {2}, junk {3}; ranking 4 0 3 2 5 1.
GND = {"easy": [0, 1], "hard": [2], "junk": [3]}
RANKING = [4, 0, 3, 2, 5, 1]


def _col(*columns: list[int]) -> np.ndarray:
    return np.array(columns).T  # (num_ranked, num_queries)


def test_perfect_ranking_scores_one_everywhere() -> None:
    gnd = [{"easy": [0, 1], "hard": [2, 3], "junk": [4]}, {"easy": [5], "hard": [1], "junk": []}]
    res = revisited_map(_col([0, 1, 2, 3, 4, 5], [5, 1, 0, 2, 3, 4]), gnd)
    for setting in ("easy", "medium", "hard"):
        assert res[setting] == {"map": 1.0, "mp@1": 1.0, "mp@5": 1.0, "mp@10": 1.0}


def test_hand_computed_ap_and_precision() -> None:
    # AP term of positive j (0-based) at junk-free 0-based rank r: (j/r + (j+1)/(r+1)) / 2 / num_pos.
    # Easy: junk {3, 2} removed -> 4 0 5 1; positives at r = 1, 3:
    #   (0/1 + 1/2)/2 + (1/3 + 2/4)/2 = 1/4 + 5/12 = 2/3, / 2 positives = 1/3.
    #   P@k, cap = last positive's 1-based rank 4: P@1 = 0/1, P@5 = P@10 = 2/4.
    # Medium: junk {3} removed -> 4 0 2 5 1; positives at r = 1, 2, 4:
    #   1/4 + (1/2 + 2/3)/2 + (2/4 + 3/5)/2 = 15/60 + 35/60 + 33/60 = 83/60, / 3 = 83/180.
    #   cap 5: P@1 = 0, P@5 = P@10 = 3/5.
    # Hard: junk {3, 0, 1} removed -> 4 2 5; positive at r = 1: 1/4. cap 2: P@1 = 0, P@5 = P@10 = 1/2.
    res = revisited_map(torch.tensor(_col(RANKING)), [GND])
    assert res["easy"] == pytest.approx({"map": 1 / 3, "mp@1": 0.0, "mp@5": 0.5, "mp@10": 0.5})
    assert res["medium"] == pytest.approx({"map": 83 / 180, "mp@1": 0.0, "mp@5": 0.6, "mp@10": 0.6})
    assert res["hard"] == pytest.approx({"map": 0.25, "mp@1": 0.0, "mp@5": 0.5, "mp@10": 0.5})
    assert set(revisited_map(_col(RANKING), [GND], kappas=(2,))["hard"]) == {"map", "mp@2"}


def test_junk_position_does_not_matter() -> None:
    without_junk = revisited_map(_col([4, 0, 2, 5, 1]), [GND])["medium"]  # a partial ranking
    for ranking in ([3, 4, 0, 2, 5, 1], [4, 0, 3, 2, 5, 1], [4, 0, 2, 5, 1, 3]):
        assert revisited_map(_col(ranking), [GND])["medium"] == pytest.approx(without_junk)


def test_query_without_positives_is_skipped() -> None:
    second = {"easy": [5], "hard": [], "junk": []}  # no hard images: left out of Hard
    res = revisited_map(_col(RANKING, [5, 0, 1, 2, 3, 4]), [GND, second])
    assert res["hard"]["map"] == pytest.approx(0.25)
    assert res["easy"]["map"] == pytest.approx((1 / 3 + 1) / 2)
    assert res["medium"]["mp@1"] == pytest.approx(0.5)
    assert math.isnan(revisited_map(_col([0, 1]), [{"easy": [0], "hard": [], "junk": []}])["hard"]["map"])


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_queries"):
        revisited_map(_col(RANKING), [GND, GND])
    with pytest.raises(ValueError, match="'junk'"):
        revisited_map(_col(RANKING), [{"easy": [0], "hard": []}])


def test_rank_database_orders_by_cosine() -> None:
    db = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    ranks = rank_database(torch.tensor([[0.0, 1.0], [3.0, 0.1]]), db, chunk=1)
    assert ranks.tolist() == [[1, 0], [2, 2], [0, 1]]


def test_class_retrieval_by_hand() -> None:
    # Angles 0, 10, 25, 90 degrees with labels 0 1 0 1, plus a lone class at 180 (skipped,
    # always ranked last). Query 0: 10(1) 25(0) 90(1) -> AP 1/2. Query 10: 0(0) 25(0) 90(1) -> 1/3.
    # Query 25: 10(1) 0(0) 90(1) -> 1/2. Query 90: 25(0) 10(1) 0(0) -> 1/2. Mean 11/24.
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 25.0, 90.0, 180.0]))
    feats = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [2.0], [3.0], [1.0], [1.0]])
    labels = torch.tensor([0, 1, 0, 1, 2])
    assert class_retrieval_map(feats, labels) == pytest.approx(11 / 24)
    assert class_retrieval_map(feats, labels, chunk=2) == pytest.approx(11 / 24)


def test_class_retrieval_extremes() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(10)
    clusters = torch.eye(4, 8)[labels] * 10 + torch.randn(40, 8, generator=gen)
    assert class_retrieval_map(clusters, labels, chunk=7) == pytest.approx(1.0)
    noise_labels = torch.randint(0, 2, (200,), generator=gen)
    assert 0.4 < class_retrieval_map(torch.randn(200, 16, generator=gen), noise_labels) < 0.6


def _fake_root(tmp_path, name: str = "roxford5k"):
    jpg = tmp_path / name / "jpg"
    jpg.mkdir(parents=True)
    for stem, colour in (("a", "red"), ("b", "green"), ("q", "blue")):
        Image.new("RGB", (20, 12), colour).save(jpg / f"{stem}.jpg")
    gnd = [{"bbx": [1.0, 2.0, 11.0, 7.0], "easy": [0], "hard": [], "junk": [1]}]
    with open(tmp_path / name / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": ["a", "b"], "qimlist": ["q"], "gnd": gnd}, f)
    return jpg


def test_load_revisited_and_crop(tmp_path) -> None:
    jpg = _fake_root(tmp_path)
    db, queries, boxes, gnd = load_revisited(tmp_path, "roxford5k")
    assert db == [jpg / "a.jpg", jpg / "b.jpg"] and queries == [jpg / "q.jpg"]
    assert boxes == [(1.0, 2.0, 11.0, 7.0)] and gnd[0]["junk"] == [1]
    assert RetrievalImages(queries, boxes)[0].size == (10, 5)
    assert RetrievalImages(db, transform=lambda im: im.size)[1] == (20, 12)


def test_load_revisited_errors(tmp_path) -> None:
    with pytest.raises(LeapkdError) as err:
        load_revisited(tmp_path, "rparis6k")
    assert "revisited Oxford/Paris" in err.value.fix and "never downloads" in err.value.fix
    with pytest.raises(LeapkdError, match="roxford5k"):
        load_revisited(tmp_path, "oxford5k")
    jpg = _fake_root(tmp_path)
    (jpg / "b.jpg").unlink()
    with pytest.raises(LeapkdError, match="missing"):
        load_revisited(tmp_path, "roxford5k")
