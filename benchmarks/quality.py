"""The quality benchmark: scratchsat's default settings against a per-pixel random forest, on
the same held-out test pixels, over several seeds.

    python benchmarks/quality.py OUT --matrix ../shared/data [--cells a,b] [--seeds 0,1,2]
    python benchmarks/quality.py OUT --brandenburg ../shared/data/brandenburg-s2
    python benchmarks/quality.py OUT --scene S.tif --labels L.gpkg --label-field F
        [--background NAME] [--patch-size 32] [--split-seed 0] [--seeds 0,1,2] [--set K=V ...]

The matrix (``--matrix DATA``, the folder of real data the repository's README describes)
runs every cell of :data:`CELLS` — scenes of other band counts, resolutions and sizes, and
rare-object tasks against ``--background``, all made from that data under ``OUT/scenes`` —
and writes one table (``OUT/matrix.txt``) and one JSON file (``OUT/matrix.json``): per cell
the forest's and the CNN's mean and spread over the seeds, the CNN's gain, training time
and, for object tasks, the object class's IoU.

Brandenburg: the 13 Sentinel-2 bands are stacked at 10 m and tiled with the OpenStreetMap
land-use polygons (``fclass``) into 32 px patches, as in the README. Then, for each seed, the
CNN is trained with the default settings (``--set`` changes one, e.g. ``--set epochs=10``, to
try a variant), predicts the scene and is scored on the test split's pixels with ``scratchsat
evaluate``; the forest (scikit-learn, ``pip install -e '.[bench]'``) is fit on the labelled
pixels of the same training patches with the same seed and scored the same way. The table
gives each seed, then the mean and the spread (max − min); ``OUT/quality.json`` has it all.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fiona
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(Path(__file__).parent))
from random_forest import predict_scene, training_pixels  # noqa: E402

import scratchsat  # noqa: E402
from scratchsat.tiles.format import read_tiles  # noqa: E402
from scratchsat.training.config import NAMES, TrainConfig  # noqa: E402

BRANDENBURG_BANDS = ("01", "02", "03", "04", "05", "06", "07", "08", "8A", "09", "10", "11", "12")
BRANDENBURG_LABELS = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
METRICS = ("overall_accuracy", "mean_iou", "macro_f1")


def brandenburg_scene(data: Path, out: Path) -> Path:
    scene = out / "brandenburg.tif"
    if not scene.exists():
        bands = [next(data.glob(f"*_B{b}.jp2")) for b in BRANDENBURG_BANDS]
        scratchsat.stack(bands, scene)
    return scene


def parse_settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as TrainConfig settings, values typed like the defaults."""
    defaults = TrainConfig()
    settings = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in NAMES:
            raise SystemExit(f"--set {pair}: unknown setting; known: {', '.join(NAMES)}")
        default = defaults.get(key)
        value: object = text
        if isinstance(default, bool):
            value = text.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, float):
            value = float(text)
        elif default is None and text.lower() in ("true", "false"):  # amp, channels_last, …
            value = text.lower() == "true"
        elif default is None and text.lstrip("-").replace(".", "", 1).isdigit():
            value = float(text) if "." in text else int(text)
        settings[key] = value
    return settings


def number(value) -> float:
    """A score, NaN where evaluate has none (a class absent from the test pixels)."""
    return float("nan") if value is None else float(value)


def scores(result: dict) -> dict:
    return {
        **{m: number(result[m]) for m in METRICS},
        "class_iou": {c["name"]: number(c["iou"]) for c in result["classes"]},
        "support": {c["name"]: c["support"] for c in result["classes"]},
    }


def run_seed(args, scene: Path, tiles: Path, seed: int, settings: dict) -> dict:
    run, pred = args.out / f"run-{seed}", args.out / f"cnn-{seed}.tif"
    config = TrainConfig(**{**settings, "seed": seed})
    begin = time.perf_counter()
    report = scratchsat.train(tiles, run, config, overwrite=True)
    train_s = time.perf_counter() - begin
    scratchsat.predict(run, [scene], pred, overwrite=True)
    common = dict(label_field=args.label_field, background=args.background, tiles=tiles)
    cnn = scratchsat.evaluate(pred, args.labels, split="test", **common)

    x, y = training_pixels(tiles, args.samples, seed)
    begin = time.perf_counter()
    forest = RandomForestClassifier(200, n_jobs=-1, random_state=seed, min_samples_leaf=2)
    forest.fit(x, y)
    forest_s = time.perf_counter() - begin
    rf_path = args.out / f"forest-{seed}.tif"
    info = read_tiles(tiles)
    predict_scene(
        forest, scene, rf_path, list(info.classes), [b["index"] for b in info.info["bands"]]
    )
    rf = scratchsat.evaluate(rf_path, args.labels, split="test", **common)
    return {
        "seed": seed,
        "cnn": {**scores(cnn), "train_s": train_s, "epochs_run": report["epochs_run"]},
        "forest": {**scores(rf), "fit_s": forest_s},
        "pixels": cnn["pixels"],
    }


def summary(rows: list[dict], model: str) -> dict:
    out = {}
    for m in METRICS:
        values = np.array([r[model][m] for r in rows])
        spread = float(np.nanmax(values) - np.nanmin(values))
        out[m] = {"mean": float(np.nanmean(values)), "spread": spread}
    names = rows[0][model]["class_iou"]
    out["class_iou"] = {
        n: float(np.nanmean([r[model]["class_iou"][n] for r in rows])) for n in names
    }
    return out


def table(result: dict) -> str:
    lines = [
        f"{result['scene']} — test split, {result['rows'][0]['pixels']:,} labelled pixels; "
        f"settings: {result['settings'] or 'defaults'}; {platform.processor() or 'CPU'}",
        f"{'':24}{'OA':>8}{'mIoU':>8}{'macro F1':>10}{'train s':>9}",
    ]
    for row in result["rows"]:
        for model in ("forest", "cnn"):
            r = row[model]
            seconds = r.get("train_s", r.get("fit_s", 0.0))
            lines.append(
                f"{model + ' seed ' + str(row['seed']):24}{r['overall_accuracy']:8.3f}"
                f"{r['mean_iou']:8.3f}{r['macro_f1']:10.3f}{seconds:9.0f}"
            )
    for model in ("forest", "cnn"):
        s = result["summary"][model]
        lines.append(
            f"{model + ' mean (spread)':24}"
            + "".join(f"{s[m]['mean']:6.3f}({s[m]['spread']:.2f})" for m in METRICS)
        )
    diff = {
        m: result["summary"]["cnn"][m]["mean"] - result["summary"]["forest"][m]["mean"]
        for m in METRICS
    }
    lines.append("cnn − forest: " + ", ".join(f"{m} {v:+.3f}" for m, v in diff.items()))
    classes = result["summary"]["cnn"]["class_iou"]
    lines.append(
        "per-class IoU, cnn / forest: "
        + ", ".join(
            f"{n} {classes[n]:.2f}/{result['summary']['forest']['class_iou'][n]:.2f}"
            for n in classes
        )
    )
    return "\n".join(lines)


BACKGROUND = "other"
RGB = ("B02", "B03", "B04")
LANDSAT_LIKE = ("B02", "B03", "B04", "B08", "B11", "B12")  # blue … swir2, as Landsat's 6


@dataclass(frozen=True)
class Cell:
    """One task of the matrix: how its scene and labels are made from the data folder."""

    name: str
    what: str
    scene: Callable[[Path, Path], Path]  # (data folder, scenes folder) → scene GeoTIFF
    labels: Callable[[Path, Path], Path]  # → label file
    label_field: str
    background: str | None = None
    bands: tuple[str, ...] | None = None
    target: str | None = None  # the object class of a task against the background


def bb_scene(data: Path, folder: Path) -> Path:
    return brandenburg_scene(data / "brandenburg-s2", folder)


def bb_labels(data: Path, folder: Path) -> Path:
    return data / "brandenburg-s2" / BRANDENBURG_LABELS


def bb_crop(data: Path, folder: Path) -> Path:
    """The 480 × 480 px window of the Brandenburg scene (on the 32 px lattice; at most half
    the scene's side) that holds the most labelled pixels: a small scene, with labels as dense
    as the scene allows."""
    path = folder / "brandenburg-crop.tif"
    if path.exists():
        return path
    scene = bb_scene(data, folder)
    with rasterio.open(scene) as src, fiona.open(bb_labels(data, folder)) as polygons:
        size = min(480, src.height // 2 // 32 * 32, src.width // 2 // 32 * 32)
        shapes = [(f.geometry, 1) for f in polygons]
        covered = rasterize(shapes, out_shape=src.shape, transform=src.transform, dtype="uint8")
        total = np.pad(covered.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        best = max(
            (
                (r, c)
                for r in range(0, src.height - size + 1, 32)
                for c in range(0, src.width - size + 1, 32)
            ),
            key=lambda rc: (
                total[rc[0] + size, rc[1] + size]
                - total[rc[0], rc[1] + size]
                - total[rc[0] + size, rc[1]]
                + total[rc[0], rc[1]]
            ),
        )
        window = Window(best[1], best[0], size, size)
        write_like(src, path, src.read(window=window), src.window_transform(window))
    return path


def bb_30m(data: Path, folder: Path) -> Path:
    """Six Landsat-like bands of the Brandenburg scene averaged to 30 m (512 × 256 px)."""
    path = folder / "brandenburg-30m.tif"
    if path.exists():
        return path
    with rasterio.open(bb_scene(data, folder)) as src:
        indexes = [src.descriptions.index(b) + 1 for b in LANDSAT_LIKE]
        shape = (len(indexes), src.height // 3, src.width // 3)
        coarse = src.read(indexes, out_shape=shape, resampling=Resampling.average)
        transform = src.transform * src.transform.scale(3, 3)
        write_like(src, path, coarse, transform, LANDSAT_LIKE)
    return path


def write_like(src, path: Path, data: np.ndarray, transform, names=None) -> None:
    profile = src.profile | {
        "count": len(data),
        "height": data.shape[1],
        "width": data.shape[2],
        "transform": transform,
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = names or src.descriptions


def bb_one_class(name: str) -> Callable[[Path, Path], Path]:
    """The Brandenburg polygons of one land-use class, for a task against the background."""

    def labels(data: Path, folder: Path) -> Path:
        path = folder / f"brandenburg-{name}.gpkg"
        if not path.exists():
            with fiona.open(bb_labels(data, folder)) as src:
                kept = [f for f in src if f.properties["fclass"] == name]
                with fiona.open(path, "w", **src.profile) as dst:
                    dst.writerecords(kept)
        return path

    return labels


def neon_scene(data: Path, folder: Path) -> Path:
    return data / "neon-osbs-trees" / "OSBS_029.tif"


def neon_labels(data: Path, folder: Path) -> Path:
    return data / "neon-osbs-trees" / "OSBS_029_trees.geojson"


CELLS = (
    Cell(
        "brandenburg",
        "Sentinel-2, 13 bands, 8 classes, 1536 × 768 px at 10 m",
        bb_scene,
        bb_labels,
        "fclass",
    ),
    Cell("rgb", "the same, bands B02 B03 B04 only", bb_scene, bb_labels, "fclass", bands=RGB),
    Cell("b08", "the same, band B08 only", bb_scene, bb_labels, "fclass", bands=("B08",)),
    Cell("crop", "a 480 × 480 px crop (the most labelled)", bb_crop, bb_labels, "fclass"),
    Cell("30m", "6 Landsat-like bands at 30 m, 512 × 256 px", bb_30m, bb_labels, "fclass"),
    Cell(
        "water",
        "water against the background",
        bb_scene,
        bb_one_class("water"),
        "fclass",
        BACKGROUND,
        target="water",
    ),
    Cell(
        "residential",
        "residential against the background",
        bb_scene,
        bb_one_class("residential"),
        "fclass",
        BACKGROUND,
        target="residential",
    ),
    Cell(
        "trees",
        "NEON RGB at 0.1 m, 400 × 400 px, 61 tree boxes against the background",
        neon_scene,
        neon_labels,
        "label",
        BACKGROUND,
        target="tree",
    ),
)


def run_matrix(args, settings: dict) -> None:
    chosen = args.cells.split(",") if args.cells else [c.name for c in CELLS]
    unknown = sorted(set(chosen) - {c.name for c in CELLS})
    if unknown:
        raise SystemExit(
            f"--cells: unknown {', '.join(unknown)}; known: {', '.join(c.name for c in CELLS)}"
        )
    scenes = args.out / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for cell in (c for c in CELLS if c.name in chosen):
        begin = time.perf_counter()
        case = argparse.Namespace(
            out=args.out / cell.name,
            scene=cell.scene(args.matrix, scenes),
            labels=cell.labels(args.matrix, scenes),
            label_field=cell.label_field,
            background=cell.background,
            patch_size=args.patch_size,
            block_size=args.block_size,
            split_seed=args.split_seed,
            samples=args.samples,
            bands=cell.bands,
        )
        case.out.mkdir(parents=True, exist_ok=True)
        result = run_scene(case, seeds, settings)
        result.update(
            cell=cell.name, what=cell.what, target=cell.target, seconds=time.perf_counter() - begin
        )
        results[cell.name] = result
        (case.out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
        print(table(result), flush=True)
    text = matrix_table(results, seeds, settings)
    document = {
        "settings": settings,
        "seeds": seeds,
        "machine": machine(),
        "scratchsat": scratchsat.__version__,
        "cells": results,
    }
    (args.out / "matrix.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "matrix.txt").write_text(text + "\n")
    print(text)


def machine() -> str:
    """The CPU's name, its threads and whether it computes bf16 natively (docs' figures)."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line]
    name = names[0] if names else platform.processor() or platform.machine()
    bf16 = "AVX-512 BF16" if "avx512_bf16" in info else "no native bf16"
    return f"{name}, {torch.get_num_threads()} threads, {bf16}"


def object_iou(result: dict, model: str) -> tuple[float, float]:
    """Mean and spread over the seeds of the object class's IoU (NaN without one)."""
    target = result.get("target")
    if target is None:
        return float("nan"), float("nan")
    values = np.array([r[model]["class_iou"].get(target, float("nan")) for r in result["rows"]])
    return float(np.nanmean(values)), float(np.nanmax(values) - np.nanmin(values))


def matrix_table(results: dict, seeds: list[int], settings: dict) -> str:
    """The matrix as Markdown: a row per cell, mean (spread) over the seeds."""
    lines = [
        f"Seeds {','.join(map(str, seeds))}; settings: {settings or 'defaults'}; {machine()}",
        "",
        "| cell | test pixels | forest mIoU | CNN mIoU | CNN − forest | forest OA | CNN OA "
        "| object IoU, forest / CNN | CNN train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gains = []
    for name, r in results.items():
        f, c = r["summary"]["forest"], r["summary"]["cnn"]
        gain = c["mean_iou"]["mean"] - f["mean_iou"]["mean"]
        gains.append(gain)
        fo, co = object_iou(r, "forest"), object_iou(r, "cnn")
        obj = "" if np.isnan(fo[0]) else f"{fo[0]:.3f} / {co[0]:.3f} ({co[1]:.2f})"
        train_s = np.mean([row["cnn"]["train_s"] for row in r["rows"]])
        cells = [
            name,
            f"{r['rows'][0]['pixels']:,}",
            f"{f['mean_iou']['mean']:.3f} ({f['mean_iou']['spread']:.2f})",
            f"{c['mean_iou']['mean']:.3f} ({c['mean_iou']['spread']:.2f})",
            f"{gain:+.3f}",
            f"{f['overall_accuracy']['mean']:.3f}",
            f"{c['overall_accuracy']['mean']:.3f}",
            obj,
            f"{train_s:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| **mean** | | | | **{np.mean(gains):+.3f}** | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--matrix", type=Path, help="the shared data folder: run every cell")
    parser.add_argument("--cells", help="comma-separated cells of the matrix (default: all)")
    parser.add_argument("--brandenburg", type=Path, help="the brandenburg-s2 data folder")
    parser.add_argument("--scene", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--label-field")
    parser.add_argument("--background")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, help="split block side (tile's default)")
    parser.add_argument("--split-seed", type=int, default=0, help="tile's --seed (default 0)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.brandenburg:
        args.scene = brandenburg_scene(args.brandenburg, args.out)
        args.labels = args.labels or args.brandenburg / BRANDENBURG_LABELS
        args.label_field = args.label_field or "fclass"
    if not args.matrix and (args.scene is None or args.labels is None):
        parser.error("pass --matrix DATA, --brandenburg DIR, or --scene and --labels")
    settings = parse_settings(args.set)
    if args.matrix:
        run_matrix(args, settings)
        return
    args.bands = None
    result = run_scene(args, [int(s) for s in args.seeds.split(",")], settings)
    text = json.dumps(result, indent=2)  # NaN (no score) stays NaN, as Python's json writes it
    (args.out / "quality.json").write_text(text + "\n")
    print(table(result))


def run_scene(args, seeds: list[int], settings: dict) -> dict:
    """Tile the scene (once per OUT), then train, predict and score CNN and forest per seed."""
    tiles = args.out / (
        f"tiles-{args.patch_size}{'' if args.background is None else '-bg'}"
        + (f"-split{args.split_seed}" if args.split_seed else "")
    )
    if not (tiles / "dataset.json").exists():
        scratchsat.tile(
            [args.scene],
            args.labels,
            tiles,
            label_field=args.label_field,
            background=args.background,
            options=scratchsat.TileOptions(
                patch_size=args.patch_size,
                block_size=args.block_size,
                seed=args.split_seed,
                bands=args.bands,
            ),
        )
    splits = read_tiles(tiles).splits
    empty = [name for name in ("val", "test") if not splits[name]]
    if empty:
        raise SystemExit(
            f"Error: the {' and '.join(empty)} split of {tiles} holds no patches "
            f"({splits}): nothing to validate or score on; pass a smaller "
            "--block-size (splits are drawn by blocks) and a new OUT"
        )
    rows = [run_seed(args, args.scene, tiles, seed, settings) for seed in seeds]
    return {
        "scene": str(args.scene),
        "labels": str(args.labels),
        "settings": settings,
        "rows": rows,
        "summary": {m: summary(rows, m) for m in ("forest", "cnn")},
        "scratchsat": scratchsat.__version__,
    }


if __name__ == "__main__":
    main()
