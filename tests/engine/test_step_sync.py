"""The training step as a GPU needs it: one host transfer per optimizer step, collectives only
while the module is on its training device, fp16 gradients clipped after unscaling."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import SingleDeviceStrategy
from PIL import Image

import leapkd.engine.trainer as engine_trainer
import leapkd.training as training
from leapkd.engine.module import DistillModule
from leapkd.training import distill

HOST_CONVERSIONS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__", "numpy")


def count_host_conversions(monkeypatch) -> list[list[str]]:
    """Per training_step call, the tensor -> host conversions made inside it (on a GPU each
    waits for the device)."""
    per_call: list[list[str]] = []
    inside = [False]
    for name in HOST_CONVERSIONS:
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            if inside[0]:
                per_call[-1].append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    real_step = DistillModule.training_step

    def training_step(self, batch, batch_idx):
        per_call.append([])
        inside[0] = True
        try:
            return real_step(self, batch, batch_idx)
        finally:
            inside[0] = False

    monkeypatch.setattr(DistillModule, "training_step", training_step)
    return per_call


@pytest.mark.parametrize("method", ["leap", "fixed"])
def test_one_host_transfer_per_optimizer_step(tiny, monkeypatch, method):
    per_call = count_host_conversions(monkeypatch)
    distill(name="sync", **{**tiny, "method": method, "epochs": 1, "batch_size": 4, "accumulate_grad_batches": 2})
    assert len(per_call) == 10  # 40 images / 4 per micro-batch
    # LEAP's one-off calibration on the first batch: a figure per teacher level (6)
    assert per_call[0] == (["__float__"] * 6 if method == "leap" else [])
    assert per_call[2::2] == [[]] * 4  # a micro-batch that only accumulates never waits for the device
    assert per_call[1::2] == [["tolist"]] * 5  # each optimizer step: its one transfer


class NcclLikeStrategy(SingleDeviceStrategy):
    """One process that plays rank 0 of 2 and, like NCCL, refuses a collective once Lightning's
    teardown has run (on a GPU the module is on the CPU by then)."""

    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"))
        self.world_size = 2
        self.torn_down = False
        self.collectives = 0

    def teardown(self) -> None:
        self.torn_down = True
        super().teardown()

    def _collective(self) -> None:
        if self.torn_down:
            raise RuntimeError("collective after teardown: NCCL refuses tensors on the CPU")
        self.collectives += 1

    def reduce(self, tensor, *args, **kwargs):
        self._collective()
        return super().reduce(tensor, *args, **kwargs)

    def broadcast(self, obj, src=0):
        self._collective()
        return super().broadcast(obj, src)


def test_collectives_run_while_the_module_is_on_its_device(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = data / split / cls
            folder.mkdir(parents=True)
            for i in range(8):
                Image.new("L", (32, 32), 40 * i).save(folder / f"{i}.png")
            (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # the skipped-image mask is reduced
    strategy = NcclLikeStrategy()
    real_trainer = L.Trainer
    monkeypatch.setattr(engine_trainer.L, "Trainer", lambda **kw: real_trainer(**{**kw, "strategy": strategy}))
    with pytest.warns(RuntimeWarning, match="unreadable image skipped"):
        result = distill(name="nccl", **{**tiny, "data": str(data), "batch_size": 2, "epochs": 1})
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["job_flops"] > 0
    assert strategy.torn_down and strategy.collectives > 0


def test_fp16_clips_the_unscaled_gradients(tiny, monkeypatch):
    """With loss scaling (init scale 2^16) a clip applied before unscaling leaves a gradient norm
    of clip / 2^16; the clip must see the true gradients."""
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    real_trainer = L.Trainer

    def trainer(**kw):
        kw.pop("precision")
        return real_trainer(**{**kw, "plugins": [*kw["plugins"], plugin]})

    monkeypatch.setattr(engine_trainer.L, "Trainer", trainer)
    monkeypatch.setattr(training, "resolve_precision", lambda *a: ("16-mixed", "fp16 on the CPU, for this test"))
    norms: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, closure=None):  # the closure runs the hooks (unscale, clip) before the update
        loss = closure() if closure is not None else None
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real_step(self) if loss is None else loss

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    distill(name="fp16", **{**tiny, "grad_clip": 0.01, "epochs": 1, "max_steps": 3})
    assert len(norms) == 3
    assert norms == pytest.approx([0.01] * 3, rel=1e-3)
