"""A per-pixel random forest on the same spatial split as a scratchsat CNN, scored the same way.

The forest sees each pixel's band values alone (no spatial context); it is trained on the
labelled pixels of the tiles' training patches and predicts the whole scene, which is then
scored with ``scratchsat evaluate`` on the split you name, exactly like the CNN's prediction.

Needs scikit-learn (a benchmark-only dependency): ``pip install -e '.[bench]'``.

    python benchmarks/random_forest.py SCENE.tif TILES --labels L [--label-field F]
        --cnn CNN_PRED.tif [--split test] [--out rf.tif] [--samples 100000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
from sklearn.ensemble import RandomForestClassifier

from scratchsat.evaluation import evaluate
from scratchsat.geo.classmap import class_dtype_and_nodata, classes_tag, colormap
from scratchsat.geo.raster import geotiff_profile, valid_mask
from scratchsat.tiles.format import read_tiles


def training_pixels(tiles: Path, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) band values and (n,) class ids of labelled pixels in the training patches."""
    splits = np.load(tiles / "splits.npy")
    train = np.flatnonzero(splits == 0)
    images = np.load(tiles / "images.npy", mmap_mode="r")[train]  # (N, C, P, P)
    masks = np.load(tiles / "masks.npy", mmap_mode="r")[train]  # (N, P, P)
    x = np.moveaxis(images, 1, -1)[masks != 255]  # (pixels, C)
    y = masks[masks != 255]
    pick = np.random.default_rng(seed).permutation(len(y))[:samples]
    return x[pick].astype(np.float32), y[pick]


def predict_scene(
    forest, scene: Path, out: Path, classes: list[dict], indexes: list[int] | None = None
) -> None:
    """Class codes for every valid pixel of the scene, as a class map like `predict` writes;
    ``indexes``: the 1-based bands the forest was fit on (the tiles' bands; default all)."""
    codes = np.array([c["code"] for c in classes])
    dtype, nodata = class_dtype_and_nodata(codes.tolist())
    with rasterio.open(scene) as src:
        data = src.read(indexes)
        valid = valid_mask(data, src.nodata)
        profile = geotiff_profile(
            width=src.width,
            height=src.height,
            count=1,
            dtype=dtype,
            crs=src.crs,
            transform=src.transform,
            nodata=nodata,
        )
    result = np.full(valid.shape, nodata, dtype=dtype)
    pixels = np.moveaxis(data, 0, -1)[valid].astype(np.float32)
    result[valid] = codes[forest.predict(pixels)]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(result, 1)
        dst.write_colormap(1, colormap(classes))
        dst.update_tags(CLASSES=classes_tag(classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("tiles", type=Path)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--label-field")
    parser.add_argument("--cnn", type=Path, required=True, help="the CNN's class map")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=Path("random_forest.tif"))
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tiles = read_tiles(args.tiles)
    x, y = training_pixels(args.tiles, args.samples, args.seed)
    start = time.perf_counter()
    forest = RandomForestClassifier(
        args.trees, n_jobs=-1, random_state=args.seed, min_samples_leaf=2
    ).fit(x, y)
    fit_s = time.perf_counter() - start
    predict_scene(forest, args.scene, args.out, list(tiles.classes))
    rows = {}
    for name, path in (("random forest", args.out), ("cnn", args.cnn)):
        rows[name] = evaluate(
            path, args.labels, label_field=args.label_field, tiles=args.tiles, split=args.split
        )
    print(
        f"{args.split} split of {args.tiles}: {rows['cnn']['pixels']:,} pixels; forest fit on "
        f"{len(y):,} training pixels in {fit_s:.1f} s"
    )
    print(f"{'':14} {'accuracy':>9} {'mean IoU':>9} {'macro F1':>9}   per-class IoU")
    for name, r in rows.items():
        scored = [c for c in r["classes"] if c["iou"] is not None]
        ious = ", ".join(f"{c['name']} {c['iou']:.2f}" for c in scored)
        print(
            f"{name:14} {r['overall_accuracy']:9.3f} {r['mean_iou']:9.3f} "
            f"{r['macro_f1']:9.3f}   {ious}"
        )
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
