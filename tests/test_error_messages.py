"""The error paths not covered beside their features: each message, matched."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import write_raster

from scratchsat.bundle import load_bundle
from scratchsat.errors import BundleError, DatasetError, InputError
from scratchsat.evaluation import evaluate
from scratchsat.models import build_model
from scratchsat.prediction import PredictOptions, predict
from scratchsat.tiles.format import read_tiles
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.optim import class_weights


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": 0.0}, r"--lr must be positive and --weight-decay not negative, not 0 and 0.01"),
        ({"weight_decay": -1.0}, r"--lr must be positive .* not 0.002 and -1"),
        ({"label_smoothing": 1.0}, r"--label-smoothing must be in \[0, 1\), not 1"),
        ({"patience": 0}, r"--patience must be at least 1 epoch, not 0"),
        ({"class_weights": "balanced"}, r"unknown class weighting 'balanced'; choose one of none"),
    ],
)
def test_training_settings_that_cannot_work(seg_tiles, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        train(seg_tiles, tmp_path / "run", TrainConfig.of(**options))
    assert not (tmp_path / "run").exists()


def test_class_weighting_names():
    with pytest.raises(InputError, match="unknown class weighting 'x'"):
        class_weights(np.array([1, 2]), "x")


def test_models_need_sizes():
    with pytest.raises(InputError, match="build_model needs in_channels and num_classes"):
        build_model("unet")
    with pytest.raises(InputError, match="in_channels, num_classes and width must be at least 1"):
        build_model("unet", 3, 2, "segmentation", width=0)


def test_a_foreign_dataset_json(seg_tiles, tmp_path):
    folder = tmp_path / "tiles"
    shutil.copytree(seg_tiles, folder)
    (folder / "dataset.json").write_text('{"format": "something-else"}')
    with pytest.raises(DatasetError, match="is not a scratchsat dataset.json"):
        read_tiles(folder)


def test_bundles_that_do_not_load(small_run, tmp_path):
    shutil.copytree(small_run, tmp_path / "bad")
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"model.json is not valid JSON"):
        load_bundle(tmp_path / "bad")
    meta = json.loads((small_run / "model.json").read_text())
    meta["model"]["width"] = 16  # the weights are for width 8
    (tmp_path / "bad" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"model.safetensors does not fit .*model.json"):
        load_bundle(tmp_path / "bad")


def test_predict_options_and_outputs(small_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    with pytest.raises(InputError, match="--batch-size must be at least 1 and --patch-size at"):
        predict(small_run, [scene], tmp_path / "p.tif", options=PredictOptions(patch_size=4))
    with pytest.raises(InputError, match="is the same file as the class map"):
        predict(small_run, [scene], tmp_path / "p.tif", probabilities=tmp_path / "p.tif")
    assert not list(tmp_path.iterdir())


def test_evaluate_split_on_another_grid(seg_tiles, tmp_path):
    write_raster(
        tmp_path / "pred.tif",
        np.ones((5, 5), np.uint8),
        nodata=255,
        origin=(399_960.0, 5_800_020.0),
    )  # inside the tiled scene, another size
    with pytest.raises(InputError, match=r"no scene of .* has the prediction's grid \(5 × 5"):
        evaluate(
            tmp_path / "pred.tif", seg_tiles.parent / "labels.tif", tiles=seg_tiles, split="test"
        )
