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
    for command in ("stack", "tile"):
        assert command in result.output
    result = runner.invoke(app, ["--version"])
    assert result.output.strip() == f"scratchsat {__version__}"


def test_tile_through_the_cli(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "tiles"
    result = runner.invoke(app, ["--quiet", "tile", str(scene), "--labels", str(labels),
                                 "--out", str(out), "--patch-size", "10", "--val", "0",
                                 "--test", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "dataset.json").read_text())["patches"] == 14


def test_stack_through_the_cli(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "stacked.tif"
    result = runner.invoke(app, ["stack", str(scene), str(labels), "--out", str(out),
                                 "--band-names", "a,b,c"])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_errors_exit_1_without_traceback(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "exists"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "scratchsat", "tile", str(scene), "--labels",
                           str(labels), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "exists already; pass --overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "scratchsat", "stack", str(tmp_path / "no.tif"),
                           "--out", str(tmp_path / "o.tif")], capture_output=True, text=True)
    assert proc.returncode == 1 and "no.tif: no such file" in proc.stderr
    assert not (tmp_path / "o.tif").exists()
