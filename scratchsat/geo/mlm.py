"""A STAC Item for a model (the Machine Learning Model extension, ``mlm:`` v1.4): what
catalogues and MLM tools read to find a model and run it — its input bands with their
normalisation and shape, its output classes, framework and weights. ``train`` writes one for
the bundle (``RUN/model.stac.json``: safetensors weights that take z-scored bands) and
``export --onnx X.onnx`` one for the ONNX file (``X.onnx.stac.json``: raw band values in,
probabilities out)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .._version import __version__
from .acquisition import iso
from .stac import EXTENSIONS, STAC_VERSION, asset, classification_classes, wgs84_footprint

if TYPE_CHECKING:  # types only: the bundle is a layer above
    from ..bundle import BundleMeta

MLM = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
TASKS = {"segmentation": ["semantic-segmentation"], "classification": ["scene-classification"]}
DIMS = ["batch", "channel", "height", "width"]


def onnx_item_path(onnx: Path) -> Path:
    """Where the item of an exported ONNX file goes: ``X.onnx`` → ``X.onnx.stac.json``."""
    return onnx.with_name(onnx.name + ".stac.json")


def model_item(
    meta: BundleMeta,
    artifact: Path,
    item_path: Path,
    *,
    framework: str,
    framework_version: str,
    parameters: int,
    onnx_scale: float | None = None,
    window: int | None = None,
    footprint: dict | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """The MLM item of ``artifact`` (the bundle's ``model.safetensors``, or an ONNX file: then
    ``onnx_scale`` is what its raw input is divided by, 1 or 255 for Deepness, and ``window``
    its fixed tile side where it has one). ``footprint``: the training scenes' in WGS 84."""
    now = now or dt.datetime.now(dt.timezone.utc)
    name = artifact.parent.name if onnx_scale is None else artifact.stem
    properties = {
        "datetime": iso(now),
        "created": iso(now),
        "title": f"{name}: a scratchsat {meta.task} model",
        "mlm:name": name,
        "mlm:architecture": (meta.model or {}).get("name", "unknown"),
        "mlm:tasks": TASKS[meta.task],
        "mlm:framework": framework,
        "mlm:framework_version": framework_version,
        "mlm:pretrained": False,  # trained from random weights
        "mlm:total_parameters": parameters,
        "mlm:batch_size_suggestion": 32,
        "mlm:input": [model_input(meta, window, onnx_scale)],
        "mlm:output": [model_output(meta, window, onnx_scale)],
        "mlm:hyperparameters": dict(meta.training or {}),
        "scratchsat:version": meta.scratchsat_version or __version__,
        "scratchsat:band_contract": {"dtype": meta.dtype, "nodata": meta.nodata},
    }
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [MLM, EXTENSIONS["classification"]],
        "id": name,
        "geometry": footprint,
        "properties": properties,
        "links": [{"rel": "self", "href": str(item_path.resolve()), "type": "application/json"}],
        "assets": model_assets(artifact, item_path, onnx_scale is not None),
    }
    if footprint is not None:
        points = [p for ring in footprint["coordinates"] for p in ring]
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    return item


def spatial(meta: BundleMeta, window: int | None, onnx_scale: float | None) -> list[int]:
    """Height and width: the training patch side for the bundle (a window predict uses),
    the fixed tile of a Deepness export, else any (-1)."""
    if onnx_scale is None or window:
        side = window or meta.patch_size
        return [side, side]
    return [-1, -1]


def model_input(meta: BundleMeta, window: int | None, onnx_scale: float | None) -> dict:
    """``mlm:input``: the bands by name, in order, their shape and scaling (per band)."""
    scaling: list[dict] | None
    if onnx_scale is None:  # the bundle: bands z-scored by the training statistics
        scaling = [{"type": "z-score", "mean": b["mean"], "stddev": b["std"]} for b in meta.bands]
        described = "bands standardised by the training statistics, nodata pixels 0"
    else:  # the ONNX file normalises inside
        scaling = None if onnx_scale == 1 else [{"type": "scale", "value": onnx_scale}]
        described = "raw band values (the model standardises them); nodata as the band mean"
    bands = [b["name"] for b in meta.bands]
    shape = [-1, len(bands), *spatial(meta, window, onnx_scale)]
    return {
        "name": "bands",
        "bands": bands,
        "input": {"shape": shape, "dim_order": DIMS, "data_type": "float32"},
        "value_scaling": scaling,
        "description": described,
    }


def model_output(meta: BundleMeta, window: int | None, onnx_scale: float | None) -> dict:
    """``mlm:output``: class scores per pixel (or patch), in the order of the classes."""
    classes = list(meta.classes)
    if onnx_scale is None:
        name, described = "logits", "class scores before softmax; argmax is the class"
    else:
        name, described = "probabilities", "class probabilities (softmax); argmax is the class"
    shape = [-1, len(classes)]
    if meta.task == "segmentation":
        shape += spatial(meta, window, onnx_scale)
    rows = classification_classes(classes)
    return {
        "name": name,
        "tasks": TASKS[meta.task],
        "result": {"shape": shape, "dim_order": DIMS[: len(shape)], "data_type": "float32"},
        "classification:classes": rows,
        "description": described + ", in the order of classification:classes",
    }


def model_assets(artifact: Path, item_path: Path, onnx: bool) -> dict:
    """The weights (``mlm:model``) and, for the bundle, its model.json."""
    kind = "onnx" if onnx else "safetensors"
    weights = asset(artifact, item_path, "model weights", ["mlm:model", "mlm:weights"], False)
    media = f"application/octet-stream; application={kind}"
    assets = {"model": {**weights, "type": media, "mlm:artifact_type": kind}}
    if not onnx:
        described = asset(
            artifact.with_name("model.json"), item_path, "model.json", ["metadata"], False
        )
        assets["model_json"] = {**described, "type": "application/json"}
    return assets


def training_footprint(sources: list[dict]) -> dict | None:
    """The WGS 84 bounding polygon of the training scenes (``dataset.json`` sources)."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine, array_bounds

    boxes: list[list[float]] = []
    for s in sources:
        if not s.get("crs"):
            return None
        west, south, east, north = array_bounds(s["height"], s["width"], Affine(*s["transform"]))
        ring = wgs84_footprint(CRS.from_string(s["crs"]), (west, south, east, north))
        boxes.extend(p for r in ring["coordinates"] for p in r)
    if not boxes:
        return None
    lons, lats = [p[0] for p in boxes], [p[1] for p in boxes]
    w, s_, e, n = min(lons), min(lats), max(lons), max(lats)
    return {"type": "Polygon", "coordinates": [[[w, s_], [e, s_], [e, n], [w, n], [w, s_]]]}


def write_model_item(item: dict, path: Path, overwrite: bool = True) -> None:
    from .outputs import write_text

    write_text(path, json.dumps(item, indent=2) + "\n", overwrite=overwrite)
