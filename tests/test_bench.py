"""`scratchsat bench` runs every benchmark and reports each beside its bound (tiny sizes here;
the real figures come from `scratchsat bench --quick` or the full run, never from tests)."""

import json

from typer.testing import CliRunner

import scratchsat.bench as bench
from scratchsat.cli import app

runner = CliRunner()
TINY = {"scene": 256, "load_patch": 64, "train_scene": 256, "epochs": 1, "steps": 1,
        "resnet_batch": 4, "unet_patch": 32, "unet_batch": 4}


def test_bench_prints_a_table_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", TINY)
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--quick", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("full read", "raw slices", "model only", "classic fp32 loop", "Mpx/s",
                 "cores"):
        assert text in result.output, text
    figures = json.loads(out.read_text())
    assert figures["hardware"]["device"] == "cpu" and figures["hardware"]["cores"] >= 1
    assert figures["tile"]["ratio"] > 0 and figures["tile"]["patches"] == 16
    assert set(figures["load"]["patches_per_s"]) >= {"raw slices", "dataset, no augmentation"}
    assert [t["model"] for t in figures["train"]] == ["resnet18", "unet"]
    assert all(t["end_to_end"] > 0 and t["model_only"] > 0 for t in figures["train"])
    p = figures["predict"]
    assert p["scene"] == [256, 256] and p["end_to_end_mpx_s"] > 0 and p["read_mpx_s"] > 0
    again = runner.invoke(app, ["bench", "--quick", "--json", str(out)])
    assert again.exit_code == 1 and "exists already; pass --overwrite" in again.output
