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


def test_every_output_is_an_asset_with_named_bands_statistics_and_a_self_link(
    small_run, seg_tiles, tmp_path
):
    """The STAC trips seen with pystac and rio-tiler: datetime was the prediction time although
    the file name carries the acquisition (Sentinel-2 ``20170216T102101``); the --vector
    polygons and the .qml styles were no assets; uncertainty had no raster:bands; bands had
    no name and no statistics; links was empty; scratchsat:model.scratchsat_version was null."""
    from scratchsat import __version__

    named = tmp_path / "S2A_MSIL1C_20170216T102101_N0204_scene.tif"
    with rasterio.open(seg_tiles.parent / "scene.tif") as src:
        profile, data, descriptions = src.profile, src.read(), src.descriptions
    with rasterio.open(named, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
    out = tmp_path / "out"
    args = ["predict", str(small_run), str(named), "--out", str(out / "pred.tif"), "--stac"]
    args += ["--probabilities", str(out / "probs.tif"), "--uncertainty", str(out / "unsure.tif")]
    result = runner.invoke(app, [*args, "--vector", str(out / "polygons.geojson")])
    assert result.exit_code == 0, result.output
    path = out / "pred.stac.json"
    data = json.loads(path.read_text())
    core_valid(data)
    item = pystac.Item.from_file(str(path))
    assert item.datetime.isoformat() == "2017-02-16T10:21:01+00:00"
    assert item.properties["scratchsat:datetime_source"] == "file name"
    assert item.get_self_href() == str(path.resolve())
    assert item.properties["scratchsat:model"]["scratchsat_version"] == __version__
    hrefs = {Path(a.get_absolute_href()).name for a in item.assets.values()}
    written = {p.name for p in out.iterdir() if p.name != path.name and ".aux.xml" not in p.name}
    assert written <= hrefs, written - hrefs  # every file beside the item is an asset
    assert item.assets["vector"].media_type == "application/geo+json"
    for key, count in (("classes", 1), ("probabilities", 4), ("uncertainty", 3)):
        bands = RasterExtension.ext(item.assets[key]).bands
        named = item.assets[key].extra_fields["bands"]  # STAC 1.1 bands: the names
        assert len(bands) == len(named) == count and all(b["name"] for b in named), key
        with rasterio.open(out / Path(item.assets[key].href).name) as src:
            values = src.read(masked=True)
        for band, stored in zip(bands, values, strict=True):
            stats = band.statistics
            assert stats.minimum <= stats.mean <= stats.maximum, key
            assert stats.minimum >= float(stored.min()) and stats.maximum <= float(stored.max())
            assert 0 < stats.valid_percent <= 100
    names = [b["name"] for b in item.assets["uncertainty"].extra_fields["bands"]]
    with rasterio.open(out / "unsure.tif") as src:
        assert names == list(src.descriptions) and len(set(names)) == 3


def test_stack_keeps_the_acquisition_time_of_its_inputs(tmp_path):
    """Sentinel-2 band files carry the acquisition in their names; the stack keeps it (and
    a predict --stac of the stack gives it), and says none where the inputs disagree."""
    from conftest import write_raster

    from scratchsat import stack
    from scratchsat.geo.acquisition import acquired

    band = np.ones((1, 8, 8), dtype="uint16")
    paths = [
        write_raster(tmp_path / f"T33UUU_20170216T102101_{b}.tif", band) for b in ("B02", "B03")
    ]
    one = stack(paths, tmp_path / "scene.tif")
    with rasterio.open(one) as src:
        assert src.tags()["ACQUISITION_DATE"] == "2017-02-16T10:21:01.000000Z"
        assert acquired("scene.tif", src.tags())[1] == "scene metadata ACQUISITION_DATE"
    other = write_raster(tmp_path / "T33UUU_20170301T102101_B04.tif", band)
    mixed = stack([*paths, other], tmp_path / "mixed.tif")
    with rasterio.open(mixed) as src:
        assert "ACQUISITION_DATE" not in src.tags()
    assert acquired("LC08_L1TP_193023_20200101_20200113_01_T1.tif", {})[0].day == 1
    assert acquired("plot_12345678.tif", {}) == (None, "none")


def test_the_model_is_a_stac_item_of_the_ml_model_extension(small_run, seg_tiles, tmp_path):
    """train writes RUN/model.stac.json and export X.onnx.stac.json: STAC Items (valid against
    the core schema offline) that pystac's MLM extension reads — input bands with their
    normalisation and shape, output classes, framework, from-scratch, the weights as an asset
    — so catalogues and tools that read MLM can find and run the model."""
    pytest.importorskip("onnx")
    from pystac.extensions.mlm import MLMExtension

    from scratchsat.prediction.onnx import export_onnx

    meta = json.loads((small_run / "model.json").read_text())
    info = json.loads((seg_tiles / "dataset.json").read_text())
    onnx = export_onnx(small_run, tmp_path / "m.onnx")
    for path, artifact, scaled in (
        (small_run / "model.stac.json", small_run / "model.safetensors", True),
        (tmp_path / "m.onnx.stac.json", onnx, False),
    ):
        data = json.loads(path.read_text())
        core_valid(data)
        item = pystac.Item.from_file(str(path))
        mlm = MLMExtension.ext(item)
        assert mlm.pretrained is False and mlm.tasks == ["semantic-segmentation"]
        assert mlm.framework == ("PyTorch" if scaled else "ONNX")
        (source,) = mlm.input
        assert source.bands == [b["name"] for b in meta["bands"]]
        assert source.input.shape[:2] == [-1, len(meta["bands"])]
        # MLM 1.4: one value-scaling object per band (pystac's accessor wraps a single one)
        scaling = source.properties["value_scaling"]
        if scaled:  # the bundle takes z-scored bands: the training statistics
            assert [(v["type"], v["mean"], v["stddev"]) for v in scaling] == [
                ("z-score", b["mean"], b["std"]) for b in meta["bands"]
            ]
        else:  # the ONNX file takes raw values
            assert scaling is None
        (result,) = mlm.output
        assert [c.value for c in result.classes] == [c["code"] for c in meta["classes"]]
        assert result.result.shape[1] == len(meta["classes"])
        weights = item.assets["model"]
        assert weights.get_absolute_href() == str(artifact.resolve())
        assert "mlm:model" in weights.roles
        west, south, east, north = item.bbox  # the training scene, in WGS 84
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    assert info["sources"]
    refused = runner.invoke(app, ["export", str(small_run), "--onnx", str(tmp_path / "m.onnx")])
    assert refused.exit_code == 1 and "exists already" in refused.output
