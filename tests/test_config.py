"""--config FILE.toml and --print-config on every command: the command line wins, unknown
keys and wrong types are errors, a run folder keeps the settings that made it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scratchsat.cli import app

runner = CliRunner()
COMMANDS = ["stack", "tile", "train", "predict", "evaluate", "info", "demo", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_a_config_file(command):
    result = runner.invoke(app, [command, "--help"])
    assert "--config" in result.output and "--print-config" in result.output


def test_a_printed_config_trains_and_the_run_keeps_it(seg_tiles, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(seg_tiles), "--out", str(run), "--epochs", "1", "--width", "8"]
    printed = runner.invoke(app, [*args, "--batch-size", "8", "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert 'tiles = ["' in printed.output and "epochs = 1" in printed.output
    assert not run.exists()  # --print-config runs nothing
    config = tmp_path / "train.toml"
    config.write_text(printed.stdout)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (run / "train.toml").read_text() == printed.stdout
    meta = json.loads((run / "model.json").read_text())
    assert meta["training"]["batch_size"] == 8 and meta["model"]["width"] == 8
    again = runner.invoke(
        app, ["train", "--config", str(run / "train.toml"), "--epochs", "3", "--print-config"]
    )
    assert "epochs = 3" in again.stdout and "batch-size = 8" in again.stdout  # CLI wins


def test_config_errors_name_the_key_the_value_and_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 3\n")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 1
    assert "epoch is not a setting of `scratchsat train`; its settings are: tiles, out" in (
        result.output
    )
    bad.write_text('epochs = "many"\n')
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 1 and "epochs = 'many'" in result.output
    bad.write_text("epochs = \n")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 1 and "is not valid TOML" in result.output
    bad.write_text("[train]\nepochs = 3\n")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 1 and "[train] is a table" in result.output
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "missing TILES" in result.output
    assert "Traceback" not in result.output


def test_lists_and_paths_from_a_config(seg_tiles, small_run, tmp_path):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    scene = info["sources"][0]["path"]
    config = tmp_path / "predict.toml"
    config.write_text(
        f'run = "{small_run}"\nscenes = ["{scene}"]\nout = "{tmp_path / "m.tif"}"\noverlap = 0.25\n'
    )
    result = runner.invoke(app, ["predict", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.tif").exists()
    shown = runner.invoke(app, ["predict", "--config", str(config), "--print-config"])
    assert f'scenes = ["{scene}"]' in shown.stdout and "overlap = 0.25" in shown.stdout


ONE_MORE_SETTING = """
import dataclasses, sys
import scratchsat.settings as settings

@dataclasses.dataclass(frozen=True)
class WithKnob(settings.TrainConfig):
    knob: int = settings.setting(3, "A test-only setting.")

settings.TrainConfig = WithKnob  # before anything else of scratchsat is imported
from scratchsat.cli import main
sys.argv = ["scratchsat", *sys.argv[1:]]
main()
"""


def test_a_training_setting_is_one_declaration(seg_tiles, tmp_path):
    """One field added to TrainConfig (in a test-only subclass, nothing else changed) is a
    `train` option with its help and default, a --config key, a --print-config line, a key of
    model.json and part of what --resume compares."""
    import os
    import subprocess
    import sys

    script = tmp_path / "knob.py"
    script.write_text(ONE_MORE_SETTING)

    def scratchsat(*args: str) -> subprocess.CompletedProcess:
        wide = {**os.environ, "COLUMNS": "300"}  # help texts unwrapped
        return subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, env=wide
        )

    shown = scratchsat("train", "--help")
    assert "--knob" in shown.stdout and "A test-only setting." in shown.stdout, shown.stderr
    run = tmp_path / "run"
    args = ["train", str(seg_tiles), "--out", str(run), "--epochs", "1", "--width", "8"]
    printed = scratchsat(*args, "--knob", "5", "--print-config")
    assert "knob = 5" in printed.stdout.splitlines(), printed.stderr
    assert "knob = 3" in scratchsat(*args, "--print-config").stdout.splitlines()  # the default
    config = tmp_path / "train.toml"
    config.write_text(printed.stdout.replace("knob = 5", "knob = 7"))
    trained = scratchsat("-q", "train", "--config", str(config))
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run / "model.json").read_text())["training"]["knob"] == 7
    resumed = scratchsat("train", str(seg_tiles), "--out", str(run), "--resume", "--knob", "4")
    assert resumed.returncode == 1 and "--knob 4 (the run has 7)" in resumed.stderr


def test_quiet_is_not_a_config_key(tmp_path):
    """``--quiet`` belongs to how a command runs, not to its settings: in a config file it is
    an unknown key (it was a TypeError traceback), and the known keys leave it out."""
    bad = tmp_path / "q.toml"
    bad.write_text("quiet = true\n")
    result = runner.invoke(
        app, ["stack", "a.tif", "--out", str(tmp_path / "x.tif"), "--config", str(bad)]
    )
    assert result.exit_code == 1, result.output
    assert "quiet is not a setting of `scratchsat stack`" in result.output
    assert result.output.rstrip().endswith("resampling, cog, overwrite")  # no quiet, verbose
    assert result.exception is None or isinstance(result.exception, SystemExit)
