"""leapkd: knowledge distillation of Vision Transformers.

The public API is imported lazily, so `import leapkd` (and `leapkd --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leapkd.errors import LeapkdError

__version__ = "0.1.0"

_LAZY = {
    "distill": "leapkd.distill",
    "DistillResult": "leapkd.distill",
    "DistillConfig": "leapkd.config",
    "load_config": "leapkd.config",
    "load_backbone": "leapkd.models",
    "Backbone": "leapkd.models",
    "linear_cka": "leapkd.metrics",
    "mean_cosine": "leapkd.metrics",
    "Curriculum": "leapkd.curriculum",
    "CurriculumConfig": "leapkd.curriculum",
    "build_dataset": "leapkd.data",
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
    "linear_cka",
    "load_backbone",
    "load_config",
    "mean_cosine",
]

if TYPE_CHECKING:
    from leapkd.config import DistillConfig, load_config
    from leapkd.curriculum import Curriculum, CurriculumConfig
    from leapkd.data import build_dataset
    from leapkd.distill import DistillResult, distill
    from leapkd.metrics import linear_cka, mean_cosine
    from leapkd.models import Backbone, load_backbone


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leapkd' has no attribute {name!r}")
