"""leapkd: knowledge distillation of Vision Transformers.

The public API is imported lazily, so `import leapkd` (and `leapkd --help`) stays fast.
No submodule shares a name with a public function, so `leapkd.distill` stays the function
after any submodule has been imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leapkd.errors import LeapkdError

__version__ = "0.1.0"

_LAZY = {
    "distill": "leapkd.training",
    "DistillResult": "leapkd.training",
    "evaluate": "leapkd.eval.runner",
    "export": "leapkd.deploy",
    "spectral_loss": "leapkd.losses",
    "revisited_map": "leapkd.eval.retrieval",
    "DistillConfig": "leapkd.config",
    "load_config": "leapkd.methods",
    "register_method": "leapkd.methods",
    "register_model": "leapkd.models",
    "load_backbone": "leapkd.models",
    "Backbone": "leapkd.models",
    "linear_cka": "leapkd.metrics",
    "mean_cosine": "leapkd.metrics",
    "Curriculum": "leapkd.curriculum",
    "CurriculumConfig": "leapkd.curriculum",
    "build_dataset": "leapkd.data",
    "register_protocol": "leapkd.eval.protocol",
}

__all__ = [
    "Backbone",
    "Curriculum",
    "CurriculumConfig",
    "DistillConfig",
    "DistillResult",
    "LeapkdError",
    "__version__",
    "build_dataset",
    "distill",
    "evaluate",
    "export",
    "linear_cka",
    "load_backbone",
    "load_config",
    "mean_cosine",
    "register_method",
    "register_model",
    "register_protocol",
    "revisited_map",
    "spectral_loss",
]

if TYPE_CHECKING:
    from leapkd.config import DistillConfig
    from leapkd.curriculum import Curriculum, CurriculumConfig
    from leapkd.data import build_dataset
    from leapkd.deploy import export
    from leapkd.eval.protocol import register_protocol
    from leapkd.eval.retrieval import revisited_map
    from leapkd.eval.runner import evaluate
    from leapkd.losses import spectral_loss
    from leapkd.methods import load_config, register_method
    from leapkd.metrics import linear_cka, mean_cosine
    from leapkd.models import Backbone, load_backbone, register_model
    from leapkd.training import DistillResult, distill


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leapkd' has no attribute {name!r}")
