"""Run configuration: typed, strict, loaded from YAML plus `--key value` overrides.

Every key is top-level (one flat namespace, so any key can be overridden on the command
line). An unknown key is an error that names it and the closest known keys; a value out
of range is an error that names the key and the allowed range. The resolved configuration
is saved as `config.yaml` in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from leapkd.errors import LeapkdError, closest_names


class DistillConfig(BaseModel):
    """Everything a distillation run needs. Defaults: the embedded ~5-minute CPU demo."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ----- run -----
    name: str | None = Field(None, description="run name; default <method>-<teacher>-<student>-s<seed>")
    output_dir: str = Field("runs", description="parent directory of run directories")
    seed: int = Field(0, description="seed of weights, data order and augmentation")
    # ----- models -----
    method: Literal["leap", "fixed", "spectralkd"] = Field(
        "leap", description="leap (curriculum), fixed (last-block baseline) or spectralkd (FFT alignment)"
    )
    teacher: str = Field("dinov2-vits14-imgfocus", description="teacher name, timm name or HF directory")
    teacher_weights: str | None = Field(None, description="local weight file for the teacher")
    teacher_pretrained: bool = Field(
        False, description="load timm's pretrained weights for a timm-name teacher (downloads: needs a network)"
    )
    allow_random_teacher: bool = Field(
        False, description="accept a randomly initialised teacher (tests and speed benchmarks only)"
    )
    student: str = Field("vit-nano", description="student preset or timm ViT name")
    student_weights: str | None = Field(None, description="local weight file to start the student from")
    # ----- data -----
    data: str = Field("fashion-mnist", description="built-in dataset name or image folder (train/, val/)")
    data_root: str | None = Field(None, description="directory of a built-in dataset's files")
    subset_per_class: int | Literal["all", "auto"] = Field(
        "auto",
        description="training images per class, or all; auto: 80 for a built-in dataset (the demo), all for a folder",
    )
    image_size: int = Field(112, ge=14, description="input resolution in pixels")
    augment: bool = Field(True, description="random resized crop + flip during training")
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    # ----- optimisation -----
    epochs: int = Field(10, ge=1, description="training epochs")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(32, ge=1, description="images per step (per device)")
    lr: float = Field(5e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not on norms, biases, tokens)")
    warmup_steps: int = Field(20, ge=0, description="linear warm-up steps")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a fraction of the peak")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clip (None: off)")
    precision: Literal["32", "bf16-mixed"] = Field("32", description="bf16-mixed is ~2x slower on CPUs without AMX")
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every this many steps (always: every epoch end and on Ctrl-C)"
    )
    snapshot_every: int | None = Field(
        None,
        ge=1,
        description="also save the student every this many steps (and at step 0) to <run>/snapshots, "
        "for time-to-accuracy curves",
    )
    logger: Literal["csv", "tensorboard"] = Field(
        "csv", description="metrics.csv always; tensorboard also writes <run>/tensorboard (pip install tensorboard)"
    )
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="on a NaN/Inf loss: stop with an error, or skip the batch without updating"
    )
    # ----- loss -----
    cls_weight: float = Field(0.0, ge=0, description="weight of the CLS-token MSE (paper: 0.05)")
    patch_embed_weight: float = Field(0.0, ge=0, description="weight of the patch-embedding MSE")
    fixed_last_n: int = Field(1, ge=1, description="fixed: target = concatenation of the last n blocks")
    # ----- SpectralKD -----
    spectral_weight: float | None = Field(
        None, ge=0, description="weight of the spectral (FFT) loss; default 0.2 for spectralkd, else 0"
    )
    student_layers: list[int] | None = Field(
        None, description="student blocks of the spectral pairs (1-based; default: first 2 + last ones)"
    )
    teacher_layers: list[int] | None = Field(None, description="teacher blocks paired with student_layers (1-based)")
    ce_weight: float = Field(0.0, ge=0, description="cross-entropy on labels through a student linear head")
    kd_weight: float = Field(0.0, ge=0, description="logit KD weight: kd_weight * T^2 * KL(student/T || teacher/T)")
    kd_temperature: float = Field(1.0, gt=0, description="logit KD temperature T")
    # ----- LEAP curriculum -----
    threshold: float = Field(0.85, gt=0, le=1, description="level up when the smoothed metric reaches this")
    alpha: float = Field(1.0, gt=0, le=1, description="EMA weight of the newest metric (1: no smoothing)")
    max_epochs_per_block: int = Field(1, ge=1, description="level up after this many epochs on one block")
    snap_to_last: int | None = Field(None, ge=1, description="once the block is >= this, jump to the last")
    metric: Literal["cka", "cosine"] = Field("cka", description="progress metric")
    metric_images: int | None = Field(None, ge=1, description="compute the metric on this many images of the batch")
    calibrate: bool = Field(True, description="pick the starting block by scanning all blocks on the first batch")
    reset_projector: bool = Field(False, description="reset the projector to its initial weights at each level-up")
    lr_reset: Literal["none", "peak", "envelope"] = Field(
        "none", description="at level-up restart a cosine from the peak LR or the global envelope's value"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _choice_as_text(cls, value: Any, info: ValidationInfo) -> Any:
        """A choice written as a number (`precision: 32` in YAML, `--precision 32`) is its text."""
        if info.field_name and choices(info.field_name) and isinstance(value, int | float):
            if not isinstance(value, bool):
                return str(value)
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> DistillConfig:
        s, t = self.student_layers, self.teacher_layers
        if (s is None) != (t is None) or (s is not None and t is not None and len(s) != len(t)):
            raise ValueError("student_layers and teacher_layers must be given together, with the same length")
        if self.method == "leap" and self.kd_weight > 0:
            raise ValueError("kd_weight needs the teacher's last block every step; use method fixed or spectralkd")
        return self

    @property
    def resolved_spectral_weight(self) -> float:
        if self.spectral_weight is not None:
            return self.spectral_weight
        return 0.2 if self.method == "spectralkd" else 0.0

    @field_validator("subset_per_class")
    @classmethod
    def _positive_subset(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or all, or auto")
        return value

    def run_name(self) -> str:
        if self.name:
            return self.name
        teacher = Path(self.teacher).name if "/" in self.teacher else self.teacher
        return f"{self.method}-{teacher}-{self.student}-s{self.seed}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


def config_keys() -> list[str]:
    return list(DistillConfig.model_fields)


def choices(key: str) -> tuple[str, ...]:
    """The allowed values of a choice-valued key (a Literal of texts), else ()."""
    field = DistillConfig.model_fields.get(key)
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return tuple(str(c) for c in get_args(field.annotation))


def _explain(err: ValidationError) -> LeapkdError:
    lines, fixes = [], []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            close = closest_names(key, config_keys())
            lines.append(f"unknown config key '{key}'")
            fixes.append(f"did you mean {' or '.join(close)}?" if close else "run `leapkd distill --help` for the keys")
        elif key == "config":  # a rule across keys: the message names them
            lines.append(str(e["msg"]).removeprefix("Value error, "))
            fixes.append("change the settings the message names")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
            fixes.append(f"set {key} to a valid value (`leapkd distill --help` lists ranges)")
    return LeapkdError("; ".join(lines), " ".join(dict.fromkeys(fixes)))


def _is_text_field(key: str | None) -> bool:
    field = DistillConfig.model_fields.get(key or "")
    return field is not None and (field.annotation in (str, str | None) or bool(choices(key or "")))


def parse_value(text: str, key: str | None = None) -> Any:
    """A command-line value as YAML would read it (numbers, true/false, null, lists).

    Values of text keys (names, paths, choices) stay text: `--name nan` is the run "nan",
    not NaN, and `--precision 32` is the choice "32".
    """
    if _is_text_field(key):
        return None if text in ("null", "None", "~") else text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Read a YAML file (optional), apply overrides, validate strictly."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise LeapkdError(f"config file {path} does not exist", "check the path given to --config")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise LeapkdError(f"config file {path} is not valid YAML: {err}", "fix the YAML at the line shown") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise LeapkdError(f"config file {path} must hold a mapping of key: value", "write `key: value` lines")
        values.update(loaded or {})
    values.update(overrides or {})
    try:
        return DistillConfig(**values)
    except ValidationError as err:
        raise _explain(err) from None
