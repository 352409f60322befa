"""Decision offsets fitted on the validation split: the fit, and a trained bundle that holds
them in its output bias (so predict, TTA, ensembles and ONNX carry them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file

from scratchsat.bundle import load_bundle, weights_offsets
from scratchsat.errors import TrainingInterrupted
from scratchsat.training import offsets as offsets_module
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.offsets import (
    GRID,
    SHRINK,
    candidate_confusions,
    confusion_of,
    fit_offsets,
    metric_of,
    output_bias,
)

FAST = TrainConfig.of(epochs=3, batch_size=8, width=8, lr=3e-3)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=1)


def test_candidate_confusions_equal_the_argmax_of_each_offset():
    gen = torch.Generator().manual_seed(0)
    scores = log_probs(torch.randn(5000, 4, generator=gen) * 2)
    target = torch.randint(0, 4, (5000,), generator=gen)
    offsets = torch.tensor([0.3, -0.5, 0.0, 1.1])
    for c in range(4):
        fast = candidate_confusions(scores, target, offsets, c, GRID)
        for j, t in enumerate(GRID):
            trial = offsets.clone()
            trial[c] = t
            assert torch.equal(fast[j], confusion_of(scores, target, trial)), (c, float(t))


def test_metrics_match_the_scores_evaluate_reports():
    from scratchsat.metrics import scores

    confusion = torch.tensor([[50, 3, 0], [10, 5, 0], [0, 0, 0]])  # class 2 absent: no score
    expected = scores(confusion.numpy())
    assert float(metric_of("mean_iou")(confusion)) == pytest.approx(expected["mean_iou"])
    assert float(metric_of("macro_f1")(confusion)) == pytest.approx(expected["macro_f1"])


def test_an_under_predicted_class_gets_a_positive_offset(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (20000,), generator=gen)
    logits = torch.nn.functional.one_hot(target, 3).float() * 2.0 + torch.randn(
        20000, 3, generator=gen
    )
    logits[:, 2] -= 2.0  # class 2 decided against by a wrong prior
    scores = log_probs(logits)
    offsets, before, after = fit_offsets(scores, target, "mean_iou")
    assert after > before + 0.05
    assert offsets[2] - offsets[:2].mean() == pytest.approx(SHRINK * 2.0, abs=0.25)
    assert after == pytest.approx(
        float(metric_of("mean_iou")(confusion_of(scores, target, offsets)))
    )
    monkeypatch.setattr(offsets_module, "SHRINK", 1.0)  # the optimum itself
    full, _, best = fit_offsets(scores, target, "mean_iou")
    assert best > after
    assert full[2] - full[:2].mean() == pytest.approx(2.0, abs=0.5)
    pred = (scores + full).argmax(1)
    assert (pred == 2).float().mean() == pytest.approx(1 / 3, abs=0.05)


def test_offsets_stay_zero_where_nothing_gains_and_for_absent_classes():
    target = torch.tensor([0, 1, 0, 1, 1, 0] * 100)
    logits = torch.nn.functional.one_hot(target, 3).float() * 5.0  # perfect; class 2 absent
    offsets, before, after = fit_offsets(log_probs(logits), target, "mean_iou")
    assert before == after == 1.0
    assert torch.equal(offsets, torch.zeros(3))


def test_a_fixed_class_keeps_offset_zero():
    """A class validation holds too little of is left out of the fit (``fixed``), where it
    alone would have moved."""
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (20000,), generator=gen)
    logits = torch.nn.functional.one_hot(target, 3).float() * 2.0 + torch.randn(
        20000, 3, generator=gen
    )
    logits[:, 2] -= 2.0
    free, _, _ = fit_offsets(log_probs(logits), target, "mean_iou")
    held, before, after = fit_offsets(log_probs(logits), target, "mean_iou", fixed=frozenset({2}))
    assert free[2] - free[:2].mean() > 0.5
    assert held[2] == 0 and after >= before


def test_a_thin_validation_split_keeps_the_last_epoch_and_says_so(tmp_path):
    """Validation without (enough of) a class cannot pick an epoch or fit that class's
    offset: the run keeps its last epoch, no offset for the class, the log, report.json and
    report.html say so; where validation holds every class well, nothing changes."""
    from scratchsat.extras.synth import write_scene
    from scratchsat.tiles.tiling import TileOptions, tile

    s = write_scene(tmp_path / "s.tif", tmp_path / "l.tif", width=128, height=128, count=3)
    with rasterio.open(s.labels_path, "r+") as dst:  # class 4 only in the top-left 16 px
        labels = dst.read(1)
        labels[labels == 4] = 1
        labels[:16, :16] = 4
        dst.write(labels, 1)
    options = TileOptions(patch_size=16, block_size=16, seed=0)
    with pytest.warns(UserWarning):
        tiles = tile([s.path], s.labels_path, tmp_path / "t", options=options)
    lines: list[str] = []
    report = train(tiles, tmp_path / "run", FAST, log=lines.append)
    name = json.loads((tiles / "dataset.json").read_text())["classes"][3]["name"]
    thin = report["thin_validation"]
    assert thin[name] == 0 and all(count < 1000 for count in thin.values()), thin
    assert report["best_epoch"] == report["epochs_run"] == 3
    assert report["decision_offsets"]["offsets"][name] == 0.0
    said = [t for t in lines if t.startswith("validation holds less than 1,000 pixels of ")]
    assert len(said) == 1 and f"{name} (0 px)" in said[0] and "last epoch is kept" in said[0]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "validation too thin to pick one" in page


def test_output_bias_of_the_built_in_models():
    from scratchsat.models import build_model

    built = (("unet", "segmentation", 4), ("resnet18-unet", "segmentation", 2))
    built += (("resnet18", "classification", 3), ("simple", "classification", 5))
    for name, task, classes in built:
        model = build_model(name, in_channels=2, num_classes=classes, task=task, width=8)
        bias = output_bias(model, classes)
        assert bias is not None and bias.shape == (classes,)
        assert output_bias(model, classes + 1) is None
    own = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1))  # a model of your own: no offsets
    assert output_bias(own, 3) is None


@pytest.fixture(scope="module")
def pair(seg_tiles, tmp_path_factory):
    """The same seed trained with and without decision offsets."""
    folder = tmp_path_factory.mktemp("offsets")
    with_offsets = train(seg_tiles, folder / "with", FAST)
    without = train(
        seg_tiles, folder / "without", TrainConfig.of(**{**vars(FAST), "calibrate": False})
    )
    return folder, with_offsets, without


def test_the_bundle_holds_the_offsets_in_its_output_bias(pair):
    folder, report, plain = pair
    assert plain["decision_offsets"] is None
    fitted = report["decision_offsets"]
    assert fitted["metric"] == "mean_iou"
    assert fitted["val_after"] >= fitted["val_before"]
    offsets = list(fitted["offsets"].values())
    assert json.loads((folder / "with" / "model.json").read_text())["decision_offsets"] == offsets
    assert weights_offsets(folder / "with" / "model.safetensors") == offsets
    assert weights_offsets(folder / "without" / "model.safetensors") is None
    calibrated = load_file(str(folder / "with" / "model.safetensors"))
    uncalibrated = load_file(str(folder / "without" / "model.safetensors"))
    for name, tensor in calibrated.items():  # same seed, same weights but the output bias
        if name == "head.bias":
            assert torch.allclose(tensor - uncalibrated[name], torch.tensor(offsets), atol=1e-6)
        else:
            assert torch.equal(tensor, uncalibrated[name]), name
    # the report's validation scores are those of the saved, offset bundle
    assert report["val"]["mean_iou"] == pytest.approx(fitted["val_after"], abs=1e-9)
    assert plain["val"]["mean_iou"] == pytest.approx(fitted["val_before"], abs=1e-9)
    assert load_bundle(folder / "with").meta.decision_offsets == tuple(offsets)
    page = (folder / "with" / "report.html").read_text()
    moved = [f"{name} {v:+.2f}" for name, v in fitted["offsets"].items() if v]
    assert all(text in page for text in moved) and "decision offsets" in page


def test_a_bundle_whose_offsets_do_not_fit_its_classes_is_refused(pair, tmp_path):
    import shutil

    from scratchsat.errors import BundleError

    folder, _, _ = pair
    copy = shutil.copytree(folder / "with", tmp_path / "edited")
    meta = json.loads((copy / "model.json").read_text())
    meta["decision_offsets"] = meta["decision_offsets"][:-1]
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="decision_offsets holds 3 values for 4 classes"):
        load_bundle(copy)


def test_a_report_written_again_on_resume_fits_the_offsets_once(
    seg_tiles, tmp_path, pair, monkeypatch
):
    folder, report, _ = pair
    import scratchsat.training.loop as loop

    scored = loop.evaluate

    def stop_in_the_report(run, split, final=False):
        if final:
            raise KeyboardInterrupt  # after the offsets were fitted and saved
        return scored(run, split, final)

    monkeypatch.setattr(loop, "evaluate", stop_in_the_report)
    with pytest.raises(TrainingInterrupted):
        train(seg_tiles, tmp_path / "run", FAST)
    saved = weights_offsets(tmp_path / "run" / "model.safetensors")
    assert saved == list(report["decision_offsets"]["offsets"].values())
    monkeypatch.setattr(loop, "evaluate", scored)
    again = train(seg_tiles, tmp_path / "run", resume=True)
    assert again["decision_offsets"] == report["decision_offsets"]
    first = load_file(str(folder / "with" / "model.safetensors"))
    second = load_file(str(tmp_path / "run" / "model.safetensors"))
    for name in first:  # the output bias to rounding (offsets taken out, fitted, put back)
        assert torch.allclose(first[name], second[name], atol=1e-6, rtol=0), name


def test_classification_offsets_serve_macro_f1(cls_tiles, tmp_path):
    config = TrainConfig.of(epochs=2, batch_size=16, width=8)
    report = train(cls_tiles, tmp_path / "run", config)
    fitted = report["decision_offsets"]
    assert fitted["metric"] == "macro_f1"
    assert report["val"]["macro_f1"] == pytest.approx(fitted["val_after"], abs=1e-9)
    assert np.isfinite(list(fitted["offsets"].values())).all()


def test_info_and_the_dry_run_say_so(pair, seg_tiles, tmp_path):
    from typer.testing import CliRunner

    from scratchsat.cli import app

    folder, report, _ = pair
    runner = CliRunner()
    shown = runner.invoke(app, ["info", str(folder / "with"), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["decision_offsets"] == report["decision_offsets"]["offsets"]
    plain = runner.invoke(app, ["info", str(folder / "without")])
    line = next(t for t in plain.output.splitlines() if "decision offsets" in t)
    assert line.split()[-1] == "none", plain.output
    shown = runner.invoke(app, ["info", str(folder / "with")])
    line = next(t for t in shown.output.splitlines() if "decision offsets" in t)
    assert "fitted on validation" in line
    train_args = ["train", str(seg_tiles), "--out", str(tmp_path / "r"), "--dry-run"]
    dry = runner.invoke(app, [*train_args, "--width", "8"])
    assert dry.exit_code == 0, dry.output
    assert "decision offsets: fitted on the validation split" in dry.output
    off = runner.invoke(app, [*train_args, "--width", "8", "--no-calibrate"])
    assert off.exit_code == 0 and "decision offsets" not in off.output


def test_a_large_validation_split_is_thinned_for_the_fit(seg_tiles, tmp_path, monkeypatch):
    import scratchsat.training.offsets as calibration

    info = json.loads((seg_tiles / "dataset.json").read_text())
    k, patches = len(info["classes"]), info["splits"]["val"]
    labelled = sum(c["pixels_by_split"]["val"] for c in info["classes"])
    seen = []
    fit = calibration.fit_offsets

    def spy(scores, target, metric, reduce, fixed):
        seen.append(scores.shape)
        return fit(scores, target, metric, reduce, fixed)

    monkeypatch.setattr(calibration, "fit_offsets", spy)
    monkeypatch.setattr(calibration, "MAX_SCORES", patches * 32 * 32 * k // 4)  # every 4th pixel
    train(seg_tiles, tmp_path / "run", TrainConfig.of(epochs=1, batch_size=8, width=8))
    (shape,) = seen
    batches = -(-patches // 8)
    assert shape[1] == k
    assert labelled / 4 - batches <= shape[0] <= labelled / 4 + batches
