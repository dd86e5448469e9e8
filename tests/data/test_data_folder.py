"""Image-folder dataset: layout, colour modes, errors and corrupt files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leapkd.data import ImageFolderDataset, build_dataset, load_image


def test_classes_sorted_and_labels(tiny_folder: Path) -> None:
    ds = build_dataset(str(tiny_folder), "train", 16, augment=False)
    assert ds.classes == ["ant", "bee", "cat"]
    assert ds.targets == [0] * 3 + [1] * 3 + [2] * 3
    img, label = ds[4]
    assert img.shape == (3, 16, 16) and label == 1
    raw = ImageFolderDataset(tiny_folder, "val")
    assert [raw.images[i].parent.name for i in range(len(raw))] == ["ant", "bee", "cat"]
    # "cat" was written with value 0 (class index 0 when written), so pixels are 0
    assert np.asarray(raw[2][0]).max() == 0


def test_val_classes_follow_train(tiny_folder: Path) -> None:
    (tiny_folder / "val" / "cat" / "0.png").unlink()
    (tiny_folder / "val" / "cat").rmdir()
    ds = ImageFolderDataset(tiny_folder, "val")
    assert ds.classes == ["ant", "bee", "cat"] and ds.targets == [0, 1]


def test_colour_modes_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # one transparent pixel -> white background
    p_rgba = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p_rgba)
    p_pal = tmp_path / "pal.png"
    Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(p_pal)
    p16 = tmp_path / "grey16.png"
    a16 = np.array([[65535, 32768], [0, 257]], np.uint16)
    Image.fromarray(a16).save(p16)
    assert Image.open(p16).mode.startswith("I")

    im = load_image(p_rgba)
    assert im.mode == "RGB" and im.getpixel((1, 1)) == (200, 0, 0) and im.getpixel((0, 0)) == (255, 255, 255)
    im = load_image(p_pal)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (10, 200, 30)
    im = np.asarray(load_image(p16))
    assert im.shape == (2, 2, 3) and np.all(im[..., 0] == im[..., 2])
    assert im[0, 0, 0] >= 250  # 65535 -> near white
    assert 120 <= im[0, 1, 0] <= 136  # 32768 -> mid grey, not clipped to white
    assert im[1, 0, 0] == 0 and im[1, 1, 0] == 1


def test_modes_through_build_dataset(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    for split in ("train", "val"):
        d = root / split / "a"
        d.mkdir(parents=True)
        Image.new("RGBA", (10, 10), (1, 2, 3, 128)).save(d / "x.png")
        Image.fromarray(np.full((10, 10), 40000, np.uint16)).save(d / "y.png")
        Image.new("P", (10, 10)).save(d / "z.gif")
    ds = build_dataset(str(root), "val", 12, augment=True)
    assert all(ds[i][0].shape == (3, 12, 12) for i in range(len(ds)))


def _problem_and_fix(exc_info: pytest.ExceptionInfo) -> tuple[str, str]:
    return exc_info.value.problem, str(exc_info.value.fix)


def test_error_nonexistent_path(tmp_path: Path) -> None:
    from leapkd.errors import LeapkdError

    with pytest.raises(LeapkdError) as e:
        build_dataset(str(tmp_path / "nope"), "train", 16, augment=False)
    problem, fix = _problem_and_fix(e)
    assert "does not exist" in problem and "nope" in problem
    assert "train" in fix and "val" in fix


def test_error_empty_folder(tmp_path: Path) -> None:
    from leapkd.errors import LeapkdError

    (tmp_path / "empty").mkdir()
    with pytest.raises(LeapkdError) as e:
        build_dataset(str(tmp_path / "empty"), "train", 16, augment=False)
    problem, fix = _problem_and_fix(e)
    assert "is empty" in problem and "train" in fix


def test_error_class_dirs_without_images(tmp_path: Path) -> None:
    from leapkd.errors import LeapkdError

    for c in ("a", "b"):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
    (tmp_path / "d" / "train" / "a" / "notes.txt").write_text("hi")
    with pytest.raises(LeapkdError) as e:
        build_dataset(str(tmp_path / "d"), "train", 16, augment=False)
    problem, fix = _problem_and_fix(e)
    assert "no images" in problem and ".png" in fix and ".jpg" in fix


def test_error_no_class_dirs_missing_split_and_empty_class(tiny_folder: Path, tmp_path: Path, save_grey) -> None:
    from leapkd.errors import LeapkdError

    flat = tmp_path / "flat"
    save_grey(flat / "train" / "x.png")
    with pytest.raises(LeapkdError) as e:
        ImageFolderDataset(flat, "train")
    assert "no class folders" in e.value.problem and "subfolder per class" in str(e.value.fix)
    with pytest.raises(LeapkdError) as e:
        ImageFolderDataset(flat, "val")
    assert "no 'val/' subfolder" in e.value.problem and "create" in str(e.value.fix)
    (tiny_folder / "train" / "dog").mkdir()
    with pytest.raises(LeapkdError) as e:
        ImageFolderDataset(tiny_folder, "train")
    assert "dog" in e.value.problem and "no images" in e.value.problem


def test_corrupt_images_are_skipped_counted_and_warned_once(tmp_path: Path, save_grey) -> None:
    root = tmp_path / "bad"
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(3):
                save_grey(root / split / c / f"{i}.png", 50 * i)
    (root / "train" / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    good = root / "train" / "b" / "0.png"
    big = root / "train" / "b" / "trunc.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    assert good.exists()

    ds = build_dataset(str(root), "train", 16, augment=False)
    assert len(ds) == 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
        items += [ds[i] for i in range(len(ds))]  # a second epoch warns no more
    assert len(items) == 16 and all(x.shape == (3, 16, 16) for x, _ in items)
    assert ds.num_skipped == 2
    assert {p.name for p in ds.skipped} == {"bad.jpg", "trunc.png"}
    ours = [w for w in caught if "unreadable image" in str(w.message)]
    assert len(ours) == 1 and len(caught) == 1
