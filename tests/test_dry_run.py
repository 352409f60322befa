"""--dry-run for tile, train and predict: the figures a real run would give, nothing written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from scratchsat import TileOptions, tile
from scratchsat.bundle import load_bundle
from scratchsat.cli import app
from scratchsat.prediction import PredictOptions, predict
from scratchsat.training.data import epoch_length
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.optim import class_weights

runner = CliRunner()


def test_tile_dry_run_tells_what_tile_writes(seg_tiles, tmp_path):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    scene, labels = info["sources"][0]["path"], info["labels"]["path"]
    options = TileOptions(patch_size=32, block_size=64)
    summary = tile([scene], labels, tmp_path / "t", options=options, dry_run=True)
    assert not (tmp_path / "t").exists() and list(tmp_path.iterdir()) == []
    assert summary["patches"] == info["patches"] and summary["windows"] == info["windows"]
    assert summary["splits"] == info["splits"]
    assert {k: v for k, v in summary["skipped"].items() if v} == {
        k: v for k, v in info["skipped"].items() if v
    }
    assert [c["pixels"] for c in summary["classes"]] == [c["pixels"] for c in info["classes"]]
    majority = [c["majority_patches"] for c in summary["classes"]]
    assert majority == [c["patches"] for c in info["classes"]]
    data = sum(np.load(seg_tiles / f"{n}.npy", mmap_mode="r").nbytes for n in ("images", "masks"))
    assert summary["store_bytes"] == data
    result = runner.invoke(
        app,
        [
            "tile",
            scene,
            "--labels",
            labels,
            "--patch-size",
            "32",
            "--block-size",
            "64",
            "--out",
            str(tmp_path / "t"),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0 and "nothing written" in result.output
    assert f"{info['patches']} patches kept" in result.output
    assert not (tmp_path / "t").exists()


def test_train_dry_run_measures_and_writes_nothing(seg_tiles, tmp_path):
    config = TrainConfig.of(epochs=4, batch_size=8, width=8)
    report = train(seg_tiles, tmp_path / "run", config, dry_run=True)
    assert list(tmp_path.iterdir()) == []  # no run folder, no lock
    info = json.loads((seg_tiles / "dataset.json").read_text())
    assert report["patches"] == info["splits"] and report["epochs"] == 4
    assert report["steps_per_epoch"] == epoch_length(info["splits"]["train"], 8, 16) // 8 == 16
    real = train(seg_tiles, tmp_path / "real", TrainConfig.of(epochs=1, batch_size=8, width=8))
    model = load_bundle(tmp_path / "real").model
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert report["step_s"] > 0 and report["estimated_s"] > report["epoch_s"] > 0
    assert report["memory_bytes"] > 0 and real["epochs_run"] == 1
    # the default weighting, sqrt-median, by class name in the dry run and in report.json
    counts = np.array([c["pixels_by_split"]["train"] for c in info["classes"]])
    expected = class_weights(counts, "sqrt-median")
    assert expected.max() > 1  # the synthetic classes are imbalanced: something to see
    for found in (report["class_weights"], real["class_weights"]):
        assert list(found) == [c["name"] for c in info["classes"]]
        np.testing.assert_allclose(list(found.values()), expected, atol=1e-4)
    unweighted = TrainConfig.of(epochs=1, batch_size=8, width=8, class_weights="none")
    assert train(seg_tiles, tmp_path / "run", unweighted, dry_run=True)["class_weights"] is None
    result = runner.invoke(
        app, ["train", str(seg_tiles), "--out", str(tmp_path / "cli"), "--dry-run", "--width", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "steps an epoch" in result.output
    rare = max(report["class_weights"], key=report["class_weights"].get)
    line = next(x for x in result.output.splitlines() if "class weights:" in x)
    assert f"{rare} {report['class_weights'][rare]:.2f}" in line
    assert not (tmp_path / "cli").exists()
    # 66 training patches in batches of 32: 2 batches a pass; --epoch-steps sets the floor.
    for steps, expected in (("1", "2 steps an epoch"), ("5", "5 steps an epoch")):
        args = ["--dry-run", "--width", "8", "--epoch-steps", steps]
        result = runner.invoke(app, ["train", str(seg_tiles), "--out", str(tmp_path / "c"), *args])
        assert result.exit_code == 0 and expected in result.output, result.output


def test_predict_dry_run_shows_band_matching_windows_and_sizes(small_run, seg_tiles, tmp_path):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    with rasterio.open(info["sources"][0]["path"]) as src:
        data, profile, names = src.read(), src.profile, src.descriptions
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(shuffled, "w", **profile) as dst:
        dst.write(data[::-1])
        dst.descriptions = names[::-1]
    report = predict(
        small_run, [shuffled], tmp_path / "m.tif", uncertainty=tmp_path / "u.tif", dry_run=True
    )
    [scene] = report["scenes"]
    assert scene["bands"][0].startswith(f"{names[0]} ← band {len(names)}")
    height, width = data.shape[1:]
    assert scene["outputs"] == {
        str(tmp_path / "m.tif"): width * height,
        str(tmp_path / "u.tif"): width * height * 12,
    }
    stride = round(32 * (1 - PredictOptions().overlap)) - 1  # made odd for the blend: 15
    per_axis = [len(range(0, n - 32, stride)) + 1 for n in (height, width)]
    assert scene["windows"] == per_axis[0] * per_axis[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shuffled.tif"]


def test_amp_is_warned_about_without_native_bf16_and_on_by_default_with_it(
    seg_tiles, tmp_path, monkeypatch
):
    # Emulated bf16 ran ~30x slower than fp32 here (AVX2); the user who asked gets it, told why.
    import torch

    from scratchsat import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(device.PrecisionWarning, match="without native bf16"):
        assert device.autocast_dtype(cpu, True) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.autocast_dtype(cpu, None, training=True) is None  # not on by default here
    result = runner.invoke(
        app,
        ["train", str(seg_tiles), "--out", str(tmp_path / "r"), "--dry-run", "--width", "8"]
        + ["--amp", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert "Warning: --amp on a CPU without native bf16" in result.output
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.autocast_dtype(cpu, True) == torch.bfloat16
        # On by default for training where bf16 is native, off for prediction unless asked.
        assert device.autocast_dtype(cpu, None, training=True) == torch.bfloat16
        assert device.autocast_dtype(cpu, None) is None
        assert device.autocast_dtype(cpu, False, training=True) is None
    base = ["train", str(seg_tiles), "--out", str(tmp_path / "r"), "--dry-run", "--width", "8"]
    for extra, precision in (([], "bfloat16"), (["--no-amp"], "float32")):
        result = runner.invoke(app, [*base, "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        assert f"on cpu in {precision};" in result.output


def test_training_length_follows_the_amount_of_data(seg_tiles, tmp_path):
    """Without --epochs: 30 epochs where an epoch is many steps, and on a small training split
    as many epochs as make 960 optimizer steps (30 epochs of 16 steps were 480 from random
    weights); --epochs wins, and the number trained is what model.json and --print-config
    (as the default) say."""
    from scratchsat.training.setup import MIN_STEPS

    info = json.loads((seg_tiles / "dataset.json").read_text())
    n = info["splits"]["train"]  # 66 patches
    small = train(seg_tiles, tmp_path / "a", TrainConfig.of(width=8), dry_run=True)
    assert small["steps_per_epoch"] == 16 and small["epochs"] == MIN_STEPS // 16 == 60
    many = TrainConfig.of(width=8, batch_size=2, epoch_steps=1)  # 33 steps an epoch
    assert train(seg_tiles, tmp_path / "b", many, dry_run=True)["epochs"] == 30
    few = TrainConfig.of(width=8, batch_size=4, epoch_steps=1)  # 16 steps: 60 epochs
    expected = -(-MIN_STEPS // (n // 4))
    assert train(seg_tiles, tmp_path / "c", few, dry_run=True)["epochs"] == expected
    given = TrainConfig.of(width=8, epochs=3)
    assert train(seg_tiles, tmp_path / "d", given, dry_run=True)["epochs"] == 3
    args = ["train", str(seg_tiles), "--out", str(tmp_path / "e"), "--print-config"]
    shown = runner.invoke(app, args)  # the default is the rule, not a number to pin
    assert shown.exit_code == 0 and "\nepochs =" not in shown.output, shown.output
    pinned = runner.invoke(app, [*args, "--epochs", "7"])
    assert "\nepochs = 7\n" in pinned.output
