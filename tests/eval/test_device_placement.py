"""Evaluation on an accelerator, checked on the CPU: everything a model sees is on that
model's device, and batches split over several devices keep the requested autocast dtype.

There is no GPU here, so the "other device" is `meta` (tensors with shapes and no data): a
model moved there fails at once when it is fed a CPU tensor, as a CUDA model would.
"""

from __future__ import annotations

import inspect
import sys
import threading

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from leapkd.eval.cka_map import CkaMapProtocol, common_grid, level_rows
from leapkd.eval.protocol import EvalContext, EvalOptions
from leapkd.feature_cache import extract_levels
from leapkd.models import load_backbone


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))


def test_level_rows_move_the_images_to_the_models_device():
    model = load_backbone("vit-nano", 32, patch_size=8).to("meta")
    rows = level_rows(model, torch.randn(5, 3, 32, 32), common_grid(model), batch_size=2)  # images on the CPU
    assert len(rows) == model.num_levels
    assert all(r.device.type == "meta" and r.shape == (5 * 16, model.levels[i].width) for i, r in enumerate(rows))


def test_the_cka_map_protocol_runs_the_reference_and_the_images_on_the_evaluation_device(tmp_path, monkeypatch):
    model = load_backbone("vit-nano", 32, patch_size=8).to("meta")  # as `evaluate` moves the target to its device
    pairs = []

    def on_one_device(x, y):
        pairs.append((x.device.type, y.device.type))
        return torch.tensor(0.5)

    monkeypatch.setattr(sys.modules["leapkd.eval.cka_map"], "linear_cka", on_one_device)  # the package exports
    # a function of the same name, so the module is taken from sys.modules
    options = EvalOptions(reference="vit-nano", cka_images=4, progress=False)
    ctx = EvalContext(model, "fashion-mnist", 32, 0, options, tmp_path, {"name": "student"})
    assert ctx.device.type == "meta"
    result = CkaMapProtocol().run(ctx)
    assert len(result["matrix"]) == model.num_levels and result["matrix"][0][0] == 0.5
    assert pairs and set(pairs) == {("meta", "meta")}


class ThreadedReplica(nn.Module):
    """`nn.DataParallel` as far as autocast goes, on the CPU: the module runs in a thread of its own.

    "parallel_apply" re-enters autocast in the thread as torch does
    (torch/nn/parallel/parallel_apply.py: `torch.amp.autocast(device_type, enabled=...)`, no
    dtype), so the thread gets the device's default dtype: float16 on CUDA, bfloat16 on the
    CPU (here float16 is the one lost, the mirror image of bfloat16 on CUDA); "bare" enters nothing.
    """

    def __init__(self, module: nn.Module, device_ids: list[int], mode: str) -> None:
        super().__init__()
        self.module, self.device_ids, self.mode = module, device_ids, mode

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        enabled, result = torch.is_autocast_enabled("cpu"), {}

        def replica() -> None:
            with torch.autocast("cpu", enabled=enabled and self.mode == "parallel_apply"):
                result["out"] = self.module(images)

        thread = threading.Thread(target=replica)
        thread.start()
        thread.join()
        return result["out"]


@pytest.mark.parametrize("mode", ["parallel_apply", "bare"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_split_extraction_computes_in_the_requested_dtype_in_every_replica_thread(monkeypatch, mode, dtype):
    replicas = []

    def data_parallel(module, device_ids):
        replicas.append(ThreadedReplica(module, device_ids, mode))
        return replicas[-1]

    monkeypatch.setattr(torch.nn, "DataParallel", data_parallel)
    model = load_backbone("vit-nano", 32, patch_size=8)
    seen = []
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    data = TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6))
    found = extract_levels(model, data, [2, model.num_levels], batch_size=4, progress=False, autocast_dtype=dtype,
                           devices=2)  # fmt: skip
    assert replicas and replicas[0].device_ids == [0, 1]
    assert seen and set(seen) == {dtype}
    assert all(f.dtype == torch.float32 and f.shape[0] == 6 for f, _ in found.values())


def test_revisited_retrieval_extracts_with_the_calls_precision_workers_devices_and_transform(tmp_path, monkeypatch):
    """Like every other protocol: on a GPU, 0 loader workers would decode the JPEGs in the
    main process while the GPU waits, and the features would ignore `--precision` and `--transform`."""
    from PIL import Image

    from leapkd import feature_cache as features_module
    from leapkd.data.transforms import build_transform
    from leapkd.eval.retrieval import RetrievalProtocol

    retrieval = sys.modules["leapkd.eval.retrieval"]
    signature = inspect.signature(features_module.extract_levels)
    calls = []

    def extraction(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(bound.arguments)
        dataset, levels = bound.arguments["dataset"], bound.arguments["levels"]
        return {b: (torch.randn(len(dataset), 8), torch.zeros(len(dataset), dtype=torch.long)) for b in levels}

    monkeypatch.setattr(features_module, "extract_levels", extraction)  # what the code before the fix reached
    monkeypatch.setattr(retrieval, "extract_levels", extraction, raising=False)
    gnd = [{"bbx": [0, 0, 4, 4], "easy": [1], "hard": [], "junk": []}]
    paths = [tmp_path / f"im{i}.jpg" for i in range(3)]
    monkeypatch.setattr(retrieval, "load_revisited", lambda root, name: (paths, paths[:1], [(0, 0, 4, 4)], gnd))
    options = EvalOptions(autocast=torch.bfloat16, num_workers=3, devices=2, data_root=tmp_path, progress=False,
                          transform="center-crop")  # fmt: skip
    model = load_backbone("vit-nano", 32, patch_size=8)
    ctx = EvalContext(model, "roxford5k", 32, 0, options, tmp_path, {"name": "vit-nano"}, labelled=False)
    result = RetrievalProtocol().run(ctx)
    assert set(result) == {"easy", "medium", "hard"} and len(calls) == 2  # the database, then the queries
    for kwargs in calls:
        assert kwargs["autocast_dtype"] is torch.bfloat16 and kwargs["num_workers"] == 3 and kwargs["devices"] == 2
    image = Image.fromarray(torch.randint(0, 256, (30, 40, 3), dtype=torch.uint8).numpy())
    cropped = build_transform(32, False, model.mean, model.std, eval_transform="center-crop")(image)
    assert torch.equal(calls[0]["dataset"].images.transform(image), cropped)
