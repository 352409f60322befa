"""evaluate: numbers checked by hand, names matched with vector labels, split regions, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from conftest import ORIGIN, write_raster
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import InputError
from scratchsat.evaluation import evaluate
from scratchsat.geo.classmap import classes_tag

runner = CliRunner()

PRED = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 2, 2, 255], [1, 1, 1, 1]], np.uint8)
TRUTH = np.array([[1, 1, 2, 2], [1, 2, 2, 2], [0, 2, 2, 2], [1, 1, 2, 0]], np.uint8)


def test_scores_match_a_hand_count(tmp_path):
    # Kept pixels (label 0 and prediction 255 left out): 13. Confusion, rows = labels:
    # label 1: 5 predicted 1; label 2: 2 predicted 1, 6 predicted 2.
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    result = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif")
    assert result["confusion"] == [[5, 0], [2, 6]]
    assert result["pixels"] == 13
    assert result["overall_accuracy"] == pytest.approx(11 / 13)
    one, two = result["classes"]
    assert one["iou"] == pytest.approx(5 / 7) and two["iou"] == pytest.approx(6 / 8)
    assert result["mean_iou"] == pytest.approx((5 / 7 + 6 / 8) / 2)
    assert one["precision"] == pytest.approx(5 / 7) and one["recall"] == 1.0
    assert two["precision"] == 1.0 and two["recall"] == pytest.approx(6 / 8)
    assert one["f1"] == pytest.approx(10 / 12) and two["f1"] == pytest.approx(12 / 14)
    assert (one["support"], two["support"]) == (5, 8)
    assert (one["code"], two["code"]) == (1, 2)


def test_a_predicted_code_the_labels_lack_gets_its_own_row(tmp_path):
    pred = PRED.copy()
    pred[0, 0] = 9
    write_raster(tmp_path / "pred.tif", pred, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    result = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif")
    assert [c["code"] for c in result["classes"]] == [1, 2, 9]
    assert result["confusion"] == [[4, 0, 1], [2, 6, 0], [0, 0, 0]]
    assert result["classes"][2]["iou"] == 0.0 and result["classes"][2]["support"] == 0


def test_vector_labels_are_matched_by_class_name(tmp_path):
    """Text classes get codes in name order (forest 1, water 2); the model called water 1."""
    pred = np.ones((10, 20), np.uint8)
    pred[:, 10:] = 2
    path = write_raster(tmp_path / "pred.tif", pred, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(
            CLASSES=classes_tag(
                [
                    {"code": 1, "name": "water", "colour": "#0000ff"},
                    {"code": 2, "name": "forest", "colour": "#00ff00"},
                ]
            )
        )
    x0, y0 = ORIGIN

    def box(a, b, name):
        ring = [
            [x0 + a * 10, y0],
            [x0 + b * 10, y0],
            [x0 + b * 10, y0 - 100],
            [x0 + a * 10, y0 - 100],
            [x0 + a * 10, y0],
        ]
        return {
            "type": "Feature",
            "properties": {"kind": name},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }

    labels = tmp_path / "labels.geojson"
    labels.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                "features": [box(0, 10, "water"), box(10, 20, "forest")],
            }
        )
    )
    result = evaluate(path, labels, label_field="kind")
    assert result["overall_accuracy"] == 1.0 and result["pixels"] == 200
    assert [c["name"] for c in result["classes"]] == ["forest", "water"]
    assert result["confusion"] == [[100, 0], [0, 100]]


def test_one_split_only(seg_tiles):
    """A perfect prediction scored on the test split counts exactly that split's pixels."""
    folder = seg_tiles.parent
    info = json.loads((seg_tiles / "dataset.json").read_text())
    with rasterio.open(folder / "scene.tif") as scene, rasterio.open(folder / "labels.tif") as lab:
        invalid = (scene.read() == 0).any(0)
        codes = lab.read(1)
        profile = lab.profile
    codes[invalid | (codes == 0)] = 255
    profile.update(nodata=255)
    with rasterio.open(folder.parent / "perfect.tif", "w", **profile) as dst:
        dst.write(codes, 1)
    result = evaluate(
        folder.parent / "perfect.tif", folder / "labels.tif", tiles=seg_tiles, split="test"
    )
    assert result["overall_accuracy"] == 1.0
    assert result["pixels"] == sum(c["pixels_by_split"]["test"] for c in info["classes"])
    with pytest.raises(InputError, match="--tiles and --split go together"):
        evaluate(folder.parent / "perfect.tif", folder / "labels.tif", split="test")
    with pytest.raises(InputError, match="unknown split 'holdout'"):
        evaluate(
            folder.parent / "perfect.tif", folder / "labels.tif", tiles=seg_tiles, split="holdout"
        )


def test_through_the_cli_with_json(tmp_path):
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    out = tmp_path / "scores.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "pred.tif"),
            "--labels",
            str(tmp_path / "truth.tif"),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "overall accuracy 0.846" in result.output and "mean IoU 0.732" in result.output
    saved = json.loads(out.read_text())
    assert {"overall_accuracy", "mean_iou", "classes", "confusion"} <= set(saved)
    assert saved["confusion"] == [[5, 0], [2, 6]]
    again = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "pred.tif"),
            "--labels",
            str(tmp_path / "truth.tif"),
            "--json",
            str(out),
        ],
    )
    assert again.exit_code == 1 and "exists already; pass --overwrite" in again.output


def test_errors(tmp_path):
    write_raster(tmp_path / "two.tif", np.ones((2, 4, 4), np.uint8))
    write_raster(tmp_path / "float.tif", np.ones((4, 4), np.float32))
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    write_raster(tmp_path / "far.tif", TRUTH, nodata=0, origin=(100.0, 100.0))
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    with pytest.raises(InputError, match="two.tif has 2 band.* pass a class map"):
        evaluate(tmp_path / "two.tif", tmp_path / "truth.tif")
    with pytest.raises(InputError, match="float.tif has 1 band.* of float32"):
        evaluate(tmp_path / "float.tif", tmp_path / "truth.tif")
    with pytest.raises(InputError, match="far.tif does not overlap the scene"):
        evaluate(tmp_path / "pred.tif", tmp_path / "far.tif")
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "nope.tif"), "--labels", str(tmp_path / "truth.tif")]
    )
    assert result.exit_code == 1 and "nope.tif: no such file" in result.output
