"""suggest: windows ranked by uncertainty, spread out, never on a labelled patch."""

from __future__ import annotations

import json

import fiona
import numpy as np
import pytest
import rasterio
from conftest import write_raster
from shapely.geometry import box, shape
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import InputError
from scratchsat.prediction.suggest import rank_windows, suggest

runner = CliRunner()


def uncertainty_and_map(tmp_path, entropy):
    height, width = entropy.shape
    unsure = np.stack([1 - entropy, entropy, 1 - entropy / 2]).astype(np.float32)
    write_raster(
        tmp_path / "u.tif",
        unsure,
        nodata=float("nan"),
        descriptions=["margin", "entropy", "top_probability"],
    )
    codes = np.where(np.arange(width)[None, :] < width // 2, 1, 2).repeat(height, 0)
    write_raster(tmp_path / "c.tif", codes.astype(np.uint8), nodata=255)
    with rasterio.open(tmp_path / "u.tif") as src:
        return src.transform


def test_windows_are_ranked_spread_and_kept_off_labelled_patches(tmp_path):
    entropy = np.full((128, 128), 0.1, np.float32)
    entropy[0:16, 0:16] = 0.9  # the most uncertain window…
    entropy[16:32, 16:32] = 0.8  # …and one too close to it to be taken as well
    entropy[96:112, 96:112] = 0.7
    entropy[48:64, 96:112] = 0.6  # best left after the labelled patch below is excluded
    entropy[100:128, 0:8] = np.nan  # less than half valid windows are skipped
    transform = uncertainty_and_map(tmp_path, entropy)
    labelled = [(transform * (96, 112)) + (transform * (112, 96))]  # (left, bottom, right, top)
    found = rank_windows(tmp_path / "u.tif", tmp_path / "c.tif", [1, 2], 16, labelled, 3)
    assert [(s.row, s.col) for s in found][:2] == [(0, 0), (48, 96)]
    scores = [s.score for s in found]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(0.9)
    for i, a in enumerate(found):
        for b in found[:i]:
            assert max(abs(a.row - b.row), abs(a.col - b.col)) >= 32  # a gap of a patch
    assert found[0].mix == (1.0, 0.0) and found[1].mix == (0.0, 1.0)
    assert found[0].margin == pytest.approx(0.1)


def test_suggest_end_to_end_avoids_the_tiles_patches(tmp_path, small_run, seg_tiles):
    from scratchsat import write_scene

    scene = write_scene(
        tmp_path / "big.tif", tmp_path / "big_labels.tif", width=448, height=448, count=6, seed=7
    )
    out = tmp_path / "to_label.gpkg"
    result = runner.invoke(
        app, ["suggest", str(small_run), str(scene.path), "--n", "12", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((seg_tiles / "dataset.json").read_text())
    a, b, c, d, e, f = info["sources"][0]["transform"][:6]
    patches = [
        box(c + a * col, f + e * (row + 32), c + a * (col + 32), f + e * row)
        for _, col, row in np.load(seg_tiles / "windows.npy").tolist()
    ]
    with rasterio.open(scene.path) as src:
        footprint = box(*src.bounds)
    assert sum(p.within(footprint) for p in patches) > 50  # the labelled patches are inside
    with fiona.open(out) as src:
        found = [(shape(feat.geometry), dict(feat.properties)) for feat in src]
        assert src.crs.to_epsg() == 32633
    assert 0 < len(found) <= 12
    assert [p["rank"] for _, p in found] == list(range(1, len(found) + 1))
    for geometry, props in found:
        assert geometry.area == pytest.approx(320 * 320)  # 32 px of 10 m
        assert all(geometry.intersection(p).area == 0 for p in patches)
        shares = [v for k, v in props.items() if k.startswith("share_")]
        assert sum(shares) == pytest.approx(1.0) and 0 <= props["score"] <= 1
    assert [p["score"] for _, p in found] == sorted((p["score"] for _, p in found), reverse=True)
    again = runner.invoke(app, ["suggest", str(small_run), str(scene.path), "--out", str(out)])
    assert again.exit_code == 1 and "exists already" in again.output
    with pytest.raises(InputError, match="suggest writes one file"):
        suggest(small_run, scene.path, tmp_path / "x.shp")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_fewer_windows_than_asked_says_why(tmp_path):
    """``suggest --n 15`` on a small, mostly labelled scene wrote 5 windows and said only
    ``wrote 5 windows to label``: the count of windows looked at and why each was left out."""
    from scratchsat.prediction.suggest import shortfall

    entropy = np.full((64, 64), 0.5, np.float32)
    entropy[48:64, :] = np.nan  # the bottom quarter is nodata
    transform = uncertainty_and_map(tmp_path, entropy)
    labelled = [(transform * (0, 32)) + (transform * (32, 0))]  # the top-left quarter
    tally: dict = {}
    found = rank_windows(tmp_path / "u.tif", tmp_path / "c.tif", [1, 2], 16, labelled, 15, tally)
    assert len(found) < 15 and tally["windows"] == 49  # 7 × 7 windows half a window apart
    assert tally["mostly_nodata"] == 7 and tally["on_labelled"] > 0  # the bottom row of windows
    kept = tally["windows"] - tally["mostly_nodata"] - tally["on_labelled"]
    assert kept == len(found) + tally["too_close"]
    why = shortfall(15, len(found), tally, 16)
    assert why.startswith(f"only {len(found)} of the 15 windows") and "mostly nodata" in why
    assert shortfall(len(found), len(found), tally, 16) is None


def test_suggestions_open_as_ranked_outlines_and_skip_cloud(tmp_path, small_run):
    """suggest's GeoPackage opened in QGIS with one random fill (opaque squares over the
    imagery), and a suggestion lay on cloud (98 % of its pixels above the scene's B02 p98):
    the file carries an outline style labelled by rank, and cloud-like windows (half their
    pixels brighter than the training p98 in three quarters of the bands) are left out."""
    from scratchsat import write_scene
    from scratchsat.prediction.suggest import shortfall

    scene = write_scene(  # away from the training scene: no window is on a labelled patch
        tmp_path / "s.tif",
        tmp_path / "l.tif",
        width=320,
        height=320,
        count=6,
        seed=9,
        origin=(500_000.0, 5_800_020.0),
    )
    with rasterio.open(scene.path, "r+") as dst:  # a 96 px cloud, bright in every band
        data = dst.read()
        data[:, 100:196, 100:196] = 60000
        dst.write(data)
    out = tmp_path / "next.gpkg"
    found = suggest(small_run, scene.path, out, n=40)
    assert len(found) >= 5
    cloud = box(100, 100, 196, 196)
    for s in found:  # no suggestion is mostly cloud
        assert box(s.col, s.row, s.col + 32, s.row + 32).intersection(cloud).area < 0.5 * 32 * 32
    with fiona.open(out, layer="layer_styles") as styles:
        (row,) = [dict(f.properties) for f in styles]
    assert row["f_table_name"] == "suggestions" and row["useAsDefault"]
    qml = row["styleQML"]
    assert 'attr="rank"' in qml and 'fieldName="rank"' in qml and 'value="no"' in qml
    assert qml.count("<category ") == len(found)
    geojson = tmp_path / "next.geojson"
    suggest(small_run, scene.path, geojson, n=3)
    assert 'fieldName="rank"' in (tmp_path / "next.qml").read_text()
    tally = {"windows": 10, "mostly_nodata": 1, "on_labelled": 2, "cloud_like": 4, "too_close": 0}
    assert "4 look like cloud" in shortfall(9, 3, tally, 32)
