"""`scratchsat demo` runs the whole flow; `scratchsat info` describes what it left."""

import json
import re

import pytest
from conftest import write_raster, write_with_alpha
from typer.testing import CliRunner

from scratchsat.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo", "--out", str(out), "--epochs", "6"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_trains_predicts_and_scores_an_unseen_scene(demo_folder):
    out, output = demo_folder
    accuracy = float(re.search(r"Unseen scene: overall accuracy ([\d.]+)", output).group(1))
    assert accuracy > 0.8  # four classes; an untrained or broken pipeline scores ≈ 0.3
    scores = json.loads((out / "unseen_scores.json").read_text())
    assert scores["overall_accuracy"] == pytest.approx(accuracy, abs=1e-3)
    for name in (
        "scene.tif",
        "unseen.tif",
        "unseen_prediction.tif",
        "unseen_quicklook.png",
        "scene_quicklook.png",
        "run/curves.png",
        "run/confusion.png",
        "run/model.json",
        "tiles/dataset.json",
        "unseen_prediction.qml",
    ):
        assert (out / name).exists(), name
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert [c["name"] for c in scores["classes"]] == [
        "water",
        "vegetation",
        "bare soil",
        "built-up",
    ]
    again = runner.invoke(app, ["demo", "--out", str(out)])
    assert again.exit_code == 1 and "holds an earlier demo; pass --overwrite" in again.output


def test_info_on_a_raster_tiles_and_a_model(demo_folder):
    out, _ = demo_folder
    raster = runner.invoke(app, ["info", str(out / "scene.tif")])
    assert raster.exit_code == 0, raster.output
    assert "512 × 512 px, 13 bands of uint16" in raster.output and "EPSG:32633" in raster.output
    assert "B8A" in raster.output
    tiles = runner.invoke(app, ["info", str(out / "tiles")])
    assert "segmentation" in tiles.output and "bare soil" in tiles.output
    model = runner.invoke(app, ["info", str(out / "run")])
    assert model.exit_code == 0, model.output
    assert "unet for segmentation" in model.output and "parameters" in model.output
    described = json.loads(runner.invoke(app, ["info", "--json", str(out / "run")]).output)
    assert described["kind"] == "model" and described["parameters"] > 10_000
    assert described["scores"]["test"]["overall_accuracy"] > 0.5
    described = json.loads(
        runner.invoke(app, ["info", "--json", str(out / "unseen_prediction.tif")]).output
    )
    assert described["classes"][0]["name"] == "water"


def test_info_errors(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "without dataset.json or model.json" in result.output
    result = runner.invoke(app, ["info", str(tmp_path / "none.tif")])
    assert result.exit_code == 1 and "none.tif: no such file" in result.output
    import numpy as np

    write_raster(tmp_path / "tiny.tif", np.arange(12, dtype=np.uint8).reshape(3, 4), nodata=0)
    result = runner.invoke(app, ["info", "--json", str(tmp_path / "tiny.tif")])
    described = json.loads(result.output)
    assert described["bands"][0]["min"] == 1 and described["bands"][0]["max"] == 11
    assert described["valid_fraction"] == pytest.approx(11 / 12)


def test_info_reads_an_alpha_band_as_the_mask(tmp_path):
    import numpy as np

    data = np.full((3, 10, 10), 40, np.uint16)
    data[:, :, :4] = 9000  # under alpha 0: not data
    valid = np.ones((10, 10), bool)
    valid[:, :4] = False
    write_with_alpha(tmp_path / "rgba.tif", data, valid)
    result = runner.invoke(app, ["info", str(tmp_path / "rgba.tif")])
    assert result.exit_code == 0, result.output
    assert "4 bands of uint16 (band 4: alpha, the mask)" in result.output
    assert "60.0% of pixels" in result.output
    described = json.loads(
        runner.invoke(app, ["info", "--json", str(tmp_path / "rgba.tif")]).output
    )
    assert [b["index"] for b in described["bands"]] == [1, 2, 3]
    assert described["alpha_bands"] == [4] and described["mask_band"] is True
    assert all(b["max"] == 40 for b in described["bands"])  # masked pixels left out


def test_quicklooks_leave_masked_pixels_white(tmp_path):
    import numpy as np

    from scratchsat.extras.pictures import quicklook_rgb

    rng = np.random.default_rng(0)
    data = rng.integers(100, 200, (3, 10, 10)).astype(np.uint16)
    valid = np.ones((10, 10), bool)
    valid[:, :4] = False
    write_with_alpha(tmp_path / "rgba.tif", data, valid)
    rgb, what = quicklook_rgb(tmp_path / "rgba.tif")
    assert what == "bands B1, B2, B3" and rgb.shape == (10, 10, 3)
    assert (rgb[:, :4] == 1.0).all() and (rgb[:, 4:] < 1.0).any()


@pytest.mark.parametrize("text", ["not json", "{}", '{"val": 3}'])
def test_info_of_a_run_with_a_damaged_report(small_run, tmp_path, text):
    """``report.json`` is read by its typed record: a damaged one is an Error naming it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "report.json").write_text(text)
    result = runner.invoke(app, ["info", str(run)])
    assert result.exit_code == 1 and "report.json" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "crs, res, origin, shown",
    [
        ("EPSG:32633", 10.0, (399_960.0, 5_800_020.0), "north 5,800,020"),  # 10 m: metres
        ("EPSG:32633", 0.1, (399_960.25, 5_800_020.75), "north 5,800,020.75"),  # 0.1 m
        ("EPSG:4326", 0.0001, (13.40512, 52.52003), "north 52.52003"),  # degrees
    ],
)
def test_info_prints_bounds_as_coordinates(tmp_path, crs, res, origin, shown):
    """Bounds printed as ``5.81436e+06`` lost metres: they read as coordinates, to a
    tenth of a pixel or so."""
    import numpy as np

    path = write_raster(
        tmp_path / "s.tif", np.ones((1, 8, 8), "uint16"), crs=crs, res=res, origin=origin
    )
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert shown in result.output and "e+0" not in result.output, result.output
