"""The docs picture of a class map predicted at an even and at an odd window step, side by
side over the same crop (the Brandenburg lakes; docs/quality.md, "Window artefacts"):

    python docs/make_grid_picture.py EVEN.tif ODD.tif docs/window-step.png [ROW COL SIZE]

Both maps come from ``benchmarks/artefacts.py`` (or ``predict --overlap``) with one run."""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from scratchsat.geo.classmap import read_classes_tag  # noqa: E402

even, odd, out = sys.argv[1:4]
row, col, size = (int(v) for v in sys.argv[4:7]) if len(sys.argv) > 4 else (400, 300, 360)
fig, axes = plt.subplots(1, 2, figsize=(11, 5.8), layout="constrained")
for ax, path, title in zip(axes, (even, odd), ("step 16 px (the old default)", "step 15 px (the default)"), strict=True):
    with rasterio.open(path) as src:
        codes = src.read(1, window=Window(col, row, size, size))
        classes = read_classes_tag(src.tags())
    lut = np.full((256, 3), 255, np.uint8)
    for c in classes:
        lut[c["code"]] = [int(c["colour"][i : i + 2], 16) for i in (1, 3, 5)]
    ax.imshow(lut[codes], interpolation="nearest")
    ax.set(title=title, xticks=[], yticks=[])
fig.suptitle("Class map, 32 px windows blended at overlap ≈ 0.5: the same run, the same crop")
fig.savefig(out, dpi=80)
print(f"wrote {out}")
