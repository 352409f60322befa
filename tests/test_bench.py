"""`scratchsat bench` runs every benchmark and reports each beside its bound (tiny sizes here;
the real figures come from `scratchsat bench --quick` or the full run, never from tests)."""

import json

import numpy as np
import rasterio
from conftest import write_raster
from typer.testing import CliRunner

import scratchsat.bench as bench
from scratchsat.cli import app

runner = CliRunner()
TINY = {
    "scene": 256,
    "load_patch": 64,
    "train_scene": 256,
    "epochs": 1,
    "steps": 1,
    "resnet_batch": 4,
    "unet_patch": 32,
    "unet_batch": 4,
}


def test_bench_prints_a_table_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", TINY)
    mine = write_raster(
        tmp_path / "mine.tif",
        np.ones((3, 200, 130), np.float32),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app, ["bench", "--quick", "--device", "cpu", "--json", str(out), "--tile-scene", str(mine)]
    )
    assert result.exit_code == 0, result.output
    for text in (
        "full read",
        "raw slices",
        "model only",
        "classic fp32 loop",
        "Mpx/s",
        "cores",
        "tile synthetic",
        "tile mine.tif",
    ):
        assert text in result.output, result.output
    figures = json.loads(out.read_text())
    assert figures["hardware"]["device"] == "cpu" and figures["hardware"]["cores"] >= 1
    assert figures["tile"]["ratio"] > 0 and figures["tile"]["patches"] == 16
    # The user's scene: 64 px patches over 130 × 200 px, inward edge windows: 3 × 4 windows.
    mine_figures = figures["tile_scene"]
    assert mine_figures["patches"] == 12 and mine_figures["scene"] == str(mine)
    assert mine_figures["megabytes"] == 3 * 200 * 130 * 4 / 1e6 and mine_figures["ratio"] > 0
    assert set(figures["load"]["patches_per_s"]) >= {"raw slices", "dataset, no augmentation"}
    assert [t["model"] for t in figures["train"]] == ["resnet18", "unet"]
    assert all(t["end_to_end"] > 0 and t["model_only"] > 0 for t in figures["train"])
    p = figures["predict"]
    assert p["scene"] == [256, 256] and p["end_to_end_mpx_s"] > 0 and p["read_mpx_s"] > 0
    again = runner.invoke(app, ["bench", "--quick", "--json", str(out)])
    assert again.exit_code == 1 and "exists already; pass --overwrite" in again.output


def test_bench_refuses_a_tile_scene_without_crs_up_front(tmp_path):
    plain = tmp_path / "plain.tif"
    with rasterio.open(
        plain, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    result = runner.invoke(app, ["bench", "--quick", "--tile-scene", str(plain)])
    assert result.exit_code == 1
    assert "plain.tif: has no CRS; tile needs a georeferenced scene" in result.output
    assert "Traceback" not in result.output


def test_bench_only_some_steps(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", TINY)
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--quick", "--only", "tile", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["tile"]["patches"] == 16
    assert not {"load", "train", "predict"} & set(figures)
    assert "full read" in result.output and "model only" not in result.output
    wrong = runner.invoke(app, ["bench", "--only", "tile,fly"])
    assert wrong.exit_code == 1 and "Traceback" not in wrong.output
    assert (
        "--only 'tile,fly': unknown step 'fly'; name one or more of tile, load, train, "
        "predict, separated by commas"
    ) in " ".join(wrong.output.split())
