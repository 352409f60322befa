"""Make a synthetic 13-band scene, stack two of its bands from separate files, and tile it.

Uses only the Python API. Run: python examples/tile_synthetic.py [OUTDIR]
"""

import json
import sys
from pathlib import Path

import scratchsat

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-output")
out.mkdir(parents=True, exist_ok=True)

scene = scratchsat.write_scene(out / "scene.tif", out / "labels.tif", width=256, height=256,
                               count=13, seed=0)
tiles = scratchsat.tile([scene.path], scene.labels_path, out / "tiles",
                        options=scratchsat.TileOptions(patch_size=32, val=0.2, test=0.1),
                        overwrite=True)
info = json.loads((tiles / "dataset.json").read_text())
print(f"{info['patches']} patches of {info['patch_size']} px: {info['splits']}")
for c in info["classes"]:
    print(f"  class {c['code']} ({c['name']}): {c['pixels']} px in {c['patches']} patches")
