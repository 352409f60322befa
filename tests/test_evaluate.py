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


def test_the_stratified_estimator_reproduces_olofssons_worked_example():
    """Olofsson et al. (2014), Remote Sensing of Environment 148, section 5: four map classes
    (deforestation, forest gain, stable forest, stable non-forest), 30 m pixels, a stratified
    random sample of 640; the paper's estimates and 95 % intervals."""
    from scratchsat.evaluation import Z95, stratified_estimates

    sample = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    pixels = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    est = stratified_estimates(sample, pixels)
    hectares = pixels.sum() * 0.09
    np.testing.assert_allclose(est["area"] * hectares, [21_158, 11_686, 285_770, 581_386], atol=1)
    np.testing.assert_allclose(
        Z95 * est["area_se"] * hectares, [6_157, 3_756, 15_510, 16_282], atol=1.5
    )
    np.testing.assert_allclose(est["users"], [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(Z95 * est["users_se"], [0.07, 0.10, 0.04, 0.02], atol=0.005)
    np.testing.assert_allclose(est["producers"], [0.75, 0.85, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(Z95 * est["producers_se"], [0.21, 0.25, 0.03, 0.02], atol=0.006)
    assert est["overall"] == pytest.approx(0.95, abs=0.005)
    assert Z95 * est["overall_se"] == pytest.approx(0.02, abs=0.005)


def test_evaluate_reports_area_adjusted_accuracy(tmp_path):
    """Map pixels: class 1 nine, class 2 six (10 m, so 0.01 ha each); the sample (labelled
    pixels): mapped 1 → 5 labelled 1 and 2 labelled 2; mapped 2 → 6 labelled 2."""
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    area = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif")["area"]
    assert area["units"] == "ha" and area["unsampled_map_classes"] == []
    one, two = area["classes"]
    assert (one["mapped"], two["mapped"]) == (pytest.approx(0.09), pytest.approx(0.06))
    w1, w2 = 9 / 15, 6 / 15
    assert one["estimated"] == pytest.approx(w1 * 5 / 7 * 0.15)
    assert two["estimated"] == pytest.approx((w1 * 2 / 7 + w2) * 0.15)
    se = np.sqrt(w1**2 * (5 / 7) * (2 / 7) / 6)  # stratum 2 is all class 2: no variance
    assert one["estimated_ci95"] == pytest.approx(1.959964 * se * 0.15, rel=1e-5)
    assert one["users_accuracy"] == pytest.approx(5 / 7) and two["users_accuracy"] == 1.0
    assert one["producers_accuracy"] == pytest.approx(1.0)
    assert two["producers_accuracy"] == pytest.approx(w2 / (w1 * 2 / 7 + w2))
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "pred.tif"), "--labels", str(tmp_path / "truth.tif")]
    )
    assert result.exit_code == 0, result.output
    assert "error-adjusted" in result.output and "adjusted" in result.output
    assert "0.064" in result.output and "0.033" in result.output


def test_tables_are_never_cut_when_piped_or_narrow(tmp_path, monkeypatch):
    """Piped to a file, ``evaluate`` cut its area table to 80 columns (``mead…``): tables
    print whole where there is no terminal, and fold rather than cut where it is narrow."""
    import json

    from rich.console import Console

    from scratchsat.cli import views

    names = ["meadow with scattered hedgerows", "residential with gardens and streets"]
    tag = json.dumps(
        [{"code": c, "name": n, "colour": "#00ff00"} for c, n in zip((1, 2), names, strict=True)]
    )
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    for name in ("pred.tif", "truth.tif"):
        with rasterio.open(tmp_path / name, "r+") as dst:
            dst.update_tags(CLASSES=tag)
    monkeypatch.setenv("COLUMNS", "80")
    args = ["evaluate", str(tmp_path / "pred.tif"), "--labels", str(tmp_path / "truth.tif")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert all(result.output.count(name) == 2 for name in names), result.output  # both tables
    narrow = Console(width=60, record=True, force_terminal=True)
    views.show_scores(evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif"), narrow)
    shown = narrow.export_text()
    assert "…" not in shown and "hedgerows" in shown and "producer's" in shown


def test_a_mapped_class_without_labels_makes_the_intervals_unknown(tmp_path):
    pred = PRED.copy()
    pred[3, :] = 7  # a fourth row of a class the labels never see there
    truth = TRUTH.copy()
    truth[3, :] = 0
    write_raster(tmp_path / "pred.tif", pred, nodata=255)
    write_raster(tmp_path / "truth.tif", truth, nodata=0)
    area = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif")["area"]
    assert area["unsampled_map_classes"] == ["7"]
    assert all(c["estimated_ci95"] is None for c in area["classes"])


def test_nothing_to_score_is_refused_not_reported_as_nan(tmp_path):
    """A split without patches, or a map that is nodata over every label, scores nothing:
    evaluate says why and how to fix it instead of returning a report of empty scores."""
    from scratchsat import TileOptions, tile, write_scene

    scene = write_scene(tmp_path / "scene.tif", tmp_path / "labels.tif", width=64, height=64)
    tiles = tile(
        [scene.path],
        scene.labels_path,
        tmp_path / "tiles",
        options=TileOptions(patch_size=16, block_size=16, test=0.0),
    )
    assert json.loads((tiles / "dataset.json").read_text())["splits"]["test"] == 0
    with rasterio.open(scene.labels_path) as src:
        profile, codes = src.profile, src.read(1)
    profile.update(nodata=255)
    with rasterio.open(tmp_path / "pred.tif", "w", **profile) as dst:
        dst.write(np.where(codes == 0, 1, codes).astype(profile["dtype"]), 1)
    assert evaluate(tmp_path / "pred.tif", scene.labels_path, tiles=tiles, split="val")["pixels"]
    with pytest.raises(InputError, match=r"test split of .*tiles holds no patches.*--block-size"):
        evaluate(tmp_path / "pred.tif", scene.labels_path, tiles=tiles, split="test")
    with rasterio.open(tmp_path / "blank.tif", "w", **profile) as dst:
        dst.write(np.full(codes.shape, 255, profile["dtype"]), 1)
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "blank.tif"), "--labels", str(scene.labels_path)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "blank.tif" in result.output and "no labelled pixel" in result.output


def test_json_dash_is_standard_output(tmp_path, monkeypatch):
    """``--json -`` wrote a file named ``-``: it is standard output, which then holds the
    JSON alone (the table goes to stderr), as rio's commands do."""
    import subprocess
    import sys

    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    args = ["evaluate", str(tmp_path / "pred.tif"), "--labels", str(tmp_path / "truth.tif")]
    result = subprocess.run(
        [sys.executable, "-m", "scratchsat", *args, "--json", "-"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["confusion"] == [[5, 0], [2, 6]]
    assert "overall accuracy 0.846" in result.stderr
    assert not (tmp_path / "-").exists()
