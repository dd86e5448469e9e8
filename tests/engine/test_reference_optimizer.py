"""leapkd's LARS and its parameter groups against the LEAP reference's own code, run here:
lightly-train 0.14.1's `get_weight_decay_parameters` (how DistillationV2 groups its student and
head) and lightly 1.5.22's `LARS`, on the same model. scripts/setup.sh installs the two wheels
without their dependencies; the test imports only these two modules (lightly-train's package
`__init__`, which needs OpenCV and more, is not run)."""

import copy
import importlib
import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from leapkd.engine.optimizers import build_optimizer, decay_split
from leapkd.methods import load_config
from leapkd.models import load_backbone


@pytest.fixture
def reference(monkeypatch):
    """(get_weight_decay_parameters, LARS) from the reference's packages."""
    spec = importlib.util.find_spec("lightly_train")
    assert spec is not None, "lightly-train 0.14.1 is missing: run scripts/setup.sh"
    package = types.ModuleType("lightly_train")
    package.__path__ = list(spec.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "lightly_train", package)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")  # lightly's import would ask the network otherwise
    helpers = importlib.import_module("lightly_train._optim.optimizer_helpers")
    return helpers.get_weight_decay_parameters, importlib.import_module("lightly.utils.lars").LARS


def _student_and_head():
    torch.manual_seed(0)
    student = load_backbone("vit_small_patch14_dinov2", 28, model_kwargs={"embed_dim": 32, "num_heads": 2, "depth": 2})
    return student, nn.Linear(32, 48)  # DistillationV2's student and its projection head


def test_the_groups_are_lightly_trains(reference):
    get_weight_decay_parameters, _ = reference
    student, head = _student_and_head()
    ours = [{id(p) for p in group} for group in decay_split((student, head))]
    theirs = [{id(p) for p in group} for group in get_weight_decay_parameters([student.model, head])]
    names = {id(p): n for n, p in [*student.named_parameters(), *head.named_parameters()]}
    assert ours == theirs, f"decayed here only: {[names[i] for i in ours[0] - theirs[0]]}, " \
                           f"there only: {[names[i] for i in theirs[0] - ours[0]]}"  # fmt: skip
    assert {"model.cls_token", "model.pos_embed"} <= {names[i] for i in ours[1]}


def test_lars_steps_like_lightlys(reference):
    get_weight_decay_parameters, LARS = reference
    student, head = _student_and_head()
    twin, twin_head = copy.deepcopy(student), copy.deepcopy(head)
    cfg = load_config(None, {"optimizer": "lars", "weight_decay": 1e-6, "momentum": 0.9,
                             "lars_trust_coefficient": 0.001})  # fmt: skip
    ours = build_optimizer(cfg, (student, head), lr=0.5, fused=False)
    decay, no_decay = get_weight_decay_parameters([twin.model, twin_head])
    theirs = LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.5, momentum=0.9,
                  weight_decay=1e-6, trust_coefficient=0.001, eps=1e-8)  # fmt: skip
    pairs = list(zip([*student.parameters(), *head.parameters()], [*twin.parameters(), *twin_head.parameters()]))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in pairs:
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        ours.step()
        theirs.step()
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in pairs)
    assert any(not torch.equal(a, p) for (a, _), p in zip(pairs, _student_and_head()[0].parameters()))  # it moved
