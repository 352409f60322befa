"""Outputs are complete or absent: write errors, full disks, sidecars, locks, temporaries."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import OutputExistsError, OutputLockedError, OutputWriteError
from scratchsat.geo.outputs import IncompleteWrite, atomic_output, output_lock, write_atomically
from scratchsat.geo.raster import check_written

runner = CliRunner()


def refused_cleanly(result, message: str) -> None:
    """Exit 1 with ``Error: …message…`` and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Error:" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def noise_bands(folder, count=3, side=600):
    """Uint16 random bands: they do not compress, so they fill a small disk."""
    rng = np.random.default_rng(0)
    return [
        write_raster(folder / f"b{i}.tif", rng.integers(0, 65535, (side, side), dtype=np.uint16))
        for i in range(count)
    ]


def test_an_injected_full_disk_is_an_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    full, hint = r"no space left on .* out.bin \(needed about 5.2 MB", 5 << 20
    with pytest.raises(OutputWriteError, match=full), atomic_output(target, size_hint=hint) as tmp:
        tmp.write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    assert listing(tmp_path) == []


def test_an_injected_permission_error_says_the_folder_is_not_writable(tmp_path):
    with (
        pytest.raises(OutputWriteError, match="read-only or not writable"),
        atomic_output(tmp_path / "x.json") as tmp,
    ):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp))
    assert listing(tmp_path) == []


def test_stack_onto_a_full_disk(tmp_path, small_disk):
    bands = noise_bands(tmp_path)
    result = runner.invoke(app, ["stack", *map(str, bands), "--out", str(small_disk / "s.tif")])
    refused_cleanly(result, "no space left on")
    assert "needed about 2.2 MB" in result.output
    assert listing(small_disk) == []


def test_tile_onto_a_full_disk(seg_tiles, small_disk):
    scene = seg_tiles.parent / "scene.tif"
    result = runner.invoke(
        app,
        [
            "tile",
            str(scene),
            "--labels",
            str(seg_tiles.parent / "labels.tif"),
            "--patch-size",
            "32",
            "--out",
            str(small_disk / "tiles"),
        ],
    )
    refused_cleanly(result, "no space left on")
    assert listing(small_disk) == []


def test_predict_onto_a_full_disk(small_run, seg_tiles, small_disk):
    scene = seg_tiles.parent / "scene.tif"
    result = runner.invoke(
        app,
        [
            "predict",
            str(small_run),
            str(scene),
            "--out",
            str(small_disk / "classes.tif"),
            "--probabilities",
            str(small_disk / "probs.tif"),
            "--float",
        ],
    )
    refused_cleanly(result, "no space left on")
    assert listing(small_disk) == []  # no class map, no sidecar, no temporary


def test_train_onto_a_full_disk(seg_tiles, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 900_000)
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            str(small_disk / "run"),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--width",
            "8",
        ],
    )
    refused_cleanly(result, "no space left on")
    assert not [p for p in (small_disk / "run").rglob("*") if ".part" in p.name]
    assert not (small_disk / "run" / "model.json").exists()


def test_a_geotiff_missing_its_last_blocks_is_caught(tmp_path):
    path = write_raster(
        tmp_path / "x.tif",
        np.random.default_rng(0).integers(0, 65535, (2, 300, 300), dtype=np.uint16),
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    check_written(path)  # whole: passes
    data = path.read_bytes()
    with rasterio.open(path) as src:
        last = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=2))
    path.write_bytes(data[: last + 10])  # the header survives, the last block is cut
    with pytest.raises(IncompleteWrite, match="blocks are missing"):
        check_written(path)
    path.write_bytes(data[:100])
    with pytest.raises(IncompleteWrite, match="cannot be read back"):
        check_written(path)
    with (
        pytest.raises(OutputWriteError, match=r"writing .*y.tif failed \(it was written but"),
        atomic_output(tmp_path / "y.tif", check=check_written) as tmp,
    ):
        tmp.write_bytes(data[:100])
    assert listing(tmp_path) == ["x.tif"]


def test_sidecars_are_refused_without_overwrite_and_never_followed(small_run, seg_tiles, tmp_path):
    scene, out = seg_tiles.parent / "scene.tif", tmp_path / "classes.tif"
    (tmp_path / "classes.qml").write_text("my own style")
    result = runner.invoke(app, ["predict", str(small_run), str(scene), "--out", str(out)])
    assert result.exit_code == 1 and "classes.qml exists already" in result.output
    assert listing(tmp_path) == ["classes.qml"]  # nothing written, the user's file kept
    assert (tmp_path / "classes.qml").read_text() == "my own style"

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("precious")
    (tmp_path / "classes.qml").unlink()
    (tmp_path / "classes.qml").symlink_to(elsewhere)
    (tmp_path / "classes.tif.aux.xml").symlink_to(tmp_path / "missing-target")  # dangling
    result = runner.invoke(app, ["predict", str(small_run), str(scene), "--out", str(out)])
    assert result.exit_code == 1 and "exists already" in result.output
    result = runner.invoke(
        app, ["predict", str(small_run), str(scene), "--out", str(out), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert elsewhere.read_text() == "precious"  # the link was replaced, not followed
    assert not (tmp_path / "classes.qml").is_symlink()
    assert "paletteEntry" in (tmp_path / "classes.qml").read_text()
    assert not (tmp_path / "missing-target").exists()
    assert "CategoryNames" in (tmp_path / "classes.tif.aux.xml").read_text()


HOLD = textwrap.dedent("""
    import sys, time
    from scratchsat.geo.outputs import atomic_output
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_text("first")
        print("holding", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    target = tmp_path / "out.txt"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        locked = rf"another scratchsat process \(PID {holder.pid}\)"
        with pytest.raises(OutputLockedError, match=locked), atomic_output(target) as tmp:
            tmp.write_text("second")
        assert not target.exists()
        holder.send_signal(signal.SIGKILL)  # dies holding the lock, leaving its temporary
        holder.wait()
        leftovers = [p.name for p in tmp_path.iterdir()]
        assert any(name.endswith(".part") for name in leftovers)
        assert ".out.txt.lock" in leftovers
        with atomic_output(target) as tmp:  # the stale lock is taken over
            tmp.write_text("second")
        assert target.read_text() == "second"
        assert listing(tmp_path) == ["out.txt"]  # stale temporary and lock gone
    finally:
        holder.kill()
        holder.wait()


def test_locks_are_reentrant_within_a_process_and_released(tmp_path):
    target = tmp_path / "run"
    with output_lock(target), output_lock(target):
        write_atomically(target / "x.json", lambda tmp: tmp.write_text("{}"))
    assert listing(tmp_path) == ["run"]
    with pytest.raises(OutputExistsError), atomic_output(target):
        pass


def test_temporaries_of_live_processes_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".x.tif.{sleeper.pid}-0123abcd.part"
        dead = tmp_path / ".x.tif.999999999-0123abcd.part"
        old = tmp_path / ".x.tif.89abcdef.part"  # written before temporaries named their PID
        for path in (live, dead, old):
            path.write_text("partial")
        with atomic_output(tmp_path / "x.tif") as tmp:
            tmp.write_text("done")
        assert listing(tmp_path) == sorted([live.name, "x.tif"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_outputs_in_a_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    bands = noise_bands(tmp_path, count=1, side=20)
    result = runner.invoke(
        app, ["stack", str(bands[0]), "--out", str(tmp_path / "file" / "sub" / "s.tif")]
    )
    refused_cleanly(result, "s.tif")
    assert "is a file, not a folder" in result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only folder needs root")
def test_outputs_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        bands = noise_bands(tmp_path, count=1, side=20)
        result = runner.invoke(app, ["stack", str(bands[0]), "--out", str(folder / "s.tif")])
        refused_cleanly(result, "read-only or not writable")
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_stack_refuses_to_write_over_its_own_input(tmp_path):
    bands = noise_bands(tmp_path, count=2, side=20)
    before = bands[0].read_bytes()
    result = runner.invoke(app, ["stack", *map(str, bands), "--out", str(bands[0]), "--overwrite"])
    refused_cleanly(result, "is the input")
    assert bands[0].read_bytes() == before
    time.sleep(0)  # keeps the import used on platforms without mount


HOLD_RUN = textwrap.dedent("""
    import sys, time
    from scratchsat.geo.outputs import output_lock
    with output_lock(sys.argv[1]):
        print("holding", flush=True)
        time.sleep(60)
""")


def test_a_second_train_into_the_same_run_folder_is_refused(seg_tiles, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = runner.invoke(app, ["train", str(seg_tiles), "--out", str(run), "--epochs", "1"])
        refused_cleanly(
            result, f"is being written by another scratchsat process (PID {holder.pid})"
        )
    finally:
        holder.kill()
        holder.wait()


def test_a_new_run_removes_what_a_killed_run_left_in_its_folder(small_run, seg_tiles, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".checkpoint.pt.999999999-0123abcd.part"
    stale.write_bytes(b"half a checkpoint")
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--width",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the lock is gone too


def test_a_json_output_is_locked_with_or_without_overwrite(tmp_path):
    from scratchsat.geo.outputs import write_json

    target = tmp_path / "scores.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        for overwrite in (False, True):
            with pytest.raises(OutputLockedError):
                write_json(target, {"a": 1}, overwrite=overwrite, lock=True)
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait()


def test_predict_workers_are_dead_before_their_temporaries_are_removed(
    small_run, seg_tiles, tmp_path, monkeypatch
):
    """A worker still alive when the parent removes a scene's temporaries could create one
    again (seen once in CI: SIGTERM to predict --workers 2 left `.s1.tif.PID.part`)."""
    import contextlib

    from scratchsat.prediction import pool as pool_module
    from scratchsat.prediction.options import PredictOptions
    from scratchsat.prediction.writers import Outputs

    events = []

    class Pool:
        def submit(self, *args):
            events.append("submitted")
            raise KeyboardInterrupt  # Ctrl-C while the first scene is being predicted

    @contextlib.contextmanager
    def fake_pool(*args, **kwargs):
        try:
            yield Pool()
        finally:
            events.append("workers killed")

    real_staged = Outputs.staged

    @contextlib.contextmanager
    def staged(self, *args, **kwargs):
        with real_staged(self, *args, **kwargs) as tmp:
            try:
                yield tmp
            finally:
                events.append("temporaries removed")

    monkeypatch.setattr(pool_module, "worker_pool", fake_pool)
    monkeypatch.setattr(Outputs, "staged", staged)
    plan = [("scene.tif", Outputs(tmp_path / "a.tif"))]
    with pytest.raises(KeyboardInterrupt):
        pool_module.predict_in_processes(
            small_run, plan, [100], PredictOptions(), False, pool_module.Tally([100], None), 2
        )
    assert events == ["submitted", "workers killed", "temporaries removed"]
    assert list(tmp_path.iterdir()) == []
