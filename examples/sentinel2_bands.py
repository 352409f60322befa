"""Sentinel-2 band files → stack → tile with vector labels → train → predict (Python API only).

Run on real data:
    python examples/sentinel2_bands.py OUTDIR BAND_FOLDER LABELS.gpkg FIELD [EPOCHS]
e.g. with ../shared/data/brandenburg-s2 and its OpenStreetMap land use (field fclass).
Without BAND_FOLDER it makes Sentinel-2-like band files first (per-band GeoTIFFs at 10, 20 and
60 m) and polygon labels with class names as GeoJSON:
    python examples/sentinel2_bands.py OUTDIR [EPOCHS]
"""

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import shapes

import scratchsat

ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
RESOLUTION = {
    "B01": 60,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
}  # the rest are 10 m


def make_band_files(folder: Path) -> tuple[list[Path], Path, str]:
    """Per-band files at their Sentinel-2 resolutions, and polygons of the synthetic classes."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = scratchsat.write_scene(
        folder / "full.tif", folder / "classes.tif", width=480, height=480, seed=3
    )
    paths = []
    with rasterio.open(scene.path) as src:
        for index, name in enumerate(src.descriptions, start=1):
            factor = RESOLUTION.get(name, 10) // 10
            data = src.read(
                index,
                out_shape=(src.height // factor, src.width // factor),
                resampling=Resampling.average,
            )
            profile = {
                **src.profile,
                "count": 1,
                "width": data.shape[1],
                "height": data.shape[0],
                "transform": src.transform * src.transform.scale(factor),
            }
            path = folder / f"T33UUU_20170216T102101_{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
            paths.append(path)
    names = dict(scene.classes)
    with rasterio.open(scene.labels_path) as src:
        codes, crs, transform = src.read(1), src.crs, src.transform
    features = [
        {"type": "Feature", "properties": {"landuse": names[int(v)]}, "geometry": g}
        for g, v in shapes(codes, mask=codes != 0, transform=transform)
    ]
    labels = folder / "landuse.geojson"
    labels.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": features,
                "crs": {
                    "type": "name",
                    "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs.to_epsg()}"},
                },
            }
        )
    )
    return paths, labels, "landuse"


out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-sentinel2")
if len(sys.argv) > 4:
    folder = Path(sys.argv[2])
    bands = [p for p in folder.iterdir() if p.stem.split("_")[-1] in ORDER]
    labels, field = Path(sys.argv[3]), sys.argv[4]
    epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 30
else:
    bands, labels, field = make_band_files(out / "bands")
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
bands = sorted(bands, key=lambda p: ORDER.index(p.stem.split("_")[-1]))

scene = scratchsat.stack(bands, out / "scene.tif", overwrite=True)  # all bands at 10 m
tiles = scratchsat.tile(
    [scene],
    labels,
    out / "tiles",
    label_field=field,
    overwrite=True,
    options=scratchsat.TileOptions(patch_size=32, block_size=128),
)
report = scratchsat.train(tiles, out / "run", scratchsat.TrainConfig(epochs=epochs), overwrite=True)
[classes] = scratchsat.predict(out / "run", [scene], out / "classes.tif", overwrite=True)
info = json.loads((tiles / "dataset.json").read_text())
print(f"{info['patches']} patches, classes: {', '.join(c['name'] for c in info['classes'])}")
print(
    f"validation accuracy {report['val']['overall_accuracy']:.3f}, "
    f"mean IoU {report['val']['mean_iou']:.3f}"
)
with rasterio.open(classes) as src:
    print(
        f"class map {classes}: {src.width} × {src.height} px, "
        f"codes {np.unique(src.read(1)).tolist()}"
    )
