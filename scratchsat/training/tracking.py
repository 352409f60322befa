"""``train --log tensorboard`` / ``--log mlflow``: follow a run in the tools PyTorch users
already have. Each is an optional extra; asking for one that is not installed is an error
before anything is written, and nothing changes when none is asked for.

Both get the same things under the same names: the settings as hyper-parameters at the
start, every ``metrics.csv`` column as a scalar per epoch (``val/mean_iou``: validation during
training, before the decision offsets), and at the end the final scores
(:func:`final_scalars`: ``val_uncalibrated/…`` and ``val_calibrated/…``, before and with the
decision offsets, and ``test/…``) and the pictures (curves, confusion matrix,
``report.html``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..runfolder import RunFolder
from .report import Report

TRACKERS = {  # --log name → (module that must import, extra that installs it)
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
}


def check_trackers(names: Sequence[str]) -> None:
    """Refuse unknown names and trackers whose package is missing, naming the extra."""
    for name in names:
        if name not in TRACKERS:
            raise InputError(f"--log {name}: unknown; choose from {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise InputError(
                f"--log {name} needs the {module} package, which is not installed: "
                f"pip install 'scratchsat[{extra}]'"
            )


def hyper_parameters(run) -> dict[str, object]:
    """The run's settings, flat, as numbers, booleans or text."""
    config = asdict(run.config)
    flat = {**config.pop("model_settings", {}), **config}
    flat["tiles"] = " + ".join(map(str, run.tiles.folders))
    flat["model_name"] = run.model_config.name
    return {k: v if isinstance(v, (int, float, bool, str)) else str(v) for k, v in flat.items()}


def scalars(row: dict) -> dict[str, float]:
    """A ``metrics.csv`` row as scalars grouped for the tools' charts (``val/mean_iou``)."""
    out = {}
    for key, value in row.items():
        if key == "epoch" or value is None:
            continue
        group, _, rest = key.partition("_")
        out[f"{group}/{rest}" if group in ("train", "val") else key] = float(value)
    return out


SCORES = ("overall_accuracy", "mean_iou", "macro_f1")


def final_scalars(report: dict) -> dict[str, float]:
    """The run's final scores, named alike in every tracker: validation before the decision
    offsets (``val_uncalibrated/<metric>``, what the epochs logged) and with them
    (``val_calibrated/…``, as report.json gives it), and the test split's (``test/…``)."""
    record = Report.from_dict(report)
    out = {f"val_calibrated/{k}": record.val[k] for k in SCORES if record.val.get(k) is not None}
    offsets = record.decision_offsets
    if offsets:
        out[f"val_uncalibrated/{offsets['metric']}"] = offsets["val_before"]
    else:  # no offsets: one validation score
        out |= {k.replace("val_calibrated", "val_uncalibrated"): v for k, v in out.items()}
    if record.test:
        out |= {f"test/{k}": record.test[k] for k in SCORES if record.test.get(k) is not None}
    return {k: float(v) for k, v in out.items()}


class TensorBoard:
    """Event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``)."""

    def __init__(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.folder = run.files.tensorboard
        self.writer = SummaryWriter(str(self.folder))
        settings = hyper_parameters(run)
        metric = f"val/{'mean_iou' if run.tiles.task == 'segmentation' else 'macro_f1'}"
        events = self.writer.file_writer  # made by SummaryWriter's constructor
        assert events is not None
        for summary in hparams(settings, {metric: 0.0}):  # the HParams tab, in this same run
            events.add_summary(summary)
        self.writer.add_text("settings", "\n".join(f"    {k} = {v}" for k, v in settings.items()))

    def epoch(self, row: dict) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def finish(self, run, report: dict) -> None:
        import numpy as np
        from matplotlib.image import imread

        for tag, value in final_scalars(report).items():
            self.writer.add_scalar(tag, value, report["best_epoch"])
        for name in RunFolder.PICTURES:
            if (run.folder / name).exists():
                image = imread(run.folder / name)[..., :3]
                self.writer.add_image(
                    Path(name).stem, np.ascontiguousarray(image), dataformats="HWC"
                )
        self.close()

    def close(self, failed: bool = False) -> None:
        self.writer.close()


LOCAL_STORE = "mlruns.db"  # the default tracking store: SQLite, in the working folder
LOCAL_ARTIFACTS = "mlruns"  # and the artifacts beside it


def local_store() -> str:
    """``sqlite:///…/mlruns.db`` in the working folder: a store every MLflow client reads
    with no variable set (MLflow ≥ 3.7 reads a ``./mlruns`` file store only with
    ``MLFLOW_ALLOW_FILE_STORE=true``)."""
    return f"sqlite:///{Path(LOCAL_STORE).resolve()}"


class MLflow:
    """An MLflow run in the experiment ``scratchsat`` (or ``MLFLOW_EXPERIMENT_NAME``), tracked
    at ``MLFLOW_TRACKING_URI`` or else in :func:`local_store`, artifacts in ``./mlruns``."""

    def __init__(self, run) -> None:
        import logging

        import mlflow

        self.mlflow = mlflow
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database's INFO lines
        uri = os.environ.get("MLFLOW_TRACKING_URI") or local_store()
        mlflow.set_tracking_uri(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "scratchsat"
        if uri == local_store() and mlflow.get_experiment_by_name(name) is None:
            artifacts = Path(LOCAL_ARTIFACTS).resolve().as_uri()
            mlflow.create_experiment(name, artifact_location=artifacts)
        mlflow.set_experiment(name)
        self.active: object | None = mlflow.start_run(run_name=run.folder.resolve().name)
        mlflow.log_params(hyper_parameters(run))
        mlflow.set_tag("scratchsat.run_folder", str(run.folder.resolve()))

    def epoch(self, row: dict) -> None:
        self.mlflow.log_metrics(scalars(row), step=int(row["epoch"]))

    def finish(self, run, report: dict) -> None:
        self.mlflow.log_metrics(final_scalars(report), step=int(report["best_epoch"]))
        for name in (*RunFolder.PICTURES, RunFolder.PAGE, RunFolder.REPORT, RunFolder.MODEL_JSON):
            if (run.folder / name).exists():
                self.mlflow.log_artifact(str(run.folder / name))
        self.close()

    def close(self, failed: bool = False) -> None:
        if self.active is not None:
            self.mlflow.end_run(status="FAILED" if failed else "FINISHED")
            self.active = None


@contextlib.contextmanager
def trackers(run, names: Sequence[str]) -> Iterator[list]:
    """The asked-for trackers (rank 0 only); on an error or interruption each is closed as
    failed."""
    opened: list[TensorBoard | MLflow] = []
    if run.ranks.main:
        for name in names:
            try:
                opened.append(TensorBoard(run) if name == "tensorboard" else MLflow(run))
            except Exception as exc:  # a tracking server away, a store it refuses, …
                for tracker in opened:
                    tracker.close(failed=True)
                raise InputError(f"--log {name} could not start: {exc}") from None
    try:
        yield opened
    except BaseException:
        for tracker in opened:
            tracker.close(failed=True)
        raise
