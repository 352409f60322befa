"""Training end to end on CPU: it learns, replays, resumes, stops cleanly and refuses bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scratchsat.bundle import load_bundle
from scratchsat.device import cpu_has_native_bf16
from scratchsat.errors import (
    BundleError,
    DatasetError,
    DivergedError,
    InputError,
    OutputExistsError,
    TrainingInterrupted,
)
from scratchsat.training.data import PatchDataset
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.optim import class_weights, lr_factor

FAST = TrainConfig.of(epochs=8, batch_size=8, width=8, lr=3e-3)


def val_columns(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [
            {k: v for k, v in row.items() if k.startswith(("val_", "train_loss"))}
            for row in csv.DictReader(f)
        ]


def test_a_small_unet_learns_the_synthetic_classes(trained, seg_tiles):
    run, report = trained
    info = json.loads((seg_tiles / "dataset.json").read_text())
    val_pixels = [c["pixels_by_split"]["val"] for c in info["classes"]]
    majority = max(val_pixels) / sum(val_pixels)  # what "always the commonest class" scores
    assert majority < 0.5
    assert report["val"]["overall_accuracy"] > 0.85
    assert report["val"]["mean_iou"] > 0.7
    assert report["test"]["overall_accuracy"] > 0.8
    assert sum(c["support"] for c in report["val"]["classes"]) == sum(val_pixels)


def test_the_run_folder_holds_bundle_metrics_report_and_pictures(trained, seg_tiles):
    run, report = trained
    for name in (
        "model.json",
        "model.safetensors",
        "last.safetensors",
        "checkpoint.pt",
        "metrics.csv",
        "report.json",
        "curves.png",
        "confusion.png",
    ):
        assert (run / name).stat().st_size > 0, name
    assert not list(run.glob(".*part"))
    meta = json.loads((run / "model.json").read_text())
    info = json.loads((seg_tiles / "dataset.json").read_text())
    assert meta["format"] == "scratchsat-model" and meta["task"] == "segmentation"
    assert meta["model"]["name"] == "unet" and meta["model"]["in_channels"] == 6
    assert meta["bands"] == info["bands"] and meta["nodata"] == info["nodata"]
    assert [c["code"] for c in meta["classes"]] == [c["code"] for c in info["classes"]]
    assert meta["patch_size"] == 32 and meta["training"]["epochs"] == 8
    assert meta["data"]["hash"].startswith("blake2b:") and meta["epoch"] == report["best_epoch"]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    columns = {"val_mean_iou", "val_iou_water", "val_iou_built-up", "lr", "samples_per_s"}
    assert columns <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for png in ("curves.png", "confusion.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "report.json").read_text())
    assert saved["val"]["confusion"] == report["val"]["confusion"]
    assert set(saved) >= {"best_epoch", "val", "test", "metric", "epochs_run"}
    # Trained in bf16 where the CPU has it natively; scored as predict runs by default.
    assert saved["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert saved["scored_in"] == "float32"


def test_the_bundle_reloads_to_the_same_predictions(trained, seg_tiles):
    run, report = trained
    bundle = load_bundle(run)
    x, y = next(iter(torch.utils.data.DataLoader(PatchDataset(seg_tiles, "val"), batch_size=64)))
    with torch.no_grad():
        pred = bundle.model(x).argmax(1)
    keep = y != 255
    accuracy = (pred[keep] == y[keep]).float().mean().item()
    assert accuracy == pytest.approx(report["val"]["overall_accuracy"], abs=1e-6)
    assert load_bundle(run / "model.json").meta == bundle.meta
    weights = load_file(str(run / "model.safetensors"))
    assert set(weights) == set(bundle.model.state_dict())


def test_bundle_errors(tmp_path, trained):
    with pytest.raises(BundleError, match="no model bundle at"):
        load_bundle(tmp_path)
    shutil.copy(trained[0] / "model.json", tmp_path / "model.json")
    with pytest.raises(BundleError, match="model.safetensors is missing"):
        load_bundle(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "other"}')
    with pytest.raises(BundleError, match="not a scratchsat model.json"):
        load_bundle(tmp_path)


def test_same_seed_same_metrics_on_cpu(seg_tiles, tmp_path):
    config = TrainConfig.of(epochs=2, batch_size=8, width=8, aug="geo")
    train(seg_tiles, tmp_path / "a", config)
    train(seg_tiles, tmp_path / "b", config)
    train(seg_tiles, tmp_path / "c", TrainConfig.of(**{**config.__dict__, "seed": 1}))
    assert val_columns(tmp_path / "a") == val_columns(tmp_path / "b")
    assert val_columns(tmp_path / "a") != val_columns(tmp_path / "c")


@pytest.mark.parametrize("batch_augment", [False, True])  # True: raw batches, d4 per batch
def test_ctrl_c_saves_a_checkpoint_and_resume_continues_the_same_schedule(
    seg_tiles, tmp_path, batch_augment
):
    config = TrainConfig.of(epochs=3, batch_size=8, width=8, batch_augment=batch_augment)
    train(seg_tiles, tmp_path / "straight", config)

    def interrupt(done, total, epoch, **fields):
        if epoch == 2 and done == 5:
            raise KeyboardInterrupt

    import scratchsat.training.loop as train_module

    refresh = train_module.REFRESH_STEPS
    train_module.REFRESH_STEPS = 1  # call the progress callback at every step
    try:
        with pytest.raises(TrainingInterrupted, match="epoch 2, step 5"):
            train(seg_tiles, tmp_path / "stopped", config, progress=interrupt)
    finally:
        train_module.REFRESH_STEPS = refresh
    assert len(val_columns(tmp_path / "stopped")) == 1  # epoch 1 finished before the stop
    with pytest.raises(OutputExistsError, match="--resume to continue it"):
        train(seg_tiles, tmp_path / "stopped", config)
    report = train(seg_tiles, tmp_path / "stopped", resume=True)
    assert val_columns(tmp_path / "stopped") == val_columns(tmp_path / "straight")
    assert report["best_epoch"] >= 1


def test_a_diverging_loss_stops_with_a_clear_error(seg_tiles, tmp_path):
    config = TrainConfig.of(
        epochs=2, batch_size=8, width=8, optimizer="sgd", lr=1e12, schedule="none", norm="none"
    )
    with pytest.raises(
        DivergedError,
        match=r"NaN or infinite at epoch 1, step \d+; the last "
        r"good checkpoint \(none yet\)",
    ):
        train(seg_tiles, tmp_path / "run", config)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_classification_tiles_train_a_classifier(cls_tiles, tmp_path):
    report = train(
        cls_tiles,
        tmp_path / "run",
        TrainConfig.of(model="simple", epochs=5, batch_size=16, width=8),
    )
    labels = np.load(cls_tiles / "labels.npy")[PatchDataset(cls_tiles, "val").indices]
    majority = np.bincount(labels).max() / len(labels)
    assert report["metric"] == "macro_f1"
    assert report["val"]["overall_accuracy"] > max(0.8, majority + 0.3)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["task"] == "classification" and meta["model"]["name"] == "simple"


@pytest.mark.parametrize("weighting", ["inverse", "sqrt-inverse"])
def test_class_weighting_and_label_smoothing_train(seg_tiles, tmp_path, weighting):
    config = TrainConfig.of(
        epochs=1,
        batch_size=8,
        width=8,
        class_weights=weighting,
        label_smoothing=0.1,
        schedule="cosine",
        optimizer="sgd",
        lr=0.05,
    )
    report = train(seg_tiles, tmp_path / "run", config)
    assert np.isfinite(report["val"]["loss"])


def test_early_stopping(seg_tiles, tmp_path):
    """With a learning rate of ~0 nothing improves after epoch 1, so patience 1 stops at 2
    (without weight averaging, whose BatchNorm statistics would still move; and with one pass
    an epoch: BatchNorm's running statistics move whatever the learning rate, and with the
    default 16 steps an epoch they lifted the score for two more epochs)."""
    config = TrainConfig.of(
        epochs=6,
        batch_size=8,
        width=8,
        lr=1e-12,
        schedule="none",
        patience=1,
        ema=False,
        epoch_steps=1,
    )
    report = train(seg_tiles, tmp_path / "run", config)
    assert report["stopped_early"] and report["epochs_run"] == 2 and report["best_epoch"] == 1


def test_errors_name_the_problem_and_write_nothing(seg_tiles, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match="does not exist; make one with `scratchsat tile"):
        train(tmp_path / "missing", out, FAST)
    with pytest.raises(InputError, match="unknown model 'vgg'; known models: simple, resnet18"):
        train(seg_tiles, out, TrainConfig.of(model="vgg"))
    with pytest.raises(
        InputError,
        match="resnet18 is a classification model but .* holds "
        "segmentation tiles; choose one of unet",
    ):
        train(seg_tiles, out, TrainConfig.of(model="resnet18"))
    with pytest.raises(InputError, match="unknown optimizer 'adam'; choose one of adamw, sgd"):
        train(seg_tiles, out, TrainConfig.of(optimizer="adam"))
    with pytest.raises(InputError, match="unknown schedule 'step'; choose one of onecycle"):
        train(seg_tiles, out, TrainConfig.of(schedule="step"))
    with pytest.raises(InputError, match="unknown augmentation 'rgb'"):
        train(seg_tiles, out, TrainConfig.of(aug="rgb"))
    with pytest.raises(InputError, match="--epochs must be at least 1, not 0"):
        train(seg_tiles, out, TrainConfig.of(epochs=0))
    with pytest.raises(InputError, match="--epoch-steps must be at least 1, not 0"):
        train(seg_tiles, out, TrainConfig.of(epoch_steps=0))
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        train(seg_tiles, out, TrainConfig.of(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="PyTorch sees no CUDA GPU"):
            train(seg_tiles, out, TrainConfig.of(device="cuda"))
    with pytest.raises(InputError, match="nothing to resume: .*checkpoint.pt does not exist"):
        train(seg_tiles, out, resume=True)
    assert not out.exists()


def test_tiles_without_validation_patches_are_refused(tmp_path):
    from scratchsat import TileOptions, tile, write_scene

    scene = write_scene(tmp_path / "s.tif", tmp_path / "l.tif", width=64, height=64, count=3)
    tiles = tile(
        [scene.path],
        scene.labels_path,
        tmp_path / "tiles",
        options=TileOptions(patch_size=32, block_size=64),  # one block: all train
    )
    with pytest.raises(
        DatasetError,
        match=r"has no validation patches \(train 4, val 0, test 0\)"
        "; tile again with a larger --val",
    ):
        train(tiles, tmp_path / "run", FAST)


def test_resume_refuses_changed_tiles(seg_tiles, tmp_path):
    tiles = tmp_path / "tiles"
    shutil.copytree(seg_tiles, tiles)
    train(tiles, tmp_path / "run", TrainConfig.of(epochs=2, batch_size=8, width=8))
    images = np.load(tiles / "images.npy", mmap_mode="r+")
    images[0, 0, 0, 0] += 1
    images.flush()
    del images
    with pytest.raises(InputError, match="changed since the run in .* started"):
        train(tiles, tmp_path / "run", resume=True)


def test_existing_runs_need_overwrite(trained, seg_tiles, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    with pytest.raises(OutputExistsError, match="already holds a training run .*pass --overwrite"):
        train(seg_tiles, out, FAST)
    (out / "notes.txt").write_text("mine")
    train(seg_tiles, out, TrainConfig.of(epochs=1, batch_size=8, width=8), overwrite=True)
    assert len(val_columns(out)) == 1 and (out / "notes.txt").read_text() == "mine"


def test_schedules_and_class_weights():
    assert lr_factor("onecycle", 0, 100) == pytest.approx(1 / 25)
    assert lr_factor("onecycle", 30, 100) == pytest.approx(1.0)
    assert lr_factor("onecycle", 100, 100) == pytest.approx(1 / 25e4)
    assert lr_factor("cosine", 50, 100) < 1 and lr_factor("cosine", 5, 100) == pytest.approx(1.0)
    assert lr_factor("none", 77, 100) == 1.0
    np.testing.assert_allclose(class_weights(np.array([100, 300, 0]), "inverse"), [1.5, 0.5, 0.0])
    weights = class_weights(np.array([100, 400]), "sqrt-inverse")
    np.testing.assert_allclose(weights[0] / weights[1], 2.0)
    assert class_weights(np.array([1, 2]), "none") is None
    # sqrt-median: classes rarer than the median count are raised by √(median / n), the rest 1
    np.testing.assert_allclose(
        class_weights(np.array([400, 100, 0, 25, 900, 1600]), "sqrt-median"), [1, 2, 0, 4, 1, 1]
    )
    np.testing.assert_allclose(  # binary: the median is the mean of the two counts
        class_weights(np.array([9_900, 100]), "sqrt-median"), [1, np.sqrt(50)], rtol=1e-6
    )
    np.testing.assert_array_equal(class_weights(np.array([50, 50, 50]), "sqrt-median"), 1.0)


def test_ctrl_c_during_validation_resumes_from_the_epochs_start(seg_tiles, tmp_path, monkeypatch):
    import scratchsat.training.loop as training

    real = training.evaluate
    calls = []

    def interrupted(run, split):
        calls.append(split)
        if len(calls) == 2:  # validation after epoch 2
            raise KeyboardInterrupt
        return real(run, split)

    monkeypatch.setattr(training, "evaluate", interrupted)
    config = TrainConfig.of(epochs=3, batch_size=8, width=8)
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 0"):
        train(seg_tiles, tmp_path / "run", config)
    monkeypatch.setattr(training, "evaluate", real)
    assert len(val_columns(tmp_path / "run")) == 1
    train(seg_tiles, tmp_path / "run", resume=True)
    train(seg_tiles, tmp_path / "straight", config)
    assert val_columns(tmp_path / "run") == val_columns(tmp_path / "straight")


def test_progress_starts_at_the_first_step_and_refreshes_every_second(
    seg_tiles, tmp_path, monkeypatch
):
    """A tmux capture 50 s into an 86 s epoch showed no bar: progress came every 10 steps
    only. It comes at an epoch's first step, and whenever a second has passed since the last."""
    import itertools
    from types import SimpleNamespace

    from scratchsat.training import loop

    steps: list[int] = []
    config = TrainConfig.of(epochs=1, batch_size=8, width=8)
    train(seg_tiles, tmp_path / "a", config, progress=lambda done, total, **f: steps.append(done))
    assert steps[0] == 1 and steps[1] == loop.REFRESH_STEPS, steps
    total = steps[-1]
    ticks = itertools.count(0.0, 2.0)  # two seconds pass between any two clock readings
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    steps.clear()
    train(seg_tiles, tmp_path / "b", config, progress=lambda done, total, **f: steps.append(done))
    assert steps == list(range(1, total + 1))
