"""train --log tensorboard / mlflow: what the tools get, read back with their own readers."""

from __future__ import annotations

import json
import os
import sys

import pytest
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import InputError
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.tracking import check_trackers

runner = CliRunner()
FINAL = ("val_calibrated/", "val_uncalibrated/", "test/")  # the end of a run, in every tracker


def final_scalars(report: dict) -> dict[str, float]:
    """What each tracker must show at the end, from report.json: validation before and with
    the decision offsets, and test, under the same names."""
    fitted = report["decision_offsets"]
    out = {
        f"val_calibrated/{k}": report["val"][k]
        for k in ("overall_accuracy", "mean_iou", "macro_f1")
    }
    out[f"val_uncalibrated/{fitted['metric']}"] = fitted["val_before"]
    out |= {f"test/{k}": report["test"][k] for k in ("overall_accuracy", "mean_iou", "macro_f1")}
    return out


def test_tensorboard_events_hold_every_epoch_and_the_pictures(seg_tiles, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(seg_tiles, run, TrainConfig.of(epochs=2, batch_size=8, width=8), trackers=["tensorboard"])
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    metrics = (run / "metrics.csv").read_text().splitlines()
    header, rows = metrics[0].split(","), [line.split(",") for line in metrics[1:]]
    for column in ("train_loss", "val_loss", "val_mean_iou", "lr"):
        tag = column.replace("train_", "train/").replace("val_", "val/")
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx(
            [float(r[header.index(column)]) for r in rows], rel=1e-6
        )
    report = json.loads((run / "report.json").read_text())
    assert events.Scalars("test/mean_iou")[0].value == pytest.approx(report["test"]["mean_iou"])
    final = {t: events.Scalars(t)[0].value for t in tags["scalars"] if t.startswith(FINAL)}
    assert final == pytest.approx(final_scalars(report))
    assert set(tags["images"]) == {"curves", "confusion"}
    assert "settings/text_summary" in tags["tensors"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    settings = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert settings["batch_size"].number_value == 8 and settings["width"].number_value == 8
    assert settings["optimizer"].string_value == "adamw"


def test_mlflow_run_has_params_metrics_and_artifacts(seg_tiles, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # the default store: ./mlruns.db, artifacts in ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            "run",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--width",
            "8",
            "--log",
            "mlflow",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Updating database tables" not in result.output
    # a store any MLflow client reads with no variable set (a ./mlruns file store needs
    # MLFLOW_ALLOW_FILE_STORE=true from MLflow 3.7 on; scratchsat had set it for itself only)
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("scratchsat")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["batch_size"] == "8" and found.data.params["width"] == "8"
    history = client.get_metric_history(found.info.run_id, "val/mean_iou")  # as TensorBoard
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    column = metrics[0].split(",").index("val_mean_iou")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(
        [float(line.split(",")[column]) for line in metrics[1:]]
    )
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    final = {k: v for k, v in found.data.metrics.items() if k.startswith(FINAL)}
    assert final == pytest.approx(final_scalars(report))
    assert (tmp_path / "mlruns").is_dir()  # the artifacts, beside the store
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"curves.png", "confusion.png", "report.html", "model.json"} <= artifacts


def test_unknown_or_missing_trackers_are_refused_before_anything(seg_tiles, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="--log wandb: unknown; choose from tensorboard, mlflow"):
        check_trackers(["wandb"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "mlflow" else 1)
    result = runner.invoke(
        app, ["train", str(seg_tiles), "--out", str(tmp_path / "run"), "--log", "mlflow"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pip install 'scratchsat[mlflow]'" in result.output
    assert not (tmp_path / "run").exists()
