"""The whole flow on synthetic scenes, with the Python API only: tile → train → predict → evaluate.

Run: python examples/synthetic_flow.py [OUTDIR] [EPOCHS]
"""

import sys
from pathlib import Path

import scratchsat

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-synthetic")
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
out.mkdir(parents=True, exist_ok=True)

# Two 13-band Sentinel-2-like scenes with label rasters (water, vegetation, bare soil, built-up).
seen = scratchsat.write_scene(out / "scene.tif", out / "labels.tif", width=512, height=512, seed=1)
unseen = scratchsat.write_scene(
    out / "unseen.tif", out / "unseen_labels.tif", width=320, height=320, seed=2
)

# Patches of 32 px; spatial blocks of 64 px go to train, val and test.
tiles = scratchsat.tile(
    [seen.path],
    seen.labels_path,
    out / "tiles",
    overwrite=True,
    options=scratchsat.TileOptions(patch_size=32, block_size=64),
)

# A U-Net from random weights.
report = scratchsat.train(
    tiles, out / "run", scratchsat.TrainConfig(epochs=epochs, width=16), overwrite=True
)
print(
    f"test split: accuracy {report['test']['overall_accuracy']:.3f}, "
    f"mean IoU {report['test']['mean_iou']:.3f}"
)

# Predict the scene the model never saw, and score it against its labels.
[prediction] = scratchsat.predict(
    out / "run", [unseen.path], out / "unseen_classes.tif", overwrite=True
)
scores = scratchsat.evaluate(prediction, unseen.labels_path)
print(f"unseen scene: accuracy {scores['overall_accuracy']:.3f}, mean IoU {scores['mean_iou']:.3f}")
for c in scores["classes"]:
    print(f"  {c['code']} {c['name']:<11} IoU {c['iou']:.3f}")
