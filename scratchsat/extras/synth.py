"""Synthetic multispectral scenes with known land cover, for tests and ``scratchsat demo``.

A scene is a reflectance-like uint16 GeoTIFF (any band count) in a real projected CRS with a
nodata border, plus a label raster. Four classes differ the way they do in Sentinel-2 data:
water is dark and falls off in the near-infrared, vegetation has the red edge, bare soil rises
slowly into the short-wave infrared. Built-up areas have nearly the spectrum of bare soil but a
fine roof-and-shadow texture, so telling them apart takes spatial context, not one pixel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

# Sentinel-2 band names and centre wavelengths (nm), in the order the sensor's products use.
S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
S2_WAVELENGTHS = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190])

# (code, name, reflectance at S2_WAVELENGTHS); built-up's mean is close to bare soil's.
CLASSES = (
    (
        1,
        "water",
        [0.08, 0.07, 0.06, 0.04, 0.03, 0.02, 0.02, 0.015, 0.015, 0.01, 0.003, 0.005, 0.003],
    ),
    (
        2,
        "vegetation",
        [0.04, 0.04, 0.07, 0.04, 0.10, 0.25, 0.32, 0.36, 0.37, 0.30, 0.01, 0.20, 0.10],
    ),
    (
        3,
        "bare soil",
        [0.10, 0.12, 0.15, 0.19, 0.21, 0.23, 0.25, 0.27, 0.28, 0.27, 0.02, 0.33, 0.28],
    ),
    (
        4,
        "built-up",
        [0.11, 0.13, 0.155, 0.185, 0.20, 0.22, 0.24, 0.26, 0.27, 0.26, 0.02, 0.31, 0.27],
    ),
)
NODATA = 0
LABEL_NODATA = 0


@dataclass(frozen=True)
class SynthScene:
    """Paths of a written synthetic scene and what it holds."""

    path: Path
    labels_path: Path
    band_names: tuple[str, ...]
    classes: tuple[tuple[int, str], ...]


def smooth_field(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Smooth random field (H, W): bilinear upsampling of a coarse normal grid, ~``scale`` px."""
    gh, gw = int(height / scale) + 2, int(width / scale) + 2
    coarse = rng.standard_normal((gh, gw))
    ys, xs = np.linspace(0, gh - 1.001, height), np.linspace(0, gw - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    ty, tx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - tx) + coarse[y0][:, x0 + 1] * tx
    bottom = coarse[y0 + 1][:, x0] * (1 - tx) + coarse[y0 + 1][:, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def band_wavelengths(count: int) -> np.ndarray:
    """Wavelengths for ``count`` bands: Sentinel-2's for 13, else spread over its range."""
    if count == len(S2_BANDS):
        return S2_WAVELENGTHS.astype(float)
    return np.linspace(S2_WAVELENGTHS.min(), S2_WAVELENGTHS.max(), count)


def synth_arrays(
    width: int, height: int, count: int = 13, seed: int = 0, region_scale: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one scene in memory → (image (C, H, W) uint16, labels (H, W) uint8, valid (H, W)).

    Invalid pixels (a ragged swath edge on the left) hold NODATA in every band; labels there
    still hold the true class, as a label map from another source would.
    """
    rng = np.random.default_rng(seed)
    scale = region_scale or max(12.0, min(width, height) / 5)
    fields = np.stack([smooth_field(rng, height, width, scale) for _ in CLASSES])
    class_index = fields.argmax(axis=0)  # (H, W) in 0..3
    labels = np.array([code for code, _, _ in CLASSES], dtype=np.uint8)[class_index]

    wavelengths = band_wavelengths(count)
    spectra = np.stack([np.interp(wavelengths, S2_WAVELENGTHS, refl) for _, _, refl in CLASSES])
    reflectance = spectra[class_index].transpose(2, 0, 1)  # (C, H, W)

    # Built-up: roofs and shadows on a ~3 px lattice, averaging close to the class spectrum.
    yy, xx = np.mgrid[0:height, 0:width]
    roofs = np.where(((yy // 3) + (xx // 3)) % 2 == 0, 1.45, 0.55)
    texture = np.where(class_index == 3, roofs, 1.0)
    # Vegetation: a canopy texture of moderate grain.
    texture = np.where(class_index == 1, 1 + 0.12 * smooth_field(rng, height, width, 2.5), texture)
    illumination = 1 + 0.06 * smooth_field(rng, height, width, scale * 2)
    noise = rng.normal(0, 0.006, size=reflectance.shape)
    values = (reflectance * texture * illumination + noise) * 10_000
    image = np.clip(values, 1, 65_535).astype(np.uint16)

    edge = (0.04 + 0.03 * np.sin(np.linspace(0, 3 * np.pi, height))) * width
    valid = xx >= np.maximum(1, edge[:, None].astype(int))
    image[:, ~valid] = NODATA
    return image, labels, valid


def write_scene(
    path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    width: int = 256,
    height: int = 256,
    count: int = 13,
    seed: int = 0,
    crs: str = "EPSG:32633",
    resolution: float = 10.0,
    origin: tuple[float, float] = (399_960.0, 5_800_020.0),
    region_scale: float | None = None,
) -> SynthScene:
    """Write a synthetic scene GeoTIFF and its label raster (codes 1–4, nodata 0; class names
    in the raster's ``CLASSES`` tag, which ``tile`` reads)."""
    image, labels, _ = synth_arrays(width, height, count, seed, region_scale)
    for folder in {Path(path).parent, Path(labels_path).parent}:
        folder.mkdir(parents=True, exist_ok=True)
    names = S2_BANDS if count == len(S2_BANDS) else tuple(f"B{i}" for i in range(1, count + 1))
    transform = from_origin(origin[0], origin[1], resolution, resolution)
    common = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", count=count, dtype="uint16", nodata=NODATA, **common) as dst:
        dst.write(image)
        dst.descriptions = names
    with rasterio.open(
        labels_path, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **common
    ) as dst:
        dst.write(labels, 1)
        dst.update_tags(CLASSES=json.dumps([{"code": c, "name": n} for c, n, _ in CLASSES]))
    return SynthScene(
        Path(path),
        Path(labels_path),
        tuple(names),
        tuple((code, name) for code, name, _ in CLASSES),
    )
