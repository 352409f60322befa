"""Inputs stay as given: URLs and GDAL virtual paths flow through the same code as local files
(reading them over the network is tested by the remote-input feature; here: nothing in the
pipeline turns ``https://`` into ``https:/`` or drops a ``/vsi…`` prefix)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.geo.sources import RemoteSource, as_source
from scratchsat.prediction import predict
from scratchsat.tiles.tiling import TileOptions, tile

runner = CliRunner()


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("https://example.org/data/scene.tif?x=1", "scene.tif"),
        ("s3://bucket/key/scene.tif", "scene.tif"),
        ("gs://bucket/scene.tif", "scene.tif"),
        ("/vsizip//data/a.zip/inner/scene.tif", "scene.tif"),
    ],
)
def test_remote_sources_are_kept_as_given(given, name):
    source = as_source(given)
    assert isinstance(source, RemoteSource) and str(source) == given
    assert source.name == name and source.stem == "scene" and source.suffix == ".tif"
    assert isinstance(as_source("data/scene.tif"), Path)


def test_a_url_reaches_gdal_intact_through_the_cli(tmp_path):
    url = "https://127.0.0.1:9/folder/scene.tif"  # nothing listens on the discard port
    result = runner.invoke(app, ["tile", url, "--labels", url, "--out", str(tmp_path / "t")])
    assert result.exit_code == 1, result.output
    assert f"Error: {url}:" in result.output and "https:/127" not in result.output
    result = runner.invoke(app, ["info", url])
    assert result.exit_code == 1 and url in result.output


def test_vsizip_scenes_tile_and_predict_like_local_files(seg_tiles, small_run, tmp_path):
    folder = seg_tiles.parent
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(folder / "scene.tif", "inner/scene.tif")
        z.write(folder / "labels.tif", "inner/labels.tif")
    scene, labels = (f"/vsizip/{archive}/inner/{n}.tif" for n in ("scene", "labels"))
    options = TileOptions(patch_size=32, block_size=64)
    zipped = tile([scene], labels, tmp_path / "zipped", options=options)
    local = tile([folder / "scene.tif"], folder / "labels.tif", tmp_path / "local", options=options)
    info = json.loads((zipped / "dataset.json").read_text())
    assert info["sources"][0]["path"] == scene and info["labels"]["path"] == labels
    for name in ("images", "masks", "windows", "splits"):
        np.testing.assert_array_equal(
            np.load(zipped / f"{name}.npy"), np.load(local / f"{name}.npy")
        )
    [out] = predict(small_run, [scene], tmp_path / "preds")
    assert out == tmp_path / "preds" / "scene.tif"
    predict(small_run, [folder / "scene.tif"], tmp_path / "local.tif")
    with rasterio.open(out) as a, rasterio.open(tmp_path / "local.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
