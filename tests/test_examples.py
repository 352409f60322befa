import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_tile_synthetic_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "tile_synthetic.py"), str(tmp_path)],
                          capture_output=True, text=True, check=True)
    info = json.loads((tmp_path / "tiles" / "dataset.json").read_text())
    assert f"{info['patches']} patches of 32 px" in proc.stdout
    assert [c["name"] for c in info["classes"]] == ["1", "2", "3", "4"]
