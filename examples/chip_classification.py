"""Classification on a folder-per-class chip dataset (EuroSAT's layout), made synthetically.

Run: python examples/chip_classification.py [OUTDIR] [EPOCHS]
Each chip is a 13-band 32 × 32 GeoTIFF cut from a synthetic scene, filed under the class that
covers most of it.
"""

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

import scratchsat

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-chips")
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
chips = out / "chips"

scene = scratchsat.write_scene(
    out / "scene.tif", out / "labels.tif", width=640, height=640, seed=4, region_scale=40
)
names = dict(scene.classes)
with rasterio.open(scene.path) as src, rasterio.open(scene.labels_path) as lab:
    for row in range(0, 640, 32):
        for col in range(0, 640, 32):
            window = Window(col, row, 32, 32)
            data = src.read(window=window)
            if (data == 0).any():  # skip chips touching nodata
                continue
            codes = lab.read(1, window=window)
            code = int(np.bincount(codes.ravel(), minlength=5)[1:].argmax()) + 1
            folder = chips / names[code].replace(" ", "-")
            folder.mkdir(parents=True, exist_ok=True)
            profile = {
                **src.profile,
                "width": 32,
                "height": 32,
                "transform": src.window_transform(window),
            }
            with rasterio.open(folder / f"chip_{row}_{col}.tif", "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = src.descriptions

# A folder of class folders needs no --labels: the folder names are the classes.
tiles = scratchsat.tile(
    [chips],
    None,
    out / "tiles",
    overwrite=True,
    options=scratchsat.TileOptions(task="classification"),
)
report = scratchsat.train(
    tiles,
    out / "run",
    overwrite=True,
    config=scratchsat.TrainConfig(model="resnet18", epochs=epochs),
)
print(
    f"{sum(1 for _ in chips.rglob('*.tif'))} chips in "
    f"{', '.join(sorted(p.name for p in chips.iterdir()))}"
)
print(
    f"test accuracy {report['test']['overall_accuracy']:.3f}, "
    f"macro F1 {report['test']['macro_f1']:.3f}"
)
