"""The options of `leapkd eval` and `leapkd.evaluate`: one model, read by the command line and the API alike."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from leapkd.config import StrictKeys
from leapkd.data.transforms import EvalTransform
from leapkd.models import Pooling

DEFAULT_PROTOCOLS = ("knn", "linear", "retrieval")
PerClass = int | Literal["all"]


class EvalArgs(StrictKeys):
    """What to evaluate on, with which protocols, and where."""

    student: str | None = Field(
        None, description="the student of a run of several to evaluate (its name, as in `<run>/students/<name>`)"
    )

    data: str | None = Field(
        None, description="built-in dataset, image folder, or roxford5k / rparis6k (default: the run's data)"
    )
    data_root: str | Path | None = Field(
        None, description="directory holding roxford5k/ or rparis6k/ (jpg/ + gnd_*.pkl), or a built-in set's files"
    )
    protocols: list[str] = Field(
        list(DEFAULT_PROTOCOLS),
        description="registered protocols: knn, linear, linear-reference (the LEAP reference's probe), retrieval, "
        "cka-map, finetune (the whole model), and any registered with leapkd.register_protocol (an unknown name "
        "lists those registered)",
    )
    pooling: Pooling = Field("cls", description="the feature of an image: its CLS token, or the mean patch token")
    transform: EvalTransform | None = Field(
        None,
        description="resize to the image size, or center-crop: resize to size x 256 / 224 (bicubic) and keep the "
        "centre (the references' eval transform); default: resize (linear-reference and revisited Oxford/Paris: "
        "center-crop)",
    )
    image_size: int | None = Field(None, ge=1, description="input resolution (default: the run's, else 112)")
    patch_size: int | None = Field(None, ge=1, description="for a model name: build it with this patch size")
    block: list[int] | None = Field(
        None, description="the level(s) to evaluate, several from one pass (default: the last)"
    )
    train_per_class: PerClass | None = Field(
        None, description="train images per class, or all (default: 100; linear-reference: all)"
    )
    val_per_class: PerClass | None = Field(
        None, description="validation images per class, or all (default: 50; linear-reference: all)"
    )
    k: int = Field(20, ge=1, description="kNN neighbours")
    cka_images: int = Field(64, ge=2, description="images of the CKA map")
    weights: str | Path | None = Field(
        None, description="weight file for a model-name target (safetensors, .pth or .bin)"
    )
    reference: str | None = Field(None, description="the model the CKA map compares with (default: the run's teacher)")
    reference_weights: str | Path | None = Field(None, description="weight file for reference")
    out_dir: str | Path | None = Field(
        None, description="output directory (default: the run directory, else evals/<name>)"
    )
    seed: int = Field(0, description="seed of the subsets and the probe")
    progress: bool = Field(True, description="progress bars (--no-progress: none)")
    accelerator: str = Field("auto", description="cpu, gpu or auto (a GPU when there is one)")
    devices: int = Field(1, ge=1, description="CUDA GPUs to split every batch over")
    precision: Literal["32", "auto", "bf16-mixed", "16-mixed"] = Field(
        "32", description="32 (numbers comparable across machines), or an autocast precision"
    )
    num_workers: int | Literal["auto"] = Field("auto", description="data loader processes (auto: the cores minus one)")

    seeds: list[int] | None = Field(
        None, description="finetune: one fine-tune per seed, reported as the mean and spread (default: `seed`)"
    )
    finetune_epochs: int = Field(3, ge=1, description="finetune: epochs over the train split")
    finetune_lr: float = Field(
        1e-3, gt=0, description="finetune: AdamW's peak LR (the new head's; see finetune_layer_decay)"
    )
    finetune_batch_size: int = Field(64, ge=1, description="finetune: images per step")
    finetune_weight_decay: float = Field(
        0.05, ge=0, description="finetune: AdamW weight decay (none on norms, biases and what the model excludes)"
    )
    finetune_layer_decay: float = Field(
        0.75,
        gt=0,
        le=1,
        description="finetune: layer-wise LR decay of token models (ViT, Swin; timm/BEiT): each block below the top "
        "gets this factor once more; 1: none; CNNs: none",
    )
    finetune_warmup: float = Field(
        0.1, ge=0, lt=1, description="finetune: the fraction of the steps the LR warms up linearly, then a cosine to 0"
    )
    finetune_label_smoothing: float = Field(0.1, ge=0, lt=1, description="finetune: label smoothing of the loss")
    finetune_baselines: list[str] = Field(
        ["scratch"],
        description="finetune: what else is fine-tuned with the identical recipe and data order: scratch (the same "
        "architecture at random init) and/or weight files of that architecture (e.g. an ImageNet checkpoint); [] none",
    )
