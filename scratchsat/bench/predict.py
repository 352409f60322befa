"""predict Mpx/s end to end against the model-only forward rate over the same windows and the
rate of just reading the scene."""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path

import rasterio
import torch

from ..device import pick_device, synchronize
from ..errors import DriftWarning
from ..geo.raster import band_names, reads_mask_band
from ..geo.windows import blend_stride
from ..models import ModelConfig, build_model
from ..prediction.engine import Predictor, SceneReader, predict_scene
from ..prediction.options import PredictOptions
from ..prediction.writers import Outputs


def meta_for(scene: Path, patch_size: int, classes: int) -> dict:
    """A bundle description matching the scene's bands, for a randomly initialised model."""
    with rasterio.open(scene) as src:
        bands = [{"name": n, "mean": 1000.0, "std": 500.0} for n in band_names(src)]
        dtype = src.dtypes[0]
    return {
        "task": "segmentation",
        "patch_size": patch_size,
        "dtype": dtype,
        "bands": bands,
        "classes": [
            {"code": i + 1, "name": f"class {i + 1}", "colour": "#808080"} for i in range(classes)
        ],
    }


def read_rate(scene: Path, rows: int) -> float:
    """Mpx/s of reading the scene in bands of ``rows`` rows, as predict's reader does."""
    with rasterio.open(scene) as src:
        indexes = list(range(1, src.count + 1))
        reader = SceneReader(scene, indexes, src.nodata, reads_mask_band(src, indexes))
        height, width = src.height, src.width
    start = time.perf_counter()
    with reader.open():
        for row in range(0, height, rows):
            reader.read(row, rows, 0, width)
    return height * width / 1e6 / (time.perf_counter() - start)


def forward_rate(predictor: Predictor, windows: int, batch_size: int, size: int) -> float:
    """Mpx/s of the model alone over ``windows`` random windows already on the device."""
    c = len(predictor.meta.bands)
    x = torch.randn(batch_size, c, size, size, device=predictor.device)
    batches = math.ceil(windows / batch_size)
    predictor.probabilities(x)  # warm-up
    synchronize(predictor.device)
    start = time.perf_counter()
    for _ in range(batches):
        predictor.probabilities(x)
    synchronize(predictor.device)
    return batches * batch_size * size * size / 1e6 / (time.perf_counter() - start)


def bench_predict(
    scene: Path,
    *,
    model: str = "unet",
    patch_size: int = 256,
    overlap: float = 0.25,
    batch_size: int = 16,
    device: str = "auto",
) -> dict:
    """End-to-end predict Mpx/s vs model-only and read-only bounds, on ``scene``."""
    torch_device = pick_device(device)
    meta = meta_for(scene, patch_size, 8)
    config = ModelConfig(model, len(meta["bands"]), 8, "segmentation")
    predictor = Predictor(build_model(config), meta, torch_device)
    options = PredictOptions(
        patch_size=patch_size, overlap=overlap, batch_size=batch_size, device=device
    )
    with rasterio.open(scene) as src:
        width, height = src.width, src.height
    stride = blend_stride(patch_size, overlap)
    windows = (len(range(0, max(height - patch_size, 0) + 1, stride)) + 1) * (
        len(range(0, max(width - patch_size, 0) + 1, stride)) + 1
    )
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", DriftWarning)  # the random model has made-up statistics
        start = time.perf_counter()
        predict_scene(predictor, scene, Outputs(Path(folder) / "pred.tif"), options)
        synchronize(torch_device)
        end_to_end = width * height / 1e6 / (time.perf_counter() - start)
    scene_rate = width * height / windows / patch_size**2  # scene px per window px
    return {
        "model": model,
        "scene": [width, height],
        "patch_size": patch_size,
        "overlap": overlap,
        "device": str(torch_device),
        "end_to_end_mpx_s": end_to_end,
        "model_only_mpx_s": forward_rate(predictor, windows, batch_size, patch_size) * scene_rate,
        "read_mpx_s": read_rate(scene, patch_size),
    }
