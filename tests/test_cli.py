import json
import subprocess
import sys

from typer.testing import CliRunner

from scratchsat import __version__
from scratchsat.cli import app

runner = CliRunner()


def test_help_lists_commands_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("stack", "tile", "train"):
        assert command in result.output
    result = runner.invoke(app, ["--version"])
    assert result.output.strip() == f"scratchsat {__version__}"


def test_tile_through_the_cli(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "tiles"
    result = runner.invoke(
        app,
        [
            "--quiet",
            "tile",
            str(scene),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--patch-size",
            "10",
            "--val",
            "0",
            "--test",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "dataset.json").read_text())["patches"] == 14


def test_stack_through_the_cli(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "stacked.tif"
    result = runner.invoke(
        app, ["stack", str(scene), str(labels), "--out", str(out), "--band-names", "a,b,c"]
    )
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_errors_exit_1_without_traceback(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "exists"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scratchsat",
            "tile",
            str(scene),
            "--labels",
            str(labels),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "exists already; pass --overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scratchsat",
            "stack",
            str(tmp_path / "no.tif"),
            "--out",
            str(tmp_path / "o.tif"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "no.tif: no such file" in proc.stderr
    assert not (tmp_path / "o.tif").exists()


def test_train_through_the_cli(seg_tiles, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--width",
            "8",
            "--aug",
            "geo",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch   1/2" in result.output and "epoch   2/2" in result.output
    assert "best epoch" in result.output and str(out) in result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["aug"] == "geo" and meta["model"]["width"] == 8


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scratchsat", *map(str, args)], capture_output=True, text=True
    )


def test_train_errors_exit_1_without_traceback(seg_tiles, tmp_path):
    cases = [
        ((tmp_path / "nope", "--out", tmp_path / "r"), "does not exist; make one with"),
        ((seg_tiles, "--out", tmp_path / "r", "--model", "vgg"), "known models: simple"),
        (
            (seg_tiles, "--out", tmp_path / "r", "--model", "simple"),
            "simple is a classification model but",
        ),
        ((seg_tiles, "--out", tmp_path / "r", "--device", "tpu"), "unknown device 'tpu'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", *map(str, args)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.output.startswith("Error: ") and message in result.output
    assert not (tmp_path / "r").exists()
    proc = run_cli("train", seg_tiles, "--out", tmp_path / "r", "--model", "vgg")
    assert proc.returncode == 1 and proc.stderr.startswith("Error: unknown model 'vgg'")
    assert "Traceback" not in proc.stderr


def test_ctrl_c_during_training_saves_a_checkpoint_and_exits_130(seg_tiles, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scratchsat",
            "train",
            str(seg_tiles),
            "--out",
            str(out),
            "--epochs",
            "500",
            "--batch-size",
            "8",
            "--width",
            "8",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted at epoch" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    import torch

    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] >= 1 and state["config"]["epochs"] == 500


def test_every_command_has_help_with_an_example():
    commands = ("stack", "tile", "train", "predict", "evaluate", "demo", "info", "bench")
    listing = runner.invoke(app, ["--help"]).output
    for command in commands:
        assert command in listing
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example: scratchsat " + command in result.output


def test_quiet_after_the_command_as_before_it(tmp_path):
    """``-q`` works after every command's name too (scripts put it there)."""
    import numpy as np
    from conftest import write_raster

    band = write_raster(tmp_path / "b.tif", np.ones((1, 8, 8), dtype="uint16"))
    loud = runner.invoke(app, ["stack", str(band), "--out", str(tmp_path / "a.tif")])
    assert loud.exit_code == 0 and "wrote" in loud.output, loud.output
    for args in (["-q", "stack"], ["stack", "-q"], ["stack", "--quiet"]):
        out = tmp_path / f"{len(args[0])}{args[-1]}.tif"
        quiet = runner.invoke(app, [*args, str(band), "--out", str(out)])
        assert quiet.exit_code == 0 and quiet.output == "", quiet.output
        assert out.exists()
    for name in ("stack", "tile", "train", "predict", "vectorize", "suggest", "export"):
        assert "--quiet" in runner.invoke(app, [name, "--help"]).output, name


def test_third_party_deprecations_are_not_shown_ours_are(tmp_path, monkeypatch):
    """``Use @ matmul instead of * mul`` (affine inside rasterio) printed 8 times in ``tile``,
    even with ``-q``: third-party deprecations are left out, ours are ``Warning:`` lines, in
    every command (``stack`` had Python's own format)."""
    import warnings

    import numpy as np
    from conftest import write_raster

    import scratchsat.tiles.stack as stack_module
    from scratchsat.errors import ScratchsatWarning

    real = stack_module.stack

    def noisy(*args, **kwargs):
        warnings.warn("Use @ matmul instead of * mul", DeprecationWarning, stacklevel=2)
        warnings.warn("a future change", FutureWarning, stacklevel=2)
        warnings.warn("the scene is odd", ScratchsatWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(stack_module, "stack", noisy)
    band = write_raster(tmp_path / "b.tif", np.ones((1, 8, 8), dtype="uint16"))
    result = runner.invoke(app, ["stack", str(band), "--out", str(tmp_path / "a.tif")])
    assert result.exit_code == 0, result.output
    assert "matmul" not in result.output and "future change" not in result.output
    assert "Warning: the scene is odd" in result.output
    for args in (["-v", "stack"], ["stack", "--verbose"]):  # -v shows them, and where
        loud = runner.invoke(app, [*args, str(band), "--out", str(tmp_path / "v.tif")])
        assert loud.exit_code == 0, loud.output
        assert "Warning: Use @ matmul instead of * mul (DeprecationWarning, " in loud.output
        assert "Warning: a future change (FutureWarning, " in loud.output
        assert "Warning: the scene is odd (ScratchsatWarning, " in loud.output
        (tmp_path / "v.tif").unlink()


def test_verbose_adds_the_traceback_to_an_error(tmp_path):
    """An ``Error:`` line alone by default; with ``-v`` on any command, its traceback too (for a
    bug report), after the same line."""
    missing = str(tmp_path / "none.tif")
    plain = runner.invoke(app, ["info", missing])
    loud = runner.invoke(app, ["info", missing, "-v"])
    assert plain.exit_code == loud.exit_code == 1
    assert "Error:" in plain.output and "Traceback" not in plain.output
    assert loud.output.startswith(plain.output.rstrip("\n")) and "Traceback" in loud.output
    for name in ("stack", "tile", "train", "predict", "evaluate", "info", "bench", "demo"):
        assert "--verbose" in runner.invoke(app, [name, "--help"]).output, name


def test_help_is_never_cut_nor_its_brackets_eaten():
    """At 80 columns ``train --help`` cut ``MLFLOW_TRACKING_U…`` and rich markup ate
    ``[tensorboard]`` from ``pip install 'scratchsat[tensorboard]'``; examples stay lines."""
    import os

    env = {**os.environ, "COLUMNS": "80"}
    shown = subprocess.run(
        [sys.executable, "-m", "scratchsat", "train", "--help"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "MLFLOW_TRACKING_URI" in shown and "_U…" not in shown
    assert "'scratchsat[tensorboard]'" in shown and "'scratchsat[mlflow]'" in shown
    assert "Example: scratchsat train tiles/brandenburg --out runs/brandenburg" in shown


def test_progress_shows_slow_rates_and_the_time_left(monkeypatch):
    """``predict`` on a CPU showed ``0.0 Mpx/s`` (0.04 rounded to one decimal) and no bar had
    an ETA: rates keep two significant digits, and the bar shows the time left."""
    import io

    from rich.console import Console

    from scratchsat.cli import console

    assert console.format_fields({"mpx": 0.04}) == "0.04 Mpx/s"
    assert console.format_fields({"mpx": 0.19}) == "0.19 Mpx/s"
    assert console.format_fields({"mpx": 123.4}) == "123 Mpx/s"
    assert console.format_fields({"rate": 2.5}) == "2.5 samples/s"
    screen = io.StringIO()
    fake = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(console, "stderr", fake)
    monkeypatch.setitem(console.state, "quiet", False)
    with console.progress_bar("predict") as callback:
        assert callback is not None
        callback(10, 100, mpx=0.04)
        callback(20, 100, mpx=0.04)
    assert "eta" in screen.getvalue()


def test_an_error_line_keeps_colons_as_they_are(tmp_path):
    """A path or value with ``:x:`` in it is text in an Error: line, not rich's emoji code."""
    missing = tmp_path / "a:x:b.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "scratchsat", "stack", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and f"{missing}: no such file" in proc.stderr, proc.stderr
