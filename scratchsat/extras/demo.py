"""``scratchsat demo``: the whole flow on synthetic scenes whose classes are known.

A 13-band Sentinel-2-like training scene is tiled, a small U-Net is trained on it from random
weights, a second scene it has never seen is predicted and scored, and pictures are drawn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from ..bundle import read_model_json
from ..errors import InputError, OutputExistsError
from ..evaluation import evaluate
from ..geo.outputs import remove_path, write_json, writing
from ..prediction import PredictOptions, predict
from ..tiles.tiling import TileOptions, tile
from ..training.loop import train
from ..training.report import Report
from ..training.setup import TrainConfig
from .pictures import plot_quicklook
from .synth import write_scene

DEMO_FILES = {
    "scene.tif",
    "labels.tif",
    "unseen.tif",
    "unseen_labels.tif",
    "tiles",
    "run",
    "unseen_prediction.tif",
    "unseen_prediction.tif.aux.xml",
    "unseen_prediction.qml",
    "unseen_scores.json",
    "unseen_quicklook.png",
    "scene_quicklook.png",
}
Bars = Callable[[str], AbstractContextManager]  # bars("step") yields progress(done, total, ...)


def no_bars(description: str) -> AbstractContextManager:
    return contextlib.nullcontext(None)


def prepare(out: Path, overwrite: bool) -> None:
    """The demo's folder, emptied of an earlier demo's files (only those) with --overwrite."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; the demo writes a folder: choose another --out")
    earlier = [p for p in out.glob("*") if p.name in DEMO_FILES or p.suffix == ".part"]
    if earlier and not overwrite:
        raise OutputExistsError(f"{out} holds an earlier demo; pass --overwrite to replace it")
    for path in earlier:  # only what a demo writes: never a user's other files, and a link
        remove_path(path)  # is removed itself, never what it points to
    with writing(out.parent, out):
        out.mkdir(parents=True, exist_ok=True)


def draw(out: Path, seen, unseen, prediction: Path, scores: dict) -> None:
    """The quicklooks: the unseen scene with its labels and prediction, the training scene."""
    classes = read_model_json(out / "run")["classes"]
    plot_quicklook(
        out / "unseen_quicklook.png",
        unseen.path,
        classes,
        [("labels (truth)", unseen.labels_path), ("prediction", prediction)],
        f"Unseen scene: accuracy {scores['overall_accuracy']:.3f}, "
        f"mean IoU {scores['mean_iou']:.3f}",
    )
    plot_quicklook(
        out / "scene_quicklook.png",
        seen.path,
        classes,
        [("labels", seen.labels_path)],
        "Training scene",
    )


def demo(
    out: str | os.PathLike = "scratchsat-demo",
    *,
    epochs: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    bars: Bars = no_bars,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Run the flow into ``out``; returns the unseen scene's scores and the files written.

    ``epochs`` defaults to 12 on the CPU (about a minute on two cores) and 40 on a GPU.
    """
    out = Path(out)
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be at least 1, not {epochs}; leave it out for the default")
    prepare(out, overwrite)
    log(f"1/5 writing two synthetic 13-band scenes with labels into {out}")
    seen = write_scene(out / "scene.tif", out / "labels.tif", width=512, height=512, seed=1)
    unseen = write_scene(
        out / "unseen.tif", out / "unseen_labels.tif", width=384, height=384, seed=7
    )
    log("2/5 tiling the first scene into 32 px patches")
    with bars("tile") as progress:
        tiles = tile(
            [seen.path],
            seen.labels_path,
            out / "tiles",
            progress=progress,
            options=TileOptions(patch_size=32, block_size=64, seed=1),
        )
    config = TrainConfig.of(
        model="unet", width=16, epochs=epochs or default_epochs(device), device=device
    )
    log(f"3/5 training a U-Net from random weights for {config.epochs} epochs")
    with bars("train") as progress:
        report = train(tiles, out / "run", config, progress=progress, log=log)
    log("4/5 predicting the unseen scene")
    prediction = out / "unseen_prediction.tif"
    with bars("predict") as progress:
        predict(
            out / "run",
            [unseen.path],
            prediction,
            progress=progress,
            options=PredictOptions(device=device),
        )
    log("5/5 scoring the prediction and drawing pictures")
    scores = evaluate(prediction, unseen.labels_path)
    write_json(out / "unseen_scores.json", scores)
    draw(out, seen, unseen, prediction, scores)
    return {
        "overall_accuracy": scores["overall_accuracy"],
        "mean_iou": scores["mean_iou"],
        "test_split_accuracy": Report.from_dict(report).final["overall_accuracy"],
        "folder": str(out),
        "files": {
            "scenes": [str(seen.path), str(unseen.path)],
            "tiles": str(tiles),
            "run": str(out / "run"),
            "prediction": str(prediction),
            "pictures": [
                str(out / n)
                for n in (
                    "unseen_quicklook.png",
                    "scene_quicklook.png",
                    "run/curves.png",
                    "run/confusion.png",
                )
            ],
        },
    }


def default_epochs(device: str) -> int:
    from ..device import pick_device

    return 40 if pick_device(device).type == "cuda" else 12
