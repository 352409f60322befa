"""The quality benchmark: scratchsat's default settings against a per-pixel random forest, on
the same held-out test pixels, over several seeds.

    python benchmarks/quality.py OUT --brandenburg ../shared/data/brandenburg-s2
    python benchmarks/quality.py OUT --scene S.tif --labels L.gpkg --label-field F
        [--background NAME] [--patch-size 32] [--split-seed 0] [--seeds 0,1,2] [--set K=V ...]

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
from pathlib import Path

import numpy as np
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
    predict_scene(forest, scene, rf_path, list(read_tiles(tiles).classes))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
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
    if args.scene is None or args.labels is None:
        parser.error("pass --brandenburg DIR, or --scene and --labels")
    settings = parse_settings(args.set)
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
                patch_size=args.patch_size, block_size=args.block_size, seed=args.split_seed
            ),
        )
    splits = read_tiles(tiles).splits
    empty = [name for name in ("val", "test") if not splits[name]]
    if empty:
        raise SystemExit(
            f"Error: the {' and '.join(empty)} split of {tiles} holds no patches "
            f"({splits}): nothing to validate or score on; pass a smaller "
            "--block-size (splits are drawn by blocks, 8 patches a side by default) and a new OUT"
        )
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [run_seed(args, args.scene, tiles, seed, settings) for seed in seeds]
    result = {
        "scene": str(args.scene),
        "labels": str(args.labels),
        "settings": settings,
        "rows": rows,
        "summary": {m: summary(rows, m) for m in ("forest", "cnn")},
        "scratchsat": scratchsat.__version__,
    }
    text = json.dumps(result, indent=2)  # NaN (no score) stays NaN, as Python's json writes it
    (args.out / "quality.json").write_text(text + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
