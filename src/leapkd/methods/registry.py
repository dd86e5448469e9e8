"""The method registry, and the configuration it defines: common keys + the method's keys.

`@register_method("name")` makes a `Method` subclass usable by name everywhere
(`leapkd distill --method name`, YAML, `leapkd.distill(method="name")`). The run's
configuration class for a method joins `DistillConfig` (common keys) with the method's
`Args`, so one flat, strict set of keys is validated by the method chosen.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from leapkd.config import DistillConfig, MethodArgs, read_values, validate
from leapkd.errors import LeapkdError
from leapkd.methods.base import Method
from leapkd.models import Backbone
from leapkd.plugins import Registry
from leapkd.recipes import recipe_values

METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


@cache
def _joined(args: type[MethodArgs]) -> type[DistillConfig]:
    name = args.__name__.removesuffix("Args") + "Config"
    return type(name, (args, DistillConfig), {"__module__": __name__, "__doc__": f"{name}: common + method keys."})


def config_class(method: str) -> type[DistillConfig]:
    """The configuration class of runs of `method` (LeapkdError for an unknown method)."""
    return _joined(METHODS.get(method).Args)


def method_args(cfg: DistillConfig) -> MethodArgs:
    """The method's own keys of a run configuration (it is one object with the common keys)."""
    assert isinstance(cfg, MethodArgs), "a run configuration comes from load_config"
    return cfg


def _keys_elsewhere(method: str) -> dict[str, str]:
    """Keys that only other methods have, each with the first method that has it."""
    own = config_class(method).model_fields
    out: dict[str, str] = {}
    for cls in METHODS:
        for key in cls.Args.model_fields:
            if key not in own:
                out.setdefault(key, cls.name)
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> DistillConfig:
    """Read a YAML file (optional), apply overrides, validate strictly for the method named.

    With a `recipe` key, the recipe's keys come first and every key given wins over them; a
    recipe applied to another method (`--recipe leap-paper --method fixed`) keeps the keys that
    method has and warns which it dropped.
    """
    values = read_values(path, overrides)
    recipe = recipe_values(str(values["recipe"])) if values.get("recipe") else {}
    method = values.get("method", recipe.get("method", DistillConfig.model_fields["method"].default))
    if not isinstance(method, str):
        raise LeapkdError(f"method must be a name, got {method!r}", f"choose from {', '.join(METHODS.names())}")
    if recipe:
        values = {**_recipe_for(str(values["recipe"]), recipe, method), **values}
    return validate(values, config_class(method), _keys_elsewhere(method))


def _recipe_for(name: str, recipe: dict[str, Any], method: str) -> dict[str, Any]:
    """The recipe's keys that `method` has; a warning names the others."""
    own = config_class(method).model_fields
    dropped = [key for key in recipe if key not in own]
    if dropped:
        warnings.warn(
            f"recipe {name} with method {method}: dropped {', '.join(dropped)} ({method} has no such keys)",
            stacklevel=3,
        )
    return {key: value for key, value in recipe.items() if key in own}


def build_method(cfg: DistillConfig, teacher: Backbone, student: Backbone, num_classes: int | None) -> Method:
    """The method named by `cfg.method`, wired to the teacher's and student's sizes."""
    cls = METHODS.get(cfg.method)
    return cls(method_args(cfg), teacher, student, num_classes=num_classes, seed=cfg.seed)
