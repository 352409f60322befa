"""Fault injection: SIGINT, SIGTERM and SIGKILL at chosen points of stack, tile --workers 2,
train and predict --workers 2, through the real CLI in a subprocess. After each: the exit
code says what happened, no output under its final name is incomplete, no temporary or lock
is left, and no worker process lives on; train --resume after SIGINT mid-epoch gives the
metrics of an uninterrupted run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import write_raster

HARNESS = Path(__file__).with_name("fault_harness.py")


class Paused:
    """A CLI command paused at the N-th call of ``target`` (see fault_harness.py)."""

    def __init__(self, tmp_path: Path, target: str, n: int, *args: str) -> None:
        self.gate = tmp_path / f"gate-{uuid.uuid4().hex[:6]}"
        self.token = uuid.uuid4().hex  # in the environment of the command and its workers
        env = {**os.environ, "SCRATCHSAT_FAULT_TOKEN": self.token}
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS), target, str(n), str(self.gate), "--", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.process.stdout.readline()
        assert line.strip() == "PAUSED", line + self.process.stderr.read()

    def signal(self, number: int) -> tuple[int, str]:
        """Send ``number``, let the command go on, wait for it: (exit code, stderr)."""
        self.process.send_signal(number)
        time.sleep(0.2)
        self.gate.touch()
        _, err = self.process.communicate(timeout=120)
        return self.process.returncode, err

    def live_processes(self) -> list[int]:
        """PIDs of processes (the command's workers included) that still carry its token."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.token.encode() in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found


def leftovers(folder: Path) -> list[str]:
    """Temporaries and locks anywhere under ``folder``."""
    return [
        str(p) for p in folder.rglob(".*") if p.name.endswith((".part", ".lock", ".old", ".cog"))
    ]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scratchsat", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four 6-band scenes of the synthetic kind (named bands) and their labels."""
    from scratchsat import write_scene

    folder = tmp_path_factory.mktemp("scenes")
    made = [
        write_scene(
            folder / f"s{i}.tif",
            folder / f"s{i}_labels.tif",
            width=256,
            height=256,
            count=6,
            seed=i,
        )
        for i in range(4)
    ]
    return folder, made


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_stack_interrupted_while_writing(tmp_path, number):
    rng = np.random.default_rng(0)
    bands = [
        write_raster(tmp_path / f"b{i}.tif", rng.integers(0, 9999, (1100, 1100), dtype=np.uint16))
        for i in range(3)
    ]
    out = tmp_path / "out"
    paused = Paused(
        tmp_path,
        "scratchsat.tiles.stack:read_on_grid",
        4,
        "stack",
        *map(str, bands),
        "--out",
        str(out / "stack.tif"),
    )
    code, err = paused.signal(number)
    assert code == 128 + number, err
    assert "Traceback" not in err and "Interrupted" in err
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_tile_with_workers_interrupted(scenes, tmp_path, number):
    folder, made = scenes
    out = tmp_path / "tiles"
    paused = Paused(
        tmp_path,
        "scratchsat.tiles.store:NpyWriter.append",
        3,
        "tile",
        *[str(s.path) for s in made],
        "--labels",
        str(made[0].labels_path),
        "--patch-size",
        "16",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    code, err = paused.signal(number)
    assert code == (-9 if number == signal.SIGKILL else 128 + number), err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while paused.live_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert paused.live_processes() == []  # the workers died with their parent
    if number != signal.SIGKILL:
        assert list(tmp_path.glob("*tiles*")) == []  # no folder, no temporary, no lock
    else:
        assert not out.exists()  # what a killed process leaves is hidden and stale ...
        result = cli(
            "tile",
            str(made[0].path),
            "--labels",
            str(made[0].labels_path),
            "--patch-size",
            "16",
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        assert leftovers(tmp_path) == []  # ... and the next run removes it


def metric_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [
            {k: v for k, v in row.items() if k.startswith(("val_", "train_loss", "lr"))}
            for row in csv.DictReader(f)
        ]


TRAIN = ("--epochs", "2", "--batch-size", "8", "--width", "8")


@pytest.fixture(scope="module")
def straight(seg_tiles, tmp_path_factory):
    """An uninterrupted CPU run with TRAIN's settings."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert cli("train", str(seg_tiles), "--out", str(run), *TRAIN).returncode == 0
    return run


def test_train_sigint_mid_epoch_then_resume_equals_an_uninterrupted_run(
    seg_tiles, straight, tmp_path
):
    stopped = tmp_path / "stopped"
    # to_device's 22nd call: batch 3 of epoch 2 (an epoch: 16 steps — 66 patches are 8 batches
    # of 8, drawn twice — then 3 validation batches); the signal comes before that step, which
    # still finishes: the stop is at a step boundary
    paused = Paused(
        tmp_path,
        "scratchsat.training.steps:to_device",
        22,
        "train",
        str(seg_tiles),
        "--out",
        str(stopped),
        *TRAIN,
    )
    code, err = paused.signal(signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err and "Interrupted at epoch 2, step 3;" in err, err
    assert "a checkpoint of that point is in" in err
    assert leftovers(tmp_path) == []
    result = cli("train", str(seg_tiles), "--out", str(stopped), "--resume")
    assert result.returncode == 0, result.stderr
    assert metric_rows(stopped) == metric_rows(straight)


def test_train_sigterm_exits_143_with_a_resumable_checkpoint(seg_tiles, tmp_path):
    run = tmp_path / "run"
    paused = Paused(
        tmp_path,
        "scratchsat.training.steps:to_device",
        3,
        "train",
        str(seg_tiles),
        "--out",
        str(run),
        *TRAIN,
    )
    code, err = paused.signal(signal.SIGTERM)
    assert code == 143, err
    assert "Interrupted at epoch 1, step 3; a checkpoint of that point is in" in err, err
    assert (run / "checkpoint.pt").exists() and leftovers(tmp_path) == []


def test_train_sigint_during_the_first_validation_saves_what_it_says(seg_tiles, straight, tmp_path):
    run = tmp_path / "run"
    paused = Paused(
        tmp_path,
        "scratchsat.training.loop:evaluate",
        1,
        "train",
        str(seg_tiles),
        "--out",
        str(run),
        *TRAIN,
    )
    code, err = paused.signal(signal.SIGINT)
    assert code == 130, err
    assert "a checkpoint of that point is in" in err and (run / "checkpoint.pt").exists()
    assert cli("train", str(seg_tiles), "--out", str(run), "--resume").returncode == 0
    assert metric_rows(run) == metric_rows(straight)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_predict_with_workers_interrupted(scenes, small_run, tmp_path, number):
    bundle = small_run
    folder, made = scenes
    out = tmp_path / "preds"
    paused = Paused(
        tmp_path,
        "scratchsat.prediction.pool:Tally.update",
        2,
        "predict",
        str(bundle),
        *[str(s.path) for s in made],
        "--out",
        str(out),
        "--workers",
        "2",
        "--probabilities",
        str(tmp_path / "probs"),
    )
    code, err = paused.signal(number)
    assert code == (-9 if number == signal.SIGKILL else 128 + number), err
    assert "Traceback" not in err
    time.sleep(3 if number == signal.SIGKILL else 0)  # time for a worker to misbehave
    assert paused.live_processes() == []
    for path in [*out.glob("*"), *(tmp_path / "probs").glob("*")]:
        if not path.name.startswith(".") and path.suffix == ".tif":  # finished: complete
            with rasterio.open(path) as src:
                src.read()
    if number != signal.SIGKILL:
        assert leftovers(tmp_path) == []
    shutil.rmtree(tmp_path / "probs", ignore_errors=True)


def spawned_workers(parent: int) -> list[int]:
    """PIDs of the multiprocessing workers (spawned children) of ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_while_workers_start(scenes, tmp_path, number):
    """A terminal's Ctrl-C goes to every process of the group: the workers too, while they
    are still importing Python and scratchsat (before they can ignore it). No traceback from
    them, nor from the pool, nor a resource-tracker warning; nothing left behind."""
    folder, made = scenes
    out = tmp_path / "tiles"
    process = subprocess.Popen(
        [sys.executable, "-m", "scratchsat", "tile", *[str(s.path) for s in made]]
        + ["--labels", str(made[0].labels_path), "--patch-size", "16", "--chips"]
        + ["--workers", "2", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not spawned_workers(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spawned_workers(process.pid), "no worker started"
    os.killpg(process.pid, number)  # the workers are importing now
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + number, err
    assert "Traceback" not in err and "leaked" not in err, err
    assert f"Interrupted ({signal.Signals(number).name})" in err
    assert list(tmp_path.glob("*tiles*")) == []
