"""Images without labels: folders at any depth, path lists, globs; the image list a run keeps."""

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leapkd import LeapkdError
from leapkd.cli import main
from leapkd.data import ImageList, build_dataset, unlabelled_images, walk_images
from leapkd.training import distill


def image(path: Path, value: int = 100, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """12 images at three depths, plus files that are not images."""
    root = tmp_path / "photos"
    for i in range(4):
        image(root / f"top-{i}.jpg", 10 * i)
        image(root / "2023" / f"a-{i}.png", 20 * i)
        image(root / "2023" / "07" / "deep" / f"b-{i}.jpeg", 30 * i)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"hidden")
    return root


def test_a_folder_at_any_depth_is_unlabelled_images(photos):
    ds = build_dataset(str(photos), "train", 16, augment=False)
    assert len(ds) == 12 and ds.classes == [] and set(ds.targets) == {-1}
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and y == -1
    with pytest.raises(LeapkdError, match="unlabelled images, so it has no 'val' split"):
        build_dataset(str(photos), "val", 16, augment=False)
    with pytest.raises(LeapkdError, match="needs class labels"):
        build_dataset(str(photos), "train", 16, augment=False, subset_per_class=2)


def test_a_list_file_and_a_glob(photos, tmp_path):
    listing = tmp_path / "train.txt"
    absolute = photos / "top-0.jpg"
    listing.write_text(f"# my images\nphotos/2023/a-1.png\n\n{absolute}\nphotos/2023/07/deep/b-3.jpeg\n")
    listed = unlabelled_images(str(listing))
    assert [listed[i] for i in range(len(listed))] == [
        tmp_path / "photos/2023/a-1.png",
        absolute,
        tmp_path / "photos/2023/07/deep/b-3.jpeg",
    ]
    globbed = unlabelled_images(str(photos / "**" / "*.png"))
    assert len(globbed) == 4 and all(globbed[i].suffix == ".png" for i in range(4))
    deep = unlabelled_images(str(photos / "2023" / "*" / "deep" / "*.jpeg"))
    assert len(deep) == 4 and deep.root == photos / "2023"


def test_walking_a_folder_stats_no_file(photos, monkeypatch):
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: (calls.append(a), real_stat(*a, **k))[1])
    names = list(walk_images(photos))
    assert len(names) == 12 and calls == []  # the directory entries' types are enough
    assert names[:4] == [f"top-{i}.jpg" for i in range(4)]  # files first, then subfolders, in name order


def test_the_list_is_packed_as_names_arrive(tmp_path):
    """No list of all the names is held while listing (1.28M names would be ~300 MB of str)."""
    count = 200_000
    names = (f"n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG" for i in range(count))
    tracemalloc.start()
    images = ImageList(tmp_path, names)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(images) == count and images.name(count - 1) == f"n{999:08d}/n{999:08d}_{count - 1}.JPEG"
    assert peak < 2 * images.nbytes, (peak, images.nbytes)


def test_the_list_is_compact_and_round_trips(tmp_path):
    names = [f"n{i:07d}/img_{i:08d}.JPEG" for i in range(20_000)]
    images = ImageList(tmp_path, names)
    raw = sum(len(n) for n in names)
    assert images.nbytes <= raw + 8 * (len(names) + 1)  # the names' bytes and one offset each
    images.save(tmp_path / "list.npz", labels=np.arange(len(names)))
    again, extra = ImageList.load(tmp_path / "list.npz")
    assert again.name(12_345) == names[12_345] and again.root == tmp_path and extra["labels"][-1] == 19_999


@pytest.mark.parametrize(
    "make,says",
    [
        (lambda d: d.mkdir(), "is empty"),
        (lambda d: (d.mkdir(), (d / "a.txt").write_text("x")), "no image files under"),
        (lambda d: (d.parent / "list.txt").write_text("missing/one.jpg\nmissing/two.jpg\n"), "2 of the 2 paths"),
    ],
    ids=["empty folder", "folder of non-images", "list with missing paths"],
)
def test_bad_sources_are_clear_errors_and_create_nothing(tmp_path, make, says, capsys):
    source = tmp_path / "data"
    make(source)
    target = source if source.exists() else tmp_path / "list.txt"
    runs = tmp_path / "runs"
    code = main(["distill", "--data", str(target), "--teacher", "vit-nano", "--allow-random-teacher",
                 "--image-size", "32", "--output-dir", str(runs), "--name", "bad", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and says in err and "fix:" in err and "Traceback" not in err
    assert not runs.exists()


def test_a_glob_matching_nothing(tmp_path, capsys):
    code = main(["distill", "--data", str(tmp_path / "nowhere" / "*.jpg"), "--teacher", "vit-nano",
                 "--allow-random-teacher", "--output-dir", str(tmp_path / "runs"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "matches no image file" in err and not (tmp_path / "runs").exists()


def test_distill_on_unlabelled_images_evaluates_on_eval_data(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    settings = dict(teacher="vit-nano", allow_random_teacher=True, student="vit-nano", image_size=32,
                    batch_size=4, epochs=2, output_dir=str(tmp_path / "runs"), progress=False)  # fmt: skip
    r = distill(name="u", data=str(photos), eval_data="fashion-mnist", **settings)
    assert r.summary.train_images == 12 and r.summary.steps == 6
    index = r.run_dir / "train-images.npz"
    assert index.is_file()
    code = main(["eval", str(r.run_dir), "--protocols", "knn", "--train-per-class", "4", "--val-per-class", "2",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert "fashion-mnist" in (r.run_dir / "eval.json").read_text()

    # the saved list is what a resume trains on, whatever the folder holds by then
    image(photos / "later" / "new.jpg")
    resumed = distill(name="u", data=str(photos), eval_data="fashion-mnist", resume=True,
                      **{**settings, "epochs": 3})  # fmt: skip
    assert resumed.summary.train_images == 12 and resumed.summary.steps == 9
