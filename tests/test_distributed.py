"""Data-parallel training: two CPU processes with gloo under torchrun."""

import json
import subprocess
import sys

from conftest import torchrun

from scratchsat.bundle import load_bundle


def test_torchrun_two_processes_train_one_run(seg_tiles, tmp_path):
    out = tmp_path / "run"
    code, output = torchrun(
        "train", str(seg_tiles), "--out", str(out), "--epochs", "3", "--batch-size", "4",
        "--width", "8",
    )  # fmt: skip
    assert code == 0, output[-3000:]
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
    args = ["predict", str(small_run), *scenes]
    code, output = torchrun(*args, "--out", str(tmp_path / "two"))
    assert code == 0, output[-3000:]
    assert "4 scenes predicted by 2 processes" in output
    assert output.count("wrote ") == 4  # rank 0 alone speaks, of every scene
    single = subprocess.run(
        [sys.executable, "-m", "scratchsat", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    for i in range(4):
        with (
            rasterio.open(tmp_path / "two" / f"s{i}.tif") as a,
            rasterio.open(tmp_path / "one" / f"s{i}.tif") as b,
        ):
            assert (a.read() == b.read()).all() and a.transform == b.transform
    assert not list((tmp_path / "two").glob(".*"))


def agree_in_process(rank: int, port: int, results) -> None:
    import os
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from scratchsat.device import Ranks
    from scratchsat.training.budget import agreed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    run = SimpleNamespace(ranks=Ranks(rank, 2, rank), device=torch.device("cpu"))
    results[rank] = agreed(run, 1.0 + rank, 10.0 * (rank + 1))  # rank 1 measured slower
    dist.destroy_process_group()


def test_ranks_plan_a_time_budget_from_the_same_figures():
    # Each process times its own steps; planned apart, they would train different epochs and
    # hang at the first collective one of them skips. They plan from the mean.
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(agree_in_process, args=(port, results), nprocs=2)
    assert results[0] == results[1] == [1.5, 15.0]
