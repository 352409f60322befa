"""``train --log tensorboard`` / ``--log mlflow``: follow a run in the tools PyTorch users
already have. Each is an optional extra; asking for one that is not installed is an error
before anything is written, and nothing changes when none is asked for.

Both get the same things: the settings as hyper-parameters at the start, every ``metrics.csv``
column as a scalar per epoch, and at the end the test scores and the pictures (curves,
confusion matrix, ``report.html``)."""

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

        record = Report.from_dict(report)
        final, split = record.final, record.final_split
        for key in ("overall_accuracy", "mean_iou", "macro_f1"):
            if final.get(key) is not None:
                self.writer.add_scalar(f"{split}/{key}", final[key], report["best_epoch"])
        for name in RunFolder.PICTURES:
            if (run.folder / name).exists():
                image = imread(run.folder / name)[..., :3]
                self.writer.add_image(
                    Path(name).stem, np.ascontiguousarray(image), dataformats="HWC"
                )
        self.close()

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MLflow:
    """An MLflow run in the experiment ``scratchsat`` (or ``MLFLOW_EXPERIMENT_NAME``), tracked
    at ``MLFLOW_TRACKING_URI`` or else in ``./mlruns``."""

    def __init__(self, run) -> None:
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow's file store, which MLflow ≥ 3.7 wants to be asked for
            uri = Path("mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "scratchsat")
        self.active: object | None = mlflow.start_run(run_name=run.folder.resolve().name)
        mlflow.log_params(hyper_parameters(run))
        mlflow.set_tag("scratchsat.run_folder", str(run.folder.resolve()))

    def epoch(self, row: dict) -> None:
        clean = {k.replace("/", "_"): v for k, v in scalars(row).items()}
        self.mlflow.log_metrics(clean, step=int(row["epoch"]))

    def finish(self, run, report: dict) -> None:
        record = Report.from_dict(report)
        final, split = record.final, record.final_split
        self.mlflow.log_metrics(
            {
                f"{split}_{key}": final[key]
                for key in ("overall_accuracy", "mean_iou", "macro_f1")
                if final.get(key) is not None
            }
        )
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
