"""Every example runs with fast settings and produces what it says."""

import json
import re
import subprocess
import sys
from pathlib import Path

import rasterio

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str, *args) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def figure(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_synthetic_flow(tmp_path):
    out = run("synthetic_flow.py", tmp_path, 4)
    assert figure(r"unseen scene: accuracy ([\d.]+)", out) > 0.7
    assert "water" in out and "built-up" in out
    with (
        rasterio.open(tmp_path / "unseen_classes.tif") as pred,
        rasterio.open(tmp_path / "unseen.tif") as scene,
    ):
        assert pred.transform == scene.transform and pred.shape == scene.shape


def test_sentinel2_band_files(tmp_path):
    out = run("sentinel2_bands.py", tmp_path, 3)
    with rasterio.open(tmp_path / "bands" / "T33UUU_20170216T102101_B01.tif") as b01:
        assert b01.res == (60.0, 60.0)
    with rasterio.open(tmp_path / "scene.tif") as scene:
        assert scene.count == 13 and scene.res == (10.0, 10.0) and scene.width == 480
        assert scene.descriptions[0] == "B01" and scene.descriptions[-1] == "B12"
    info = json.loads((tmp_path / "tiles" / "dataset.json").read_text())
    assert [c["name"] for c in info["classes"]] == ["bare soil", "built-up", "vegetation", "water"]
    assert figure(r"validation accuracy ([\d.]+)", out) > 0.5
    assert "480 × 480 px" in out


def test_chip_classification(tmp_path):
    out = run("chip_classification.py", tmp_path, 3)
    info = json.loads((tmp_path / "tiles" / "dataset.json").read_text())
    assert info["task"] == "classification" and len(info["classes"]) == 4
    assert "chips in bare-soil, built-up, vegetation, water" in out
    assert figure(r"test accuracy ([\d.]+)", out) > 0.4  # 4 classes: chance is about 0.25


def test_custom_model_and_augmentation(tmp_path):
    out = run("custom_model_and_augmentation.py", tmp_path, 4)
    assert figure(r"validation accuracy ([\d.]+)", out) > 0.6
    assert "reloaded DilatedFCN" in out
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["model"]["name"] == "dilated-fcn" and meta["model"]["in_channels"] == 8


def test_maps_for_gis(tmp_path, small_run, seg_tiles):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    out = run("maps_for_gis.py", small_run, info["sources"][0]["path"], tmp_path, "--n", "3")
    assert "polygons" in out and "model.onnx" in out
    for name in ("classes.tif", "uncertainty.tif", "classes.gpkg", "to_label.gpkg", "model.onnx"):
        assert (tmp_path / name).exists(), name
    for picture in ("uncertainty.png", "polygons.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stac_catalog_on_a_dask_cluster(tmp_path):
    out = run("stac_dask.py", tmp_path, "--epochs", 2)
    assert "catalog: 2 items → a 400 × 300 px scene" in out
    assert figure(r"agreement with predict on the region's GeoTIFF: ([\d.]+)%", out) >= 99.99
    items = json.loads((tmp_path / "items.json").read_text())["features"]
    assert len(items) == 2 and all(len(item["assets"]) == 6 for item in items)
    with (
        rasterio.open(tmp_path / "mosaic.tif") as mosaic,
        rasterio.open(tmp_path / "region.tif") as region,
    ):
        assert mosaic.transform == region.transform and mosaic.shape == region.shape
        assert mosaic.colormap(1) and "CLASSES" in mosaic.tags()
