"""predict --stac: a STAC Item beside each class map, valid against the STAC 1.1.0 item schema
(pystac's own copy, offline) and read back through pystac's extension classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.validation import validate_dict
from rasterio.warp import transform
from typer.testing import CliRunner

from scratchsat.cli import app

runner = CliRunner()


def core_valid(item: dict) -> None:
    """The item against the STAC 1.1.0 Item JSON schema that pystac ships (no network); the
    extensions' own schemas live on the web, which tests here cannot reach."""
    validate_dict(item, extensions=[])


@pytest.fixture
def scene(seg_tiles, tmp_path):
    """The training scene, copied with an acquisition time in its TIFF metadata."""
    with rasterio.open(seg_tiles.parent / "scene.tif") as src:
        profile, data, tags = src.profile, src.read(), src.tags()
        descriptions = src.descriptions
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags, TIFFTAG_DATETIME="2024:06:15 10:30:00")
        for i, name in enumerate(descriptions, start=1):
            dst.set_band_description(i, name)
    return path


def test_predict_writes_a_valid_item_with_grid_classes_and_provenance(small_run, scene, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict",
            str(small_run),
            str(scene),
            "--out",
            str(out / "pred.tif"),
            "--probabilities",
            str(out / "probs.tif"),
            "--stac",
        ],
    )
    assert result.exit_code == 0, result.output
    path = out / "pred.stac.json"
    data = json.loads(path.read_text())
    core_valid(data)
    item = pystac.Item.from_file(str(path))
    with rasterio.open(out / "pred.tif") as src:
        grid = (src.crs, src.transform, src.width, src.height, src.bounds, src.tags())
    crs, affine, width, height, bounds, tags = grid
    projection = ProjectionExtension.ext(item)
    assert projection.code == f"EPSG:{crs.to_epsg()}"
    assert projection.shape == [height, width]
    assert projection.transform == list(affine)[:6]
    assert item.datetime.isoformat() == "2024-06-15T10:30:00+00:00"
    assert item.properties["scratchsat:datetime_source"] == "scene metadata TIFFTAG_DATETIME"
    # the footprint is the map's, in WGS 84
    lon, lat = transform(
        crs, "EPSG:4326", [(bounds.left + bounds.right) / 2], [(bounds.bottom + bounds.top) / 2]
    )
    west, south, east, north = item.bbox
    assert west < lon[0] < east and south < lat[0] < north
    classes_asset = item.assets["classes"]
    assert classes_asset.get_absolute_href() == str((out / "pred.tif").resolve())
    band = RasterExtension.ext(classes_asset).bands[0]
    assert (band.data_type, band.nodata) == ("uint8", 255)
    classes = ClassificationExtension.ext(classes_asset).classes
    expected = json.loads(tags["CLASSES"])
    assert [(c.value, c.title, c.color_hint) for c in classes[:-1]] == [
        (c["code"], c["name"], c["colour"].lstrip("#").upper()) for c in expected
    ]
    assert all(c.name.replace("_", "").replace("-", "").isalnum() for c in classes)
    assert (classes[-1].value, classes[-1].nodata) == (255, True)
    probabilities = RasterExtension.ext(item.assets["probabilities"]).bands
    assert len(probabilities) == len(expected) and probabilities[0].scale == 0.01
    model = item.properties["scratchsat:model"]
    meta = json.loads((small_run / "model.json").read_text())
    assert model["bands"] == [b["name"] for b in meta["bands"]]
    assert model["training_data_hash"] == meta["data"]["hash"]
    assert model["bundle"] == str(small_run)


def predict_with_stac(run: Path, tiles: Path, out: Path):
    """``scratchsat predict RUN SCENE --out OUT --stac`` on the tiles' scene."""
    return runner.invoke(
        app, ["predict", str(run), str(tiles.parent / "scene.tif"), "--out", str(out), "--stac"]
    )


def test_without_acquisition_time_the_prediction_time_is_said(small_run, seg_tiles, tmp_path):
    result = predict_with_stac(small_run, seg_tiles, tmp_path / "pred.tif")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "pred.stac.json").read_text())
    core_valid(data)
    assert data["properties"]["scratchsat:datetime_source"].startswith("prediction time")
    assert data["properties"]["datetime"] == data["properties"]["created"]
    again = predict_with_stac(small_run, seg_tiles, tmp_path / "other.tif")
    assert again.exit_code == 0
    for name in ("other.tif", "other.tif.aux.xml", "other.qml"):  # only the item is left
        (tmp_path / name).unlink()
    refused = predict_with_stac(small_run, seg_tiles, tmp_path / "other.tif")
    assert refused.exit_code == 1 and "other.stac.json" in refused.output
    assert not (tmp_path / "other.tif").exists()


def test_the_offline_validation_catches_a_broken_item(small_run, seg_tiles, tmp_path):
    """The schema check is real: an item without datetime, or with a bad bbox, fails it."""
    predict_with_stac(small_run, seg_tiles, tmp_path / "pred.tif")
    data = json.loads((tmp_path / "pred.stac.json").read_text())
    for broken in (
        {**data, "properties": {k: v for k, v in data["properties"].items() if k != "datetime"}},
        {**data, "bbox": [1.0]},
    ):
        with pytest.raises(pystac.errors.STACValidationError):
            core_valid(broken)
    assert np.isfinite(data["bbox"]).all()
