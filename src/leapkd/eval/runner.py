"""`evaluate()`: run registered evaluation protocols on a run, a student file or any backbone.

The model evaluated is whatever `leapkd.sources.load_source` accepts, so a teacher and a random-init
model are evaluated the same way. Each protocol (`leapkd.eval.protocol`) runs on one
shared `EvalContext`: features are extracted once per (model, data, transform) and cached,
and every protocol of one call shares them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leapkd.config import validate
from leapkd.data.transforms import EvalTransform
from leapkd.disk import write_text_atomic
from leapkd.errors import LeapkdError
from leapkd.eval.options import DEFAULT_PROTOCOLS, EvalArgs
from leapkd.eval.protocol import PROTOCOLS, EvalContext, EvalOptions, Protocol, evaluated
from leapkd.eval.retrieval import REVISITED
from leapkd.hardware import autocast_dtype, evaluation_device, resolve_precision, resolve_workers
from leapkd.models import Backbone
from leapkd.rundir import RunDirectory
from leapkd.shared_run import student_source
from leapkd.sources import load_source


def evaluate(source: str, **options: Any) -> dict[str, Any]:
    """Evaluate `source` (a run directory, a student file or a model name) with the chosen
    registered protocols; returns (and writes) the results.

    `options` are the keys of `EvalArgs` (`leapkd eval --help` lists them), checked like
    every command's options. Results go to `eval.json` in the run directory (and are merged
    into its summary.json under "eval"), or into `out_dir` for other sources. `weights`
    loads a weight file into a model-name source; `reference_weights` into the CKA map's
    reference (default: the run's teacher with its weights). Revisited Oxford/Paris
    (`roxford5k`, `rparis6k`) has no class labels: the default protocols then run retrieval
    alone, and asking for a protocol that needs labels is an error. Several `block`s are
    evaluated from one pass over the data; each is recorded as its own entry ("<data> @
    block <b>") and returned under "blocks". The model runs on the accelerator in
    `precision`, fed by `num_workers` loader processes; `devices` > 1 splits every batch
    over that many CUDA GPUs. Unset, `train_per_class`, `val_per_class` and `transform` are
    100, 50 and "resize", or what a chosen protocol prefers (`linear-reference`: all images,
    "center-crop"); revisited Oxford/Paris is centre-cropped by default, as the reference's
    retrieval evaluation does (which extracts under fp16 autocast on a GPU: `precision="16-mixed"`).
    """
    args = validate(options, EvalArgs, command="eval")
    protocols = tuple(args.protocols)
    precision, num_workers, devices, pooling = args.precision, args.num_workers, args.devices, args.pooling
    seed, weights = args.seed, args.weights
    chosen = [PROTOCOLS.get(name)() for name in dict.fromkeys(protocols)]
    source = str(student_source(source, args.student, "evaluation"))
    model, run, defaults = load_source(source, args.image_size, seed, args.patch_size, weights)
    blocks = _blocks(args.block, model)
    device = evaluation_device(args.accelerator, devices)
    model.to(device)
    data = args.data or defaults.get("data", "fashion-mnist")
    labelled = data not in REVISITED
    per_class_asked = (args.train_per_class, args.val_per_class)
    chosen, transform, per_class = _settle(chosen, protocols, data, args.transform, per_class_asked)
    out = Path(args.out_dir) if args.out_dir else (run.path if run else Path("evals") / defaults["name"])
    settled = {"block", "transform", "train_per_class", "val_per_class", "num_workers"}
    resolved = EvalOptions(
        **args.model_dump(exclude=settled),
        transform=transform,
        blocks=tuple(blocks),
        train_per_class=per_class[0],
        val_per_class=per_class[1],
        autocast=autocast_dtype(resolve_precision(precision, device)[0]),
        num_workers=resolve_workers(num_workers),
    )
    name = str(source) if labelled else defaults["name"]
    header = _header(name, model, data, transform, labelled, weights=weights, per_class=per_class, seed=seed)
    by_block = {}
    size = defaults["image_size"]
    for b in blocks:
        ctx = EvalContext(model, data, size, seed, resolved.model_copy(update={"level": b}), out, defaults, labelled)
        by_block[b] = {**header, "image_size": ctx.image_size, "pooling": pooling, "block": b}
        by_block[b] |= {protocol.key: protocol.run(ctx) for protocol in chosen}
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed evaluation leaves nothing behind
    return _record_all(out, run, data, by_block)


def _record_all(out: Path, run: RunDirectory | None, data: str, by_block: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Record each block's results (one entry per block when there are several); the results returned."""
    blocks = list(by_block)
    if len(blocks) == 1:
        _record(out / "eval.json", run, data, by_block[blocks[0]])
        return {**by_block[blocks[0]], "out_dir": str(out)}
    for b, results in by_block.items():
        _record(out / "eval.json", run, f"{data} @ block {b}", results)
    return {"blocks": by_block, "data": data, "out_dir": str(out)}


def _settle(
    chosen: list[Protocol],
    asked: tuple[str, ...],
    data: str,
    transform: EvalTransform | None,
    per_class: tuple[Any, Any],
) -> tuple[list[Protocol], Any, tuple[Any, Any]]:
    """The protocols that can run on `data`, and the transform and per-class counts they will use."""
    if data in REVISITED:
        chosen = _without_labels(chosen, data, tuple(asked) == DEFAULT_PROTOCOLS)
        transform = transform or "center-crop"  # the LEAP reference's (eval_instance_retrieval.py:703)
    given = _chosen_options(chosen, train_per_class=per_class[0], val_per_class=per_class[1], transform=transform)
    return chosen, given["transform"], (given["train_per_class"], given["val_per_class"])


def _header(
    name: str,
    model: Backbone,
    data: str,
    transform: str,
    labelled: bool,
    weights: str | Path | None,
    per_class: tuple[Any, Any],
    seed: int,
) -> dict[str, Any]:
    """What every entry of one evaluation records about its source (key `target`, the file's older name) and data."""
    header: dict[str, Any] = {"target": name, "model": model.describe(), "data": data, "transform": transform}
    if labelled:
        header |= {
            "weights": str(weights) if weights else None,
            "train_per_class": per_class[0],
            "val_per_class": per_class[1],
            "seed": seed,
        }
    return header


_OPTION_DEFAULTS: dict[str, Any] = {"train_per_class": 100, "val_per_class": 50, "transform": "resize"}


def _chosen_options(protocols: Sequence[Protocol], **given: Any) -> dict[str, Any]:
    """The user's value of each option, else the first preference of a chosen protocol, else the
    default; per-class counts as an int, or None for all."""
    chosen = {}
    for key, value in given.items():
        if value is None:
            value = next((p.preferred[key] for p in protocols if key in p.preferred), _OPTION_DEFAULTS[key])
        chosen[key] = None if value == "all" else value
    return chosen


def _blocks(block: list[int] | None, model: Backbone) -> list[int]:
    """The levels to evaluate (default: the last), each checked."""
    blocks = [model.num_levels] if block is None else block
    for b in blocks:
        if not 1 <= b <= model.num_levels:
            raise LeapkdError(
                f"block {b} is outside the {model.num_levels} levels of {model.name}",
                f"choose a level between 1 and {model.num_levels} (default: the last)",
            )
    return blocks


def _without_labels(chosen: list[Protocol], data: str, default: bool) -> list[Protocol]:
    """The protocols that run on `data`, which has no class labels (`default`: drop those that cannot)."""
    if default:
        chosen = [p for p in chosen if not p.labels]
    needy = [p.name for p in chosen if p.labels]
    if needy:
        usable = ",".join(cls.name for cls in PROTOCOLS if not cls.labels)
        raise LeapkdError(
            f"protocol {', '.join(needy)} needs class labels, and {data} has none",
            f"evaluate {data} with protocols {usable}",
        )
    return chosen


def _record(path: Path, run: RunDirectory | None, data: str, results: dict[str, Any]) -> None:
    """Merge results into `path` (one entry per dataset) and the protocols' results into the run's summary.json.

    Protocols evaluated earlier on the same data are kept unless evaluated again.
    """
    book = json.loads(path.read_text()) if path.is_file() else {}
    book[data] = {**book.get(data, {}), **results}
    write_text_atomic(path, json.dumps(book, indent=2) + "\n")
    if run is not None and run.summary.is_file():
        summary = run.read_summary()
        entry = summary.setdefault("eval", {}).setdefault(data, {})
        entry.update({protocol.key: result for protocol, result in evaluated(results)})
        run.write_summary(summary)
