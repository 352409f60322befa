"""``scratchsat info``: what a raster, a tiles folder or a model bundle holds, as a dict."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geo.classmap import read_classes_tag
from ..geo.raster import (
    band_names,
    data_bands,
    open_raster,
    read_shrunk_valid,
    reads_mask_band,
)
from ..geo.sources import Source, as_source
from ..runfolder import RunFolder
from ..tiles.format import is_tiles_folder, read_dataset_json, union_tiles
from ..training.report import Report

SAMPLE_SIDE = 1024  # raster statistics come from a read shrunk to at most this side


def describe(path: str | os.PathLike) -> dict:
    """Describe ``path``: a tiles folder (has dataset.json), a model bundle (a run folder or a
    model.json) or a raster; ``kind`` says which."""
    source = as_source(path)
    if not isinstance(source, Path):
        return describe_raster(source)
    path = source
    if is_tiles_folder(path):
        return describe_tiles(path)
    if path.suffix.lower() == ".onnx" and path.is_file():
        return describe_onnx(path)
    if (path.is_dir() and RunFolder(path).model_json.exists()) or path.suffix == ".json":
        return describe_bundle(path)
    if path.is_dir():
        raise InputError(
            f"{path} is a folder without dataset.json or model.json; pass a raster, a tiles "
            "folder from `scratchsat tile` or a run folder from `scratchsat train`"
        )
    return describe_raster(path)


def describe_raster(path: Source) -> dict:
    """Size, bands, dtype, nodata, CRS, resolution, bounds and per-band statistics of valid
    pixels (from a read shrunk to at most SAMPLE_SIDE pixels a side, so approximate)."""
    with open_raster(path) as src:
        indexes = data_bands(src)  # alpha bands are the others' mask, not data
        data, valid, scale = read_shrunk_valid(src, indexes, SAMPLE_SIDE)
        names = band_names(src)
        bands = []
        for index, band in zip(indexes, data, strict=True):
            values = band[valid].astype(np.float64)
            stats = (
                {
                    "min": values.min(),
                    "max": values.max(),
                    "mean": values.mean(),
                    "std": values.std(),
                }
                if values.size
                else {}
            )
            figures = {k: float(v) for k, v in stats.items()}
            bands.append({"index": index, "name": names[index - 1], **figures})
        return {
            "kind": "raster",
            "path": str(path),
            "driver": src.driver,
            "width": src.width,
            "height": src.height,
            "count": src.count,
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
            "crs": src.crs.to_string() if src.crs else None,
            "resolution": list(src.res),
            "bounds": list(src.bounds),
            "valid_fraction": float(valid.mean()),
            "alpha_bands": [i for i in range(1, src.count + 1) if i not in indexes],
            "mask_band": reads_mask_band(src, indexes),
            "statistics": f"valid pixels of a read shrunk by {scale:.3g}"
            if scale > 1
            else "valid pixels, all",
            "bands": bands,
            "classes": read_classes_tag(src.tags()),
        }


def report_page(described: dict) -> Path:
    """The ``report.html`` of a described run (``info RUN --open``)."""
    if described["kind"] != "model":
        raise InputError(
            f"--open opens a run's report.html; {described['path']} is a {described['kind']}, "
            "not a run folder"
        )
    page = RunFolder(Path(described["path"]).parent).page
    if not page.exists():
        raise InputError(
            f"{page} does not exist: the run was trained by an older scratchsat or did not "
            "finish; train it again to get one"
        )
    return page


def describe_folders(paths: list[str]) -> dict:
    """Several tiles folders as ``train`` would see them together: the union (classes by code,
    statistics merged, splits and patches summed), refused where they cannot train together."""
    if len(paths) == 1:
        return describe(paths[0])
    for path in paths:
        if not is_tiles_folder(path):
            raise InputError(
                f"{path} is not a tiles folder; `info` describes several paths only as tiles "
                "folders trained together (pass one raster or run at a time)"
            )
    union = union_tiles(paths)
    return describe_tiles(union.folder, union.info, " + ".join(paths))


def describe_tiles(folder: Path, info: dict | None = None, name: str | None = None) -> dict:
    info = info or read_dataset_json(folder)
    return {
        "kind": "tiles",
        "path": name or str(folder),
        "task": info["task"],
        "patch_size": info["patch_size"],
        "patches": info["patches"],
        "splits": info["splits"],
        "dtype": info["dtype"],
        "nodata": info["nodata"],
        "bands": info["bands"],
        "classes": [
            {k: c[k] for k in ("code", "name", "pixels", "patches")} for c in info["classes"]
        ],
        "skipped": info["skipped"],
        "sources": [s["path"] for s in info["sources"]],
    }


def describe_onnx(path: Path) -> dict:
    """An ONNX file from ``scratchsat export``, from its metadata (the model's band contract and
    classes) and its graph (the input's shape, the weights stored)."""
    from ..prediction.onnx import load_onnx

    model, meta = load_onnx(path)
    shape = [d if isinstance(d, int) else str(d) for d in model.session.get_inputs()[0].shape]
    try:
        import numpy as np
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        weights: int | None = sum(int(np.prod(t.dims)) for t in graph.initializer)
    except ImportError:  # onnxruntime without onnx: the graph's weights are not counted
        weights = None
    return {
        **model_fields(meta),
        "kind": "model",
        "format": "onnx",
        "path": str(path),
        "parameters": weights,
        "input": shape,
        "scores": {},
    }


def model_fields(meta) -> dict:
    """What a bundle and an ONNX file both tell of their model."""
    return {
        "model": meta.model,
        "task": meta.task,
        "patch_size": meta.patch_size,
        "bands": [{k: b[k] for k in ("name", "mean", "std")} for b in meta.bands],
        "dtype": meta.dtype,
        "nodata": meta.nodata,
        "classes": list(meta.classes),
        "epoch": meta.epoch,
        "validation": meta.metrics,
        "decision_offsets": (
            None
            if meta.decision_offsets is None
            else dict(zip((c["name"] for c in meta.classes), meta.decision_offsets, strict=True))
        ),
        "training": meta.training,
        "scratchsat_version": meta.scratchsat_version,
    }


def describe_bundle(path: Path) -> dict:
    from ..bundle import load_bundle

    bundle = load_bundle(path)
    meta = bundle.meta
    report = Report.read(RunFolder(bundle.path.parent).report)
    scores = {}
    for split, found in (("val", report and report.val), ("test", report and report.test)):
        if found:
            scores[split] = {k: found[k] for k in ("overall_accuracy", "mean_iou", "macro_f1")}
    return {
        **model_fields(meta),
        "kind": "model",
        "format": "bundle",
        "path": str(bundle.path),
        "parameters": sum(p.numel() for p in bundle.model.parameters()),
        "scores": scores,
    }
