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
