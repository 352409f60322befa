"""Window artefacts: does a run's class map depend on where the window grid falls?

    python benchmarks/artefacts.py RUN SCENE.tif OUT [--variants 32:0.5,32:0.75]
        [--labels L.gpkg --label-field F --tiles TILES]   # also score each variant on test

For each prediction variant (window px : overlap), two measures: **agreement**, the share of
shared pixels on which the map of the scene and the map of the scene cut by 7 rows and 13
columns agree (windows and the network's poolings fall elsewhere), and **grid excess**, the
class boundaries between neighbouring columns (and rows) at the commonest phase modulo 16 px
over their mean (1.00: no grid). With ``--labels`` and ``--tiles``, the test split's mean IoU
of each variant's map, by ``scratchsat evaluate``. Figures in docs/quality.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

import scratchsat
from scratchsat.prediction.options import PredictOptions

DY, DX = 7, 13  # the cut: odd, and unrelated to any window step


def cut_scene(scene: Path, out: Path) -> Path:
    with rasterio.open(scene) as src:
        window = Window(DX, DY, src.width - DX, src.height - DY)
        profile = src.profile | {
            "width": src.width - DX,
            "height": src.height - DY,
            "transform": src.window_transform(window),
        }
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    return out


def grid_excess(classes: np.ndarray, period: int = 16) -> tuple[float, float]:
    """(columns, rows): boundaries at the commonest phase modulo ``period`` over the mean."""
    out = []
    for axis in (1, 0):
        changes = (np.diff(classes, axis=axis) != 0).sum(axis=1 - axis)
        phases = np.bincount(np.arange(len(changes)) % period, changes, period)
        out.append(float(phases.max() / max(phases.mean(), 1e-9)))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("scene", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variants", default="32:0.5,32:0.75")
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--label-field")
    parser.add_argument("--tiles", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cut = cut_scene(args.scene, args.out / "cut.tif")
    rows = []
    for variant in args.variants.split(","):
        size, overlap = variant.split(":")
        options = PredictOptions(patch_size=int(size), overlap=float(overlap))
        begin = time.perf_counter()
        (whole,) = scratchsat.predict(
            args.run,
            [args.scene],
            args.out / f"whole-{variant}.tif",
            options=options,
            overwrite=True,
        )
        seconds = time.perf_counter() - begin
        (part,) = scratchsat.predict(
            args.run, [cut], args.out / f"cut-{variant}.tif", options=options, overwrite=True
        )
        with rasterio.open(whole) as a, rasterio.open(part) as b:
            full, other = a.read(1), b.read(1)
            nodata = a.nodata
        shared = full[DY:, DX:]
        both = (shared != nodata) & (other != nodata)
        row = {
            "variant": variant,
            "agreement": float((shared[both] == other[both]).mean()),
            "grid_excess": grid_excess(full),
            "predict_s": seconds,
        }
        if args.labels and args.tiles:
            scores = scratchsat.evaluate(
                whole, args.labels, label_field=args.label_field, tiles=args.tiles, split="test"
            )
            row["test_mean_iou"] = scores["mean_iou"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "artefacts.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
