"""Run configuration: the keys every run has, and the mechanics of reading them.

A run's configuration is one flat set of keys for the user (one YAML file, one set of
`--key value` overrides): the common keys below (`DistillConfig`) plus the keys of the
chosen method, which each method declares in its own `MethodArgs` class. The method
registry (`leapkd.methods.load_config`) joins the two into one strict pydantic class per
method. An unknown key is an error that names it and the closest known keys; a value out
of range is an error that names the key and the allowed range. The resolved configuration
is saved as `config.yaml` in the run directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from typing_extensions import Self

from leapkd.errors import LeapkdError, closest_names

C = TypeVar("C", bound=BaseModel)
Tracker = Literal["csv", "tensorboard", "wandb", "mlflow"]
EVAL_EVERY = re.compile(r"^\s*(\d*)\s*(steps?|epochs?)\s*$")


class StrictKeys(BaseModel):
    """Unknown keys are refused; a choice written as a number (`precision: 32` in YAML,
    `--precision 32`) is read as its text, and a list may be written `a,b` (`--logger
    csv,wandb`, `--student_layers 1,2,5,6`) as well as `[a, b]`; one value is a list of one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _lists_and_choices(cls, value: Any, info: ValidationInfo) -> Any:
        if not info.field_name:
            return value
        if is_list_key(cls, info.field_name):
            if isinstance(value, str) and value.strip() in ("null", "None", "~"):
                return None
            if isinstance(value, str) and value.strip():
                return [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
            if isinstance(value, int | float) and get_origin(_unwrap(cls, info.field_name)) is list:
                value = [value]
        if choices_of(cls, info.field_name):
            if isinstance(value, list):
                return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
        return value


class MethodArgs(StrictKeys):
    """Base of a method's own keys (declared by each registered method as `Args`)."""


class StudentEntry(StrictKeys):
    """One student of a run of several (`students`)."""

    student: str = Field(description="a preset, a timm name or a registered model, as the `student` key")
    student_weights: str | None = Field(None, description="a local weight file to start it from")
    student_kwargs: dict[str, Any] | None = Field(None, description="extra arguments of its timm constructor")
    name: str | None = Field(None, description="its directory under `<run>/students/` (default: its model name)")

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        return {"student": value} if isinstance(value, str) else value


class ModelKeys(StrictKeys):
    """The run and its models (the first keys of every run)."""

    # ----- run -----
    name: str | None = Field(
        None,
        description="the run's name: the run directory is `<output_dir>/<name>`; default: "
        "`<method>-<teacher>-<student>-s<seed>`",
    )
    output_dir: str = Field(
        "runs", description="parent directory of run directories: the run directory is `<output_dir>/<name>`"
    )
    seed: int = Field(0, description="seeds the student's weights, the data order and the augmentation")
    recipe: str | None = Field(
        None,
        description="a named recipe whose keys are the starting point (`leapkd recipes` lists them); your keys win",
    )
    method: str = Field(
        "leap",
        description="a registered method: `leap` (curriculum), `fixed` (last-block baseline), `spectralkd` (FFT "
        "alignment), or one you register (`leapkd distill --help --method M` lists M's keys)",
    )
    # ----- models -----
    teacher: str = Field(
        "dinov2-vits14-imgfocus",
        description='the embedded teacher, a timm name of any supported family ("Models"), a registered model, or'
        " a Hugging Face Dinov2 directory",
    )
    teacher_weights: str | None = Field(
        None,
        description="a local weight file for the teacher: `.safetensors`, `.pth` or `.bin` (timm, DINOv2 hub or "
        "HF layout)",
    )
    teacher_pretrained: bool = Field(
        False,
        description="a timm-name teacher with timm's pretrained weights (downloads: needs a network); "
        "`teacher_weights`, when given, wins",
    )
    allow_random_teacher: bool = Field(
        False,
        description="accept a preset or timm-name teacher without weights (random init: tests and speed "
        "benchmarks only); otherwise such a teacher is refused",
    )
    teacher_kwargs: dict[str, Any] | None = Field(
        None, description="extra arguments of the teacher's timm constructor, e.g. `{depth: 6}`"
    )
    student: str = Field(
        "vit-nano",
        description="`vit-nano` (128/6/2), `vit-tiny` (192/12/3), `vit-small` (384/12/6) (width/depth/heads "
        "presets, built with the teacher's patch size), or a timm name of any supported family or a "
        "registered model (kept as named)",
    )
    student_weights: str | None = Field(None, description="a local weight file to start the student from")
    student_kwargs: dict[str, Any] | None = Field(
        None,
        description="extra arguments of the student's timm constructor, e.g. `{depth: 6}` or `{drop_path_rate: 0.1}`",
    )
    students: list[StudentEntry] | None = Field(
        None,
        description="several students distilled in one run from one teacher pass per batch, each a `student` "
        "with its own `student_kwargs` / `student_weights` and an optional directory `name` (`--student a,b` is "
        "the short form); each gets `<run>/students/<name>/` with what a one-student run writes",
    )

    def lane_configs(self) -> list[tuple[str, Self]]:
        """(name, configuration) of each student: what the student's own run would be configured with."""
        if self.students is None:
            return [(self.student, self)]
        lanes = []
        for entry in self.students:
            name = entry.name or Path(entry.student).name
            keys: dict[str, Any] = {"student": entry.student, "student_weights": entry.student_weights}
            keys |= {"student_kwargs": entry.student_kwargs, "students": None, "name": name}
            lanes.append((name, self.model_copy(update=keys)))
        return lanes

    @model_validator(mode="after")
    def _students_listed_once(self) -> Self:
        if "," in self.student:
            if self.students is not None:
                raise ValueError("give several students as `student` a,b or as `students`, not both")
            names = [n.strip() for n in self.student.split(",") if n.strip()]
            self.__dict__["students"] = [StudentEntry.model_validate({"student": n}) for n in names]
            self.__dict__["student"] = names[0]
        if self.students is not None:
            names = [e.name or Path(e.student).name for e in self.students]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(
                    f"student {', '.join(twice)} is listed twice in `students` (each student gets a directory named "
                    "after it): list it once, or give the entries distinct names in YAML "
                    "(`students: [{student: vit-tiny, name: a}, {student: vit-tiny, name: b}]`)"
                )
            if not names:
                raise ValueError("`students` lists no student")
        return self


# The least count and the words of the keys that take a count or a word.
_COUNT_WORDS = {
    "num_workers": (0, "auto"),
    "subset_per_class": (1, "all, or auto"),
    "eval_images_per_class": (1, "all"),
}


def _count_or_word(value: int | str, key: str) -> int | str:
    least, words = _COUNT_WORDS[key]
    if isinstance(value, int) and value < least:
        raise ValueError(f"must be at least {least}, or {words}")
    return value


class DataKeys(ModelKeys):
    """The training data and its augmentation."""

    # ----- data -----
    data: str = Field(
        "fashion-mnist",
        description="`fashion-mnist`, `animal-mnist`, `mnist5k` (built-in datasets); a folder with "
        "`train/<class>/` (labels; `val/<class>/` too); or unlabelled images: any other folder (any "
        "depth), a `.txt` list of paths, a glob (`'photos/**/*.jpg'`)",
    )
    data_root: str | None = Field(
        None, description="the directory holding a built-in dataset's files; default: where its package put them"
    )
    eval_data: str | None = Field(
        None,
        description="a labelled set to evaluate on (built-in name or class folders) when `data` has no labels; "
        "default: `data` itself (its own `val/`), which must then be labelled",
    )
    subset_per_class: int | Literal["all", "auto"] = Field(
        "auto",
        description="training images per class (seeded), or `all`; `auto`: 80 for a built-in dataset (the demo) "
        "and every image of a folder",
    )
    image_size: int = Field(
        112, ge=14, description="input resolution in pixels (teacher and student see the same images)"
    )
    augment: bool = Field(True, description="random training augmentation (the `aug_*` keys); false: a plain resize")
    mixup: bool = Field(
        False,
        description="mix every batch with a shuffled copy of itself, one lambda ~ U(0, 1) per batch, images only,"
        " calibration batch included (the LEAP reference's); refused with `ce_weight` > 0",
    )
    aug_crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="random-resized-crop area range (fractions of the image)"
    )
    aug_flip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    aug_jitter: float = Field(0.0, ge=0, le=1, description="colour jitter probability")
    aug_jitter_strength: tuple[float, float, float, float] = Field(
        (0.4, 0.4, 0.2, 0.1), description="colour jitter's brightness, contrast, saturation, hue"
    )
    aug_grayscale: float = Field(0.0, ge=0, le=1, description="random grayscale probability")
    aug_blur: float = Field(0.0, ge=0, le=1, description="random Gaussian blur probability")
    aug_blur_sigma: tuple[float, float] = Field((0.1, 2.0), description="the Gaussian blur's sigma range")
    aug_randaugment: str | None = Field(
        None,
        description="timm RandAugment after the crop and flip, e.g. `rand-m9-mstd0.5-inc1` (DeiT's; magnitudes "
        "stop at 9.99, where Pillow still accepts timm's posterize); None: off",
    )
    aug_interpolation: Literal["bilinear", "bicubic"] = Field(
        "bilinear",
        description="resampling of the random resized crop and of RandAugment's rotations, shears and "
        "translations: `bilinear` or `bicubic` (DeiT's and SpectralKD's)",
    )
    aug_erasing: float = Field(
        0.0,
        ge=0,
        le=1,
        description="random erasing probability per image (DeiT: 0.25; timm's boxes from the same draws, "
        "per-pixel noise, batched), on the device after normalising",
    )
    repeated_augmentation: int = Field(
        1,
        ge=1,
        description="repeated augmentation: R > 1: each epoch takes about 1/R of the images, each in R "
        "augmentations (DeiT: 3), spread over the ranks",
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="data-loading processes per training process; `auto`: the process's share of the cores minus "
        "one (at most 32)",
    )

    @field_validator("num_workers", "subset_per_class")
    @classmethod
    def _count_or_choice(cls, value: int | str, info: ValidationInfo) -> int | str:
        """A count (at least 0 workers, at least 1 image per class) or one of the key's words."""
        return _count_or_word(value, str(info.field_name))


class OptimizationKeys(DataKeys):
    """How long and how the student is optimised: run length, batch, optimizer, schedule, EMA."""

    epochs: int = Field(10, ge=1, description="run length: training epochs")
    max_steps: int | None = Field(None, ge=1, description="run length: stop after this many optimizer steps")
    batch_size: int = Field(32, ge=1, description="images per batch per device")
    accumulate_grad_batches: int = Field(
        1, ge=1, description="batches whose gradients make one optimizer step (global batch = batch x this x devices)"
    )
    optimizer: Literal["adamw", "lars"] = Field(
        "adamw",
        description="`adamw`, or `lars` (the LEAP reference's, timm's `Lars`: the decayed parameters get the "
        "trust ratio and weight decay, the others neither; SGD momentum)",
    )
    lr: float = Field(5e-4, gt=0, description="peak learning rate, before `lr_scale`")
    momentum: float = Field(0.9, ge=0, lt=1, description="LARS: SGD momentum")
    lars_trust_coefficient: float = Field(0.001, gt=0, description="LARS: the trust coefficient")
    lr_scale: Literal["none", "linear", "sqrt"] = Field(
        "none",
        description="`linear` or `sqrt`: scale `lr` by global batch (batch x accumulation x devices) / "
        "`lr_reference_batch`; `none`: `lr` as given",
    )
    lr_reference_batch: int = Field(
        256, ge=1, description="the reference batch of `lr_scale`: the global batch at which `lr` is the given value"
    )
    weight_decay: float = Field(
        0.05,
        ge=0,
        description="weight decay (timm's rule: not on norms, biases, nor what the model's `no_weight_decay()` "
        "names, such as ViT's tokens and `pos_embed` and Swin's relative position bias tables)",
    )
    warmup_steps: int = Field(20, ge=0, description="linear warm-up steps")
    warmup_epochs: float | None = Field(
        None, ge=0, description="linear warm-up in epochs of optimizer steps; when set, replaces `warmup_steps`"
    )
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a fraction of the peak")
    min_lr: float | None = Field(
        None, ge=0, description="absolute cosine floor, as timm's `min_lr`; when set, replaces `min_lr_ratio`"
    )
    warmup_lr: float | None = Field(
        None, ge=0, description="absolute LR the warm-up starts from, as timm's `warmup_lr`; default: from 0"
    )
    lr_interval: Literal["step", "epoch"] = Field(
        "step",
        description="`step`: the schedule moves every optimizer step; `epoch`: once per epoch, as timm's "
        "scheduler stepped after each epoch in DeiT's loop (epoch e at t = e - 1: epochs 0 and 1 both"
        " at the warm-up start; warm-up in whole epochs; the cosine spanning all epochs from epoch "
        "0); restarts (`lr_reset`) need `step`",
    )
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clipping (`null`: off)")
    ema_decay: float | None = Field(
        None,
        ge=0,
        le=1,
        description="keep an EMA of the student's weights and of its classification head when the method trains "
        "one, with this decay (e.g. 0.999), as timm's `ModelEma`; by default the EMA student is the "
        "one saved, exported and evaluated (see `kept_weights`)",
    )
    kept_weights: Literal["ema", "live"] = Field(
        "ema",
        description="with `ema_decay`, which weights are the run's student (evaluated, kept as best, snapshotted,"
        " saved as `student.safetensors`): `ema` (the average, head included), or `live` (the trained"
        " weights, the SpectralKD reference's choice; the average is then saved as "
        "`student_ema.safetensors`)",
    )


class DistillConfig(OptimizationKeys):
    """The keys every run has, whatever its method (the run, models, data and optimisation keys of its
    bases, then execution, outputs and evaluation). Defaults: the embedded CPU demo (minutes)."""

    compile: bool = Field(
        False,
        description="`torch.compile` the student and each teacher level (the early exit keeps its compiled levels)",
    )
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto",
        description="`auto`: `bf16-mixed` where the device computes bf16 natively (CUDA compute capability 8.0+, "
        "i.e. Ampere on; CPUs with AVX512-BF16 or AMX), else `32`; `16-mixed`: fp16 with loss "
        "scaling, CUDA only (older GPUs). In mixed precision the frozen teacher is stored in the "
        "compute dtype (half its memory). The choice and why are printed at start and written to "
        "`summary.json`",
    )
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "high", description="float32 matrix products on CUDA: `high` allows TF32, `highest` does not"
    )
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every this many steps (always at epoch ends and on Ctrl-C)"
    )
    checkpoint_every_minutes: float | None = Field(
        None, gt=0, description="also checkpoint once this many minutes passed since the last checkpoint"
    )
    snapshot_every: int | None = Field(
        None,
        ge=1,
        description="also save the student every this many steps, and at step 0, to `<run>/snapshots/` "
        "(time-to-accuracy curves)",
    )
    logger: list[Tracker] = Field(
        ["csv"],
        description="experiment trackers, several at once (`--logger csv,tensorboard,wandb,mlflow`); metrics.csv "
        'is always written ("Watching a run")',
    )
    tracker_project: str = Field("leapkd", description="the W&B project and MLflow experiment runs are logged to")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow's store (tracking URI); default: the SQLite file `<output_dir>/mlflow.db`"
    )
    # ----- evaluation during training -----
    eval_every: int | str | None = Field(
        None,
        description="score the student during training every N optimizer steps (`200`) or N epochs (`1 epoch`), "
        'before the first and after the last step ("Watching a run"); None: off',
    )
    eval_protocols: list[Literal["knn", "linear"]] = Field(
        ["knn"],
        description="what `eval_every` measures: `knn` (seconds), and/or `linear` (the probe; slower); `[]`: the "
        "student's own head alone (the `train` split is then not read)",
    )
    eval_images_per_class: int | Literal["all"] = Field(
        20,
        description="fixed, un-augmented images per class of the evaluation data's `train` split (kNN bank, probe"
        " fit) and of its `val` split, or `all`",
    )
    eval_transform: Literal["resize", "center-crop"] = Field(
        "resize",
        description="`eval_every`'s images: `resize` (short side to S, centre S) or `center-crop` (short side to "
        "S x 256 / 224, bicubic, centre S: the SpectralKD and LEAP references' validation transform)",
    )
    eval_metric: Literal["knn_top1", "knn_top5", "linear_top1", "linear_top5", "student_top1", "student_top5"] = Field(
        "knn_top1",
        description="the figure that picks `student_best.safetensors` and drives early stopping: `knn_top1`, "
        "`knn_top5`, `linear_top1`, `linear_top5`; `student_top1`, `student_top5`: the student's own "
        "head, with `ce_weight` or `kd_weight` > 0",
    )
    early_stop_patience: int | None = Field(
        None,
        ge=1,
        description="stop after this many evaluations without `eval_metric` rising by more than "
        "`early_stop_min_delta`; None: never",
    )
    early_stop_min_delta: float = Field(
        0.0,
        ge=0,
        description="early stopping: a rise of `eval_metric` counts as an improvement only when it is more than this",
    )
    nan_policy: Literal["stop", "skip"] = Field(
        "stop",
        description="on a NaN/Inf loss: `stop` with an error naming the step, or `skip` the batch without updating",
    )

    @field_validator("eval_images_per_class")
    @classmethod
    def _images_per_class(cls, value: int | str) -> int | str:
        return _count_or_word(value, "eval_images_per_class")

    @field_validator("eval_every")
    @classmethod
    def _eval_schedule(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("must be at least 1 (steps), or `N epochs`")
            return value
        if value is None:
            return None
        match = EVAL_EVERY.match(value)
        if match is None or match.group(1) == "0":
            raise ValueError("write a number of steps (200) or epochs (`1 epoch`, `2 epochs`)")
        count = int(match.group(1) or 1)
        return count if match.group(2).startswith("step") else f"{count} epoch{'s' if count > 1 else ''}"

    @model_validator(mode="after")
    def _evaluation_keys_agree(self) -> DistillConfig:
        protocol = self.eval_metric.split("_")[0]
        if self.eval_every is not None and protocol not in (*self.eval_protocols, "student"):
            raise ValueError(f"eval_metric {self.eval_metric} needs {protocol} in eval_protocols")
        if self.mixup and getattr(self, "ce_weight", 0.0) > 0:
            raise ValueError("mixup mixes images, not labels: it cannot be used with ce_weight > 0")
        if self.early_stop_patience is not None and self.eval_every is None:
            raise ValueError("early_stop_patience needs eval_every (early stopping acts on evaluations)")
        return self

    def eval_schedule(self) -> tuple[int, Literal["steps", "epochs"]] | None:
        """(N, unit) of `eval_every`, or None when off."""
        if self.eval_every is None:
            return None
        if isinstance(self.eval_every, int):
            return self.eval_every, "steps"
        return int(self.eval_every.split()[0]), "epochs"

    def run_name(self) -> str:
        if self.name:
            return self.name
        teacher = Path(self.teacher).name if "/" in self.teacher else self.teacher
        student = "+".join(name for name, _ in self.lane_configs())
        return f"{self.method}-{teacher}-{student}-s{self.seed}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


def _unwrap(model: type[BaseModel], key: str) -> Any:
    """A key's annotation without `| None`."""
    field = model.model_fields.get(key)
    annotation = field.annotation if field is not None else None
    if get_origin(annotation) in (Union, UnionType):
        annotation = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    return annotation


def is_list_key(model: type[BaseModel], key: str) -> bool:
    """Whether the key holds a list or tuple of values (written `a,b` or `[a, b]`)."""
    return get_origin(_unwrap(model, key)) in (list, tuple)


def choices_of(model: type[BaseModel], key: str) -> tuple[str, ...]:
    """The allowed values of a choice-valued key (a Literal of texts, or a list of them), else ()."""
    field = model.model_fields.get(key)
    annotation = field.annotation if field is not None else None
    if get_origin(annotation) is list:  # a list of choices (`logger`)
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is not Literal:
        return ()
    return tuple(str(c) for c in get_args(annotation))


def describe_key(model: type[BaseModel], key: str) -> str:
    """One help line: the key's meaning, default, choices and range."""
    field = model.model_fields[key]
    extra = [f"default: {field.default}"]
    if choices_of(model, key):
        extra.append(f"choices: {', '.join(choices_of(model, key))}")
    if is_list_key(model, key):
        extra.append("a list: a,b or [a, b]")
    bounds = [
        f"{symbol} {getattr(m, attr)}"
        for m in field.metadata
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if getattr(m, attr, None) is not None
    ]
    if bounds:
        extra.append(f"range: {', '.join(bounds)}")
    return f"{field.description or ''} [{'; '.join(extra)}]"


def _explain(err: ValidationError, model: type[BaseModel], elsewhere: Mapping[str, str], command: str) -> LeapkdError:
    lines, fixes = [], []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown {'config key' if command == 'distill' else 'option'} '{key}'")
            if key in elsewhere:
                fixes.append(f"'{key}' is a key of method {elsewhere[key]}; pick that method or drop the key")
                continue
            close = closest_names(key, list(model.model_fields))
            fixes.append(
                f"did you mean {' or '.join(close)}?" if close else f"run `leapkd {command} --help` for the keys"
            )
        elif key == "config":  # a rule across keys: the message names them
            lines.append(str(e["msg"]).removeprefix("Value error, "))
            fixes.append("change the settings the message names")
        else:
            lines.append(f"{key}: {str(e['msg']).removeprefix('Value error, ')} (got {e.get('input')!r})")
            fixes.append(f"set {key} to a valid value (`leapkd {command} --help` lists ranges)")
    return LeapkdError("; ".join(lines), "; ".join(dict.fromkeys(fixes)))


def validate(
    values: Mapping[str, Any], model: type[C], elsewhere: Mapping[str, str] | None = None, command: str = "distill"
) -> C:
    """`model(**values)`, or a LeapkdError naming each bad key. `elsewhere` maps keys of
    other methods to their method, for a precise hint; `command` is the one whose `--help` the fix names."""
    try:
        return model(**values)
    except ValidationError as err:
        raise _explain(err, model, elsewhere or {}, command) from None


def parse_value(text: str, as_text: bool = False) -> Any:
    """A command-line value as YAML would read it (numbers, true/false, null, lists).

    Values of text keys (`as_text`: names, paths, choices) stay text: `--name nan` is the
    run "nan", not NaN, and `--precision 32` is the choice "32".
    """
    if as_text:
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


def text_keys(model: type[BaseModel]) -> frozenset[str]:
    """Keys whose command-line values are taken as text."""
    return frozenset(
        k for k, f in model.model_fields.items() if f.annotation in (str, str | None) or choices_of(model, k)
    )


def read_values(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keys of a YAML file (optional) with `overrides` applied, not yet validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise LeapkdError(f"config file {path} does not exist", "check the path given to `config`")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise LeapkdError(f"config file {path} is not valid YAML: {err}", "fix the YAML at the line shown") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise LeapkdError(f"config file {path} must hold a mapping of key: value", "write `key: value` lines")
        values.update(loaded or {})
    values.update(overrides or {})
    return values


def read_common_config(path: str | Path) -> DistillConfig:
    """The common keys of a saved run configuration (the method's keys are left out)."""
    values = read_values(path)
    return validate({k: v for k, v in values.items() if k in DistillConfig.model_fields}, DistillConfig)
