"""Under gradient accumulation the progress metric sees the step's micro-batches joined as one
batch: every field of the targets, not only the patch tokens."""

import dataclasses

import torch

from leapkd import distill
from leapkd.engine.accumulation import MicroBatches
from leapkd.methods import FeatureTargets, LossOutput
from leapkd.methods.fixed import FixedTarget
from leapkd.models import Features


def targets(seed: int) -> FeatureTargets:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return FeatureTargets(
        depth=3,
        patch=r(2, 4, 8),
        grid=(2, 2),
        cls=r(2, 8),
        embed=Features(r(2, 4, 5), (2, 2)),
        spectral={2: Features(r(2, 4, 6), (2, 2), r(2, 1, 6))},
        logits=r(2, 10),
        layers={1: Features(r(2, 4, 8), (2, 2), r(2, 1, 8)), 3: Features(r(2, 4, 8), (2, 2))},
    )


def test_every_field_of_the_targets_is_joined_along_the_batch():
    micro = MicroBatches(per_step=2)
    parts = [targets(0), targets(1)]
    for t in parts:
        micro.add(LossOutput(torch.tensor(1.0), {}, {"projected": torch.zeros(2, 4, 8)}), t)
    out, joined = micro.joined()
    assert out.saved["projected"].shape == (4, 4, 8)
    a, b = parts
    assert joined.depth == 3 and joined.grid == (2, 2)
    for name in ("patch", "cls", "logits"):
        assert torch.equal(getattr(joined, name), torch.cat([getattr(a, name), getattr(b, name)]))
    assert torch.equal(joined.embed.patches, torch.cat([a.embed.patches, b.embed.patches]))
    assert joined.embed.prefix is None
    assert torch.equal(joined.spectral[2].prefix, torch.cat([a.spectral[2].prefix, b.spectral[2].prefix]))
    assert set(joined.layers) == {1, 3} and joined.layers[3].patches.shape == (4, 4, 8)
    assert {f.name for f in dataclasses.fields(FeatureTargets)} == {
        "depth",
        "patch",
        "grid",
        "cls",
        "embed",
        "spectral",
        "logits",
        "layers",
    }  # a new field must be joined too: this test then needs it


def test_a_progress_that_reads_the_cls_token_sees_the_whole_step(tiny, monkeypatch):
    seen = []
    real = FixedTarget.progress

    def progress(self, out, targets):
        seen.append(None if targets.cls is None else tuple(targets.cls.shape))
        return real(self, out, targets)

    monkeypatch.setattr(FixedTarget, "progress", progress)
    distill(name="accumulated", method="fixed", cls_weight=0.05, accumulate_grad_batches=2, **tiny)
    assert seen and all(shape == (2 * tiny["batch_size"], 128) for shape in seen)
