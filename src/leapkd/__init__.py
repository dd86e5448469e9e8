"""leapkd: knowledge distillation of Vision Transformers."""

from leapkd.errors import LeapkdError

__version__ = "0.1.0"

__all__ = ["LeapkdError", "__version__"]
