"""Named recipes: partial configurations that set every key a published setting fixes.

`leapkd distill --recipe NAME` starts from the recipe's keys; any key given in a YAML file
or on the command line still wins. The run's `config.yaml` holds the expanded result.
Values are the reference implementations' (docs/fidelity.md cites the file and line of each);
where leapkd differs on purpose, the recipe's `notes` say so instead of pretending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leapkd.errors import LeapkdError, closest_names


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line for `leapkd recipes`
    values: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the reference does that leapkd does not yet


# SpectralKD (thy960112/SpectralKD main.py, a DeiT fork, and its README's commands):
# CE (label smoothing) + logit KD (alpha 0.9, T 1) + FFT on layer pairs.
_SPECTRALKD_COMMON: dict[str, Any] = {
    "method": "spectralkd",
    "ce_weight": 0.1,  # (1 - alpha)
    "kd_weight": 0.9,  # alpha
    "kd_temperature": 1.0,
    "label_smoothing": 0.1,
    "lr": 5e-4,  # x global batch / 512
    "lr_scale": "linear",
    "lr_reference_batch": 512,
    "weight_decay": 0.05,
    "grad_clip": None,
    "lr_interval": "epoch",  # timm's scheduler, stepped after each epoch
    "min_lr": 1e-5,
    "warmup_lr": 1e-6,
    "warmup_epochs": 5,
    "ema_decay": 0.99996,
    "kept_weights": "live",  # the reference evaluates and keeps the best of the live model; the EMA is only saved
    "eval_every": "1 epoch",  # the paper scores the student every epoch and keeps the best by its top-1
    "eval_metric": "student_top1",
    "eval_protocols": [],  # its evaluation is the student's own head, on the whole validation split
    "eval_images_per_class": "all",
    "eval_transform": "center-crop",  # Resize(S * 256 / 224, bicubic) + CenterCrop(S)
    # DeiT's augmentation; timm applies no colour jitter when RandAugment is on, so neither does the recipe
    "aug_crop_scale": (0.08, 1.0),
    "aug_randaugment": "rand-m9-mstd0.5-inc1",
    "aug_interpolation": "bicubic",
    "aug_jitter": 0.0,
    "aug_erasing": 0.25,
    "repeated_augmentation": 3,
    "image_size": 224,
    "batch_size": 256,  # README: --batch-size 256 per process, 2 processes (global 512)
    "student_kwargs": {"drop_path_rate": 0.0},  # README: --drop-path 0 (timm's Swin default is 0.1)
    # main.py:313: the teacher is built with its classifier, whose logits are the KD targets; kept
    # only when the weights hold it (teacher_classifier auto then takes it for data of its classes)
    "teacher_kwargs": {"num_classes": 1000},
    "subset_per_class": "all",
}
_DEMO = {
    "method": "leap",
    "teacher": "dinov2-vits14-imgfocus",
    "student": "vit-nano",
    "data": "fashion-mnist",
    "image_size": 112,
    "epochs": 10,
    "batch_size": 32,
}
_SPECTRALKD_NOTES = (
    "the paper's teacher logits come from the teacher's own ImageNet classifier: the recipe builds the teacher "
    "with it, kept when the weights hold it and the data has its 1000 classes; otherwise leapkd fits a linear "
    "head on the teacher's frozen features",
    "RandAugment magnitudes stop at 9.99 (Pillow refuses timm's posterize at 10)",
    "the reference's batch is 256 per device on 2 devices: on one device give --batch_size 512 "
    "(or 256 with --accumulate_grad_batches 2) for its global batch; the LR follows the global batch",
)


def _spectralkd_deit(student: str, epochs: int) -> dict[str, Any]:
    """A DeiT student of the CaiT-S24 teacher: blocks 1, 2, 7..12 paired with 1, 2, 19..24, w_fft 0.2."""
    return {
        **_SPECTRALKD_COMMON,
        "teacher": "cait_s24_224",
        "student": student,
        "student_layers": [1, 2, 7, 8, 9, 10, 11, 12],
        "teacher_layers": [1, 2, 19, 20, 21, 22, 23, 24],
        "spectral_weight": 0.2,
        "epochs": epochs,
    }


# LEAP: the reference's training around the curriculum (KevinZ0217/LEAP train_distill.py on
# LightlyTrain 0.14.1's DistillationV2) with the values of the README's training commands.
_LEAP_PAPER: dict[str, Any] = {
    "method": "leap",
    "teacher": "vit_giant_patch14_reg4_dinov2",
    "teacher_pretrained": True,  # timm's DINOv2 weights (downloads); or give --teacher_weights
    "student": "vit_small_patch14_dinov2",  # DINOv2's ViT-S/14, LayerScale init 1e-5
    "image_size": 224,
    "epochs": 100,  # README: EPOCHS=100
    "batch_size": 256,  # README: BATCH_SIZE=256, global (per device here: one device = the paper's batch)
    "optimizer": "lars",
    "lr": 6.0,  # README: LR=6 (the script's CLI default 9.0 is not what the paper ran)
    "lr_scale": "sqrt",  # LightlyTrain: lr x sqrt(global batch / 1536)
    "lr_reference_batch": 1536,
    "momentum": 0.9,
    "weight_decay": 1e-6,
    "lars_trust_coefficient": 0.001,
    "grad_clip": 1.0,
    "warmup_epochs": 10,  # min(10, epochs / 10)
    "min_lr_ratio": 0.001,
    "mixup": True,
    "aug_crop_scale": (0.14, 1.0),
    "aug_flip": 0.5,
    "aug_jitter": 0.8,
    "aug_jitter_strength": (0.4, 0.4, 0.2, 0.1),
    "aug_grayscale": 0.2,
    "aug_blur": 1.0,
    "aug_blur_sigma": (
        0.01,
        0.1,
    ),  # the reference's (0, 0.1): torchvision needs sigma > 0; both are a near-delta kernel
    "projector": "linear",
    "projector_init": "trunc_normal",
    "cls_weight": 0.05,  # README: CLS_LOSS=1 CLS_LOSS_WEIGHT=0.05, in every run
    "threshold": 0.85,  # README: CKA_THRESHOLD=0.85 (mini-ImageNet / ImageNet-100)
    "alpha": 1.0,  # README: EMA_ALPHA=1
    "max_epochs_per_block": 5,  # README: MAX_EPOCHS_BLOCK=5
    "subset_per_class": "all",
}
_LEAP_PAPER_NOTES = (
    "values from the README's commands: ImageNet-100 / mini-ImageNet lines 115-125 (threshold 0.85), "
    "ImageNet-1k lines 60-74 (threshold 0.8: recipe leap-paper-in1k); LR=6, BATCH_SIZE=256, EPOCHS=100, "
    "CLS_LOSS_WEIGHT=0.05, EMA_ALPHA=1, MAX_EPOCHS_BLOCK=5 in both",
    "the batch of 256 is global in the reference: on several devices set --batch_size to 256 / devices "
    "(the LR follows the global batch)",
    "the paper's fixed-target baseline is this recipe with --method fixed (the curriculum keys are dropped)",
    "give your data with --data; warm-up is min(10, epochs / 10) epochs in the reference: "
    "set --warmup_epochs with another --epochs",
    "the reference trains in fp16-mixed with TF32; precision auto picks bf16-mixed on GPUs that have it",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "demo",
            "the CPU demo (2 to 3 minutes on 2 cores): embedded DINOv2-S/14 -> vit-nano, LEAP, Fashion-MNIST, 112 px",
            _DEMO,
        ),
        Recipe(
            "demo-cnn",
            "the embedded DINOv2-S/14 teacher into a MobileNetV3-Small student with LEAP, a few minutes on 2 CPU cores",
            {**_DEMO, "student": "mobilenetv3_small_100"},
        ),
        Recipe(
            "leap-paper",
            "LEAP as the paper ran it on ImageNet-100 / mini-ImageNet: DINOv2 ViT-g/14 reg4 -> ViT-S/14, LARS at "
            "LR 6, CLS loss 0.05, threshold 0.85, 5 epochs per block, mixup, 100 epochs",
            _LEAP_PAPER,
            _LEAP_PAPER_NOTES,
        ),
        Recipe(
            "leap-paper-in1k",
            "LEAP as the paper ran it on ImageNet-1k: leap-paper with threshold 0.8",
            {**_LEAP_PAPER, "threshold": 0.8},  # README: CKA_THRESHOLD=0.8 (ImageNet-1k)
            _LEAP_PAPER_NOTES,
        ),
        Recipe(
            "spectralkd-deit",
            "SpectralKD: CaiT-S24 teacher -> DeiT-Tiny, pairs = first 2 + last 6 blocks, w_fft 0.2, 400 epochs",
            _spectralkd_deit("deit_tiny_patch16_224", 400),
            _SPECTRALKD_NOTES,
        ),
        Recipe(
            "spectralkd-deit-small",
            "SpectralKD: CaiT-S24 teacher -> DeiT-Small, pairs = first 2 + last 6 blocks, w_fft 0.2, 500 epochs",
            _spectralkd_deit("deit_small_patch16_224", 500),
            _SPECTRALKD_NOTES,
        ),
        Recipe(
            "spectralkd-swin",
            "SpectralKD: Swin-S teacher -> Swin-T, pairs = the 4 stage outputs, w_fft 0.05, 500 epochs",
            {
                **_SPECTRALKD_COMMON,
                "teacher": "swin_small_patch4_window7_224",
                "student": "swin_tiny_patch4_window7_224",
                "student_layers": [2, 4, 10, 12],  # Swin-T depths (2, 2, 6, 2): the last block of each stage
                "teacher_layers": [2, 4, 22, 24],  # Swin-S depths (2, 2, 18, 2)
                "spectral_weight": 0.05,
                "epochs": 500,
                "warmup_epochs": 20,
            },
            _SPECTRALKD_NOTES,
        ),
    )
}


def recipe_values(name: str) -> dict[str, Any]:
    """The keys recipe `name` sets (a copy), or a LeapkdError naming the closest recipes."""
    if name not in RECIPES:
        close = closest_names(name, RECIPES)
        raise LeapkdError(
            f"unknown recipe '{name}'",
            (f"did you mean {' or '.join(close)}? " if close else "") + "`leapkd recipes` lists them",
        )
    return dict(RECIPES[name].values)
