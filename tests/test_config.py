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
