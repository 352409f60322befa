"""Remote inputs on purpose: scenes and labels over HTTP (a range-answering server on
127.0.0.1) tile, predict, evaluate and show like local files, fetch only the blocks needed,
and fail with errors that say what went wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from conftest import peak_memory_mb, write_raster
from typer.testing import CliRunner

from scratchsat import TileOptions, tile
from scratchsat.cli import app
from scratchsat.evaluation import evaluate
from scratchsat.prediction import predict

runner = CliRunner()


def test_info_of_a_large_cog_fetches_a_small_part(file_server, tmp_path):
    root, server = file_server
    data = np.random.default_rng(0).integers(0, 200, (1, 8192, 8192), dtype=np.uint8)
    local = write_raster(tmp_path / "big.tif", data, tiled=True, compress="deflate")
    rasterio.shutil.copy(local, root / "big_cog.tif", driver="COG")  # with overviews
    size = (root / "big_cog.tif").stat().st_size
    result = runner.invoke(app, ["info", f"{server.url}/big_cog.tif"])
    assert result.exit_code == 0, result.output
    assert f"{server.url}/big_cog.tif" in result.output and "8192" in result.output
    # the header and the overview its statistics are read from, not the full resolution
    assert 0 < server.sent < size / 20, (server.sent, size)


def test_tile_and_predict_over_http_match_local_files(file_server, seg_tiles, small_run, tmp_path):
    root, server = file_server
    folder = seg_tiles.parent
    for name in ("scene.tif", "labels.tif"):
        shutil.copy(folder / name, root / name)
    scene, labels = f"{server.url}/scene.tif", f"{server.url}/labels.tif"
    options = TileOptions(patch_size=32, block_size=64)
    remote = tile([scene], labels, tmp_path / "remote", options=options)
    local = tile([folder / "scene.tif"], folder / "labels.tif", tmp_path / "local", options=options)
    info = json.loads((remote / "dataset.json").read_text())
    assert info["sources"][0]["path"] == scene and info["labels"]["path"] == labels
    for name in ("images", "masks", "windows", "splits"):
        np.testing.assert_array_equal(
            np.load(remote / f"{name}.npy"), np.load(local / f"{name}.npy")
        )
    result = runner.invoke(
        app, ["predict", str(small_run), scene, "--out", str(tmp_path / "r.tif")]
    )
    assert result.exit_code == 0, result.output
    predict(small_run, [folder / "scene.tif"], tmp_path / "l.tif")
    with rasterio.open(tmp_path / "r.tif") as a, rasterio.open(tmp_path / "l.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.profile == b.profile
    shutil.copy(tmp_path / "l.tif", root / "map.tif")
    scores = evaluate(f"{server.url}/map.tif", labels)
    assert scores["prediction"] == f"{server.url}/map.tif"
    assert scores["confusion"] == evaluate(tmp_path / "l.tif", folder / "labels.tif")["confusion"]


def test_vector_labels_and_stack_over_http(file_server, tmp_path):
    root, server = file_server
    data = np.arange(2 * 64 * 64, dtype=np.uint16).reshape(2, 64, 64)
    for i in range(2):
        write_raster(root / f"b{i}.tif", data[i])
    result = runner.invoke(
        app,
        ["stack", f"{server.url}/b0.tif", f"{server.url}/b1.tif", "--out", str(tmp_path / "s.tif")],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "s.tif") as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.tags(2)["SOURCE"] == f"{server.url}/b1.tif"  # the URL, whole
    left, top = 500_000.0, 5_800_000.0
    square = [
        [left, top],
        [left + 320, top],
        [left + 320, top - 320],
        [left, top - 320],
        [left, top],
    ]
    labels = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"kind": "roof"},
                "geometry": {"type": "Polygon", "coordinates": [square]},
            }
        ],
    }
    (root / "labels.geojson").write_text(json.dumps(labels))
    out = tile(
        [tmp_path / "s.tif"],
        f"{server.url}/labels.geojson",
        tmp_path / "t",
        label_field="kind",
        background="other",
        options=TileOptions(patch_size=16, block_size=32),
    )
    info = json.loads((out / "dataset.json").read_text())
    assert {c["name"] for c in info["classes"]} == {"roof", "other"}
    assert info["labels"]["path"] == f"{server.url}/labels.geojson"


def test_remote_errors_say_what_went_wrong(file_server, seg_tiles, tmp_path):
    root, server = file_server
    result = runner.invoke(app, ["info", f"{server.url}/missing.tif"])
    assert result.exit_code == 1
    assert "missing.tif: not found on the server (HTTP 404)" in result.output
    result = runner.invoke(app, ["info", f"{server.url}/private/scene.tif"])
    assert result.exit_code == 1 and "access denied (HTTP 401/403)" in result.output
    shutil.copy(seg_tiles.parent / "scene.tif", root / "whole.tif")
    server.ranges = False
    result = runner.invoke(app, ["info", f"{server.url}/whole.tif"])
    assert result.exit_code == 1, result.output
    assert "does not answer HTTP range requests" in result.output
    assert "Traceback" not in result.output


def test_gdal_settings_yield_to_the_environment():
    script = textwrap.dedent("""
        from scratchsat.geo.raster import gdal_settings
        remote = gdal_settings("https://host/a.tif")
        local = gdal_settings("a.tif")
        print(remote.get("GDAL_DISABLE_READDIR_ON_OPEN"), remote.get("VSI_CACHE_SIZE"),
              local.get("VSI_CACHE_SIZE"))
    """)
    env = {**os.environ, "GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["None", str(64 * 2**20), "None"]  # local files: not these


@pytest.mark.parametrize("rows", [(1024, 10240)])
def test_predicting_a_remote_scene_streams_it(file_server, small_run, tmp_path, rows):
    """Peak memory of predict over HTTP grows far less than the scene (as for local files)."""
    root, server = file_server
    urls = []
    for height in rows:
        data = np.random.default_rng(0).integers(1, 3000, (6, height, 128), dtype=np.uint16)
        write_raster(
            root / f"s{height}.tif",
            data,
            nodata=0,
            tiled=True,
            blockxsize=128,
            blockysize=128,
            compress="deflate",
        )
        urls.append(f"{server.url}/s{height}.tif")
    small, large = peak_memory_mb(
        "from scratchsat.prediction import predict, PredictOptions",
        f"predict({str(small_run)!r}, [path], {str(tmp_path)!r} + '/p-' + path.rsplit('/')[-1], "
        "options=PredictOptions(batch_size=8))",
        urls,
        VSI_CACHE_SIZE=str(4 * 2**20),
    )
    extra = 6 * 4 * 128 * (rows[1] - rows[0]) / 2**20  # the extra pixels as float32
    assert large - small < 0.25 * extra, (small, large)
