"""Data-parallel training: two CPU processes with gloo under torchrun."""

import json
import subprocess
import sys

from scratchsat.bundle import load_bundle


def test_torchrun_two_processes_train_one_run(seg_tiles, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "scratchsat",
            "train",
            str(seg_tiles),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--width",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("epoch   1/3") == 1 and output.count("best epoch") == 1  # rank 0 only
    info = json.loads((seg_tiles / "dataset.json").read_text())
    report = json.loads((out / "report.json").read_text())
    # Each process scored half the validation patches; the sums cover all of them once.
    val_pixels = sum(c["pixels_by_split"]["val"] for c in info["classes"])
    assert sum(c["support"] for c in report["val"]["classes"]) == val_pixels
    assert report["val"]["overall_accuracy"] > 0.4  # 4 classes, 3 short epochs
    assert len((out / "metrics.csv").read_text().splitlines()) == 4
    bundle = load_bundle(out)
    assert not any(k.startswith("module.") for k in bundle.model.state_dict())
    assert not list(out.glob(".*part"))


def test_torchrun_two_processes_deal_out_the_scenes(small_run, seg_tiles, tmp_path):
    """Four scenes, two CPU processes: each predicts two, rank 0 reports all four, and the
    maps equal those of one process."""
    import numpy as np
    import rasterio
    from conftest import write_raster

    info = json.loads((seg_tiles / "dataset.json").read_text())
    with rasterio.open(info["sources"][0]["path"]) as src:
        data, profile, names = src.read(), src.profile, src.descriptions
    scenes = []
    for i in range(4):
        path = tmp_path / f"s{i}.tif"
        part = np.roll(data, 37 * i, axis=2)[:, : 96 + 16 * i]
        write_raster(path, part, nodata=profile["nodata"], descriptions=names)
        scenes.append(str(path))
    args = ["-m", "scratchsat", "predict", str(small_run), *scenes]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        + args
        + ["--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "4 scenes predicted by 2 processes" in output
    assert output.count("wrote ") == 4  # rank 0 alone speaks, of every scene
    single = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-2000:]
    for i in range(4):
        with (
            rasterio.open(tmp_path / "two" / f"s{i}.tif") as a,
            rasterio.open(tmp_path / "one" / f"s{i}.tif") as b,
        ):
            assert (a.read() == b.read()).all() and a.transform == b.transform
    assert not list((tmp_path / "two").glob(".*"))
