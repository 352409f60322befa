"""A model for other runtimes: ``scratchsat export RUN --onnx model.onnx``, and prediction from
such a file with onnxruntime (``scratchsat predict model.onnx …``).

The exported graph takes **raw band values** (N, C, H, W) float32 in the model's band order —
the training data's units — and returns class probabilities (N, K, H, W) (segmentation) or
(N, K) (classification): the per-band normalisation of the training tiles is folded in, and a
pixel that is NaN, ±Inf or the training data's nodata in any band is set to 0 after
normalisation in every band, exactly as scratchsat does. Batch, height and width are dynamic.
The file's metadata holds the whole band contract (``scratchsat``: bands with their names,
means and deviations, classes with codes and colours, task, patch size, dtype), so bands can be
checked outside Python, and the keys the QGIS Deepness plugin reads (``model_type``,
``class_names``, ``tiles_size``, ``tiles_overlap``, ``seg_thresh``, ``resolution`` where the
training grid is known).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..bundle import MAX_PATCH, BundleMeta, load_bundle, read_meta
from ..device import check_memory, forward_bytes
from ..errors import BundleError, DatasetError, InputError, ScratchsatError
from ..geo.outputs import atomic_output, check_output
from ..tiles.format import read_dataset_json
from .options import DEFAULTS

OPSET = 18
# QGIS Deepness installs onnxruntime<=1.17.0, which reads IR version 9 at most ("Unsupported
# model IR version: 10"); opset 18 needs only IR 8, and nothing of IR 10 is in our graphs
MAX_IR_VERSION = 9
METADATA_KEY = "scratchsat"


class RawInputModel(nn.Module):
    """The network with its normalisation folded in: raw band values in, probabilities out."""

    def __init__(self, model: nn.Module, meta: BundleMeta, scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        bands = len(meta.bands)
        mean = torch.tensor([b["mean"] for b in meta.bands], dtype=torch.float32)
        std = torch.tensor([max(b["std"], 1e-6) for b in meta.bands], dtype=torch.float32)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean.view(1, bands, 1, 1))
        self.register_buffer("std", std.view(1, bands, 1, 1))
        nodata = meta.nodata
        self.nodata = None if nodata is None or np.isnan(nodata) else float(nodata)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        invalid = torch.isnan(x) | torch.isinf(x)
        if self.nodata is not None:
            invalid = invalid | (x == self.nodata)
        invalid = invalid.any(dim=1, keepdim=True)
        z = torch.where(invalid, torch.zeros_like(x), (x - self.mean) / self.std)
        return torch.softmax(self.model(z), dim=1)


def export_onnx(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    deepness: bool = False,
    tile_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the bundle of ``run`` to ``out`` (see the module's docstring); checked against
    torch with onnxruntime, where it is installed, before it is put in place."""
    try:
        import onnx
    except ImportError:
        raise InputError(
            "exporting to ONNX needs the onnx and onnxscript packages: "
            "pip install 'scratchsat[onnx]'"
        ) from None
    out = Path(out)
    check_output(out, overwrite)
    from ..geo.mlm import onnx_item_path

    check_output(onnx_item_path(out), overwrite)
    bundle = load_bundle(run, "cpu")
    meta = bundle.meta
    size = tile_size or meta.patch_size
    if not 8 <= size <= MAX_PATCH:
        raise InputError(
            f"--tile-size must be from 8 to {MAX_PATCH} px, not {size}; Deepness tiles are "
            "usually a few hundred pixels (the training patch size is the default)"
        )
    wrapped = RawInputModel(bundle.model, meta, scale=255.0 if deepness else 1.0).eval()
    cpu = torch.device("cpu")
    check_memory(  # the export and its check run two tiles of this side through the model
        forward_bytes(bundle.model, len(meta.bands), size, 2, cpu),
        cpu,
        f"exporting {bundle.path.parent} with {size} px tiles",
        "choose a smaller --tile-size",
    )
    example = torch.randn(1, len(meta.bands), size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = {0: batch}
    if not deepness:  # Deepness reads the tile size from the input's shape
        dims |= {
            2: torch.export.Dim("height", min=8, max=8192),
            3: torch.export.Dim("width", min=8, max=8192),
        }
    with atomic_output(out, overwrite) as tmp:
        try:
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=["bands"],
                output_names=["probabilities"],
                dynamic_shapes={"x": dims},
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter's errors name the operation deep inside
            ops = sorted(set(re.findall(r"aten[.:]{1,2}\w+", str(exc) + repr(exc.__cause__))))
            what = ", ".join(ops) if ops else type(exc).__name__
            raise InputError(
                f"{bundle.path.parent}: the model uses an operation ONNX opset {OPSET} cannot "
                f"express ({what}); use a model built from standard layers, or predict with "
                "scratchsat itself"
            ) from None
        assert program is not None
        model = program.model_proto
        model.ir_version = min(model.ir_version, MAX_IR_VERSION)
        for key, value in metadata(meta, size, deepness, wrapped.scale).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
        check_against_torch(tmp, wrapped, example)
    write_onnx_stac(meta, out, bundle, wrapped.scale, size if deepness else None, overwrite)
    return out


def write_onnx_stac(meta, out: Path, bundle, scale: float, window, overwrite: bool) -> None:
    """``X.onnx.stac.json``: the exported file as a STAC Item of the ML Model extension."""
    from ..geo.mlm import model_item, onnx_item_path, training_footprint, write_model_item
    from ..tiles.format import read_dataset_json

    try:  # the training scenes' footprint, where the tiles folder is still there
        sources = read_dataset_json((meta.data or {}).get("tiles") or "").get("sources", [])
    except ScratchsatError:
        sources = []
    item = model_item(
        meta,
        out,
        onnx_item_path(out),
        framework="ONNX",
        framework_version=f"opset {OPSET}, IR {MAX_IR_VERSION}",
        parameters=sum(p.numel() for p in bundle.model.parameters()),
        onnx_scale=scale,
        window=window,
        footprint=training_footprint(sources),
    )
    write_model_item(item, onnx_item_path(out), overwrite=overwrite)


def metadata(meta: BundleMeta, size: int, deepness: bool, scale: float) -> dict[str, str]:
    record = meta.to_dict()
    record.pop("training", None)
    record["onnx_input"] = (
        "raw band values / 255 (Deepness divides 8-bit values by 255)"
        if deepness
        else "raw band values"
    )
    record["onnx_input_scale"] = scale
    found = {
        METADATA_KEY: json.dumps(record),
        "class_names": json.dumps({str(i): str(c["name"]) for i, c in enumerate(meta.classes)}),
        "tiles_size": json.dumps(size),
        "tile_size": json.dumps(size),  # the name Deepness's code reads
        "tiles_overlap": json.dumps(round(DEFAULTS.overlap * 100)),
        "seg_thresh": json.dumps(0.0),  # every pixel gets its most probable class
    }
    if meta.task == "segmentation":
        found["model_type"] = json.dumps("Segmentor")
    resolution = training_resolution(meta)
    if resolution is not None:
        found["resolution"] = json.dumps(resolution)
    return found


def training_resolution(meta: BundleMeta) -> float | None:
    """Centimetres per pixel of the training scene, where its tiles folder says so in metres."""
    tiles = (meta.data or {}).get("tiles")
    if not tiles:
        return None
    try:
        info = read_dataset_json(tiles)
        source = info["sources"][0]
        from rasterio.crs import CRS

        crs = CRS.from_user_input(source["crs"])
        if not crs.is_projected or crs.linear_units_factor[1] != 1.0:
            return None
        return float(abs(source["transform"][0]) * 100)
    except (OSError, ValueError, KeyError, IndexError, TypeError, DatasetError):
        return None


def check_against_torch(path: Path, wrapped: nn.Module, example: torch.Tensor) -> None:
    """Run the exported file with onnxruntime (where installed) and compare with torch."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example.repeat(2, 1, 1, 1)
    with torch.no_grad():
        expected = wrapped(x).numpy()
    got = session.run(None, {"bands": x.numpy()})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        raise OSError(f"{path}: onnxruntime's output differs from torch's; not written")


class OnnxModel(nn.Module):
    """An exported file as a module of :class:`~scratchsat.prediction.engine.Predictor`: it
    takes the normalised windows the predictor makes, turns them back into raw values (an
    invalid pixel, 0 after normalisation, becomes the band mean, which the graph normalises to
    0 again), runs onnxruntime and returns log-probabilities (the predictor's softmax gives the
    probabilities back)."""

    def __init__(self, session, meta: BundleMeta, scale: float) -> None:
        super().__init__()
        self.session, self.scale = session, scale
        self.mean = torch.tensor([b["mean"] for b in meta.bands], dtype=torch.float32)
        self.std = torch.tensor([max(b["std"], 1e-6) for b in meta.bands], dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device
        x = x.float().cpu()
        raw = x * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)
        raw = raw / self.scale
        probs = self.session.run(None, {"bands": raw.numpy()})[0]
        return torch.log(torch.from_numpy(probs).clamp_min(1e-30)).to(device)


def load_onnx(path: str | os.PathLike) -> tuple[OnnxModel, BundleMeta]:
    """A model exported by ``scratchsat export`` and its band contract (from its metadata)."""
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError(
            f"{path} is an ONNX model; predicting with one needs onnxruntime: "
            "pip install 'scratchsat[onnx]'"
        ) from None
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise BundleError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise BundleError(
            f"{path} has no scratchsat metadata, so its bands and classes are unknown; "
            "predict with ONNX files written by `scratchsat export`"
        )
    fix = "export the model again with `scratchsat export`"
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise BundleError(
            f"{path}: its scratchsat metadata is not valid JSON ({exc}); {fix}"
        ) from None
    meta = read_meta(record, path, fix)
    scale = record.get("onnx_input_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise BundleError(f"{path}: onnx_input_scale {scale!r} is not a positive number; {fix}")
    check_declared_input(path, session, meta, fix)
    return OnnxModel(session, meta, float(scale)), meta


def check_declared_input(path: Path, session, meta: BundleMeta, fix: str) -> None:
    """The graph's one input is (N, bands, H, W) with the metadata's band count, and any fixed
    size is a sane one: refused before a window of it is allocated."""
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 4:
        raise BundleError(
            f"{path}: expected one input of shape (batch, bands, height, width), found "
            f"{[list(i.shape) for i in inputs]}; {fix}"
        )
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if fixed[1] is not None and fixed[1] != len(meta.bands):
        raise BundleError(
            f"{path}: its input takes {fixed[1]} bands but its metadata lists "
            f"{len(meta.bands)}; {fix}"
        )
    for side in fixed[2:]:
        if side is not None and side > MAX_PATCH:
            raise BundleError(
                f"{path}: its input is fixed at {side} px a side, more than {MAX_PATCH} px; "
                "export it again with a smaller --tile-size"
            )
