"""Pictures a person would rather look at than read: a false-colour quicklook of a scene beside
its labels and a prediction, with a legend of class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..geo.classmap import rgba
from ..geo.outputs import write_atomically
from ..geo.raster import (
    band_names,
    data_bands,
    open_raster,
    read_shrunk,
    read_shrunk_valid,
)

# Sentinel-2 false colour (vegetation red): NIR, red, green.
FALSE_COLOUR = (("B08", "B8", "nir"), ("B04", "B4", "red"), ("B03", "B3", "green"))


def display_bands(names: Sequence[str]) -> tuple[list[int], str]:
    """1-based bands for an RGB picture and what they are: NIR/red/green where the names say
    so, else the first three bands (or the first band three times)."""
    lower = [n.lower() for n in names]
    picked = []
    for options in FALSE_COLOUR:
        found = [lower.index(o.lower()) + 1 for o in options if o.lower() in lower]
        if not found:
            break
        picked.append(found[0])
    if len(picked) == 3:
        return picked, "false colour: " + ", ".join(names[i - 1] for i in picked)
    if len(names) >= 3:
        return [1, 2, 3], "bands " + ", ".join(names[:3])
    return [1, 1, 1], f"band {names[0]}"


def quicklook_rgb(path: Path, max_side: int = 800) -> tuple[np.ndarray, str]:
    """(h, w, 3) float image in [0, 1], each band stretched between its 2nd and 98th
    percentiles over valid pixels; invalid pixels white."""
    with open_raster(path) as src:
        usable = data_bands(src)  # alpha bands are the mask, not colours
        names = band_names(src)
        picked, what = display_bands([names[i - 1] for i in usable])
        indexes = [usable[i - 1] for i in picked]
        data, valid, _ = read_shrunk_valid(src, indexes, max_side)
    rgb = np.ones((*valid.shape, 3))
    for i, band in enumerate(data.astype(np.float64)):
        low, high = np.percentile(band[valid], [2, 98]) if valid.any() else (0, 1)
        rgb[..., i] = np.clip((band - low) / max(high - low, 1e-9), 0, 1)
    rgb[~valid] = 1.0
    return rgb, what


def class_rgba(path: Path, classes: Sequence[dict], max_side: int = 800) -> np.ndarray:
    """(h, w, 4) image of a class raster in the classes' colours; other values transparent."""
    with open_raster(path) as src:
        (codes,), _ = read_shrunk(src, [1], max_side)
    image = np.zeros((*codes.shape, 4))
    for c in classes:
        image[codes == int(c["code"])] = np.array(rgba(c["colour"])) / 255
    return image


def plot_quicklook(
    out: Path,
    scene: Path,
    classes: Sequence[dict],
    panels: Sequence[tuple[str, Path]],
    title: str = "",
) -> None:
    """The scene in false colour, then each class raster of ``panels`` (name, path), with one
    legend of class names."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rgb, what = quicklook_rgb(scene)
    fig = plt.figure(figsize=(4 * (1 + len(panels)), 4.6), dpi=90, layout="constrained")
    axes = fig.subplots(1, 1 + len(panels))
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title(f"{scene.name}\n({what})", fontsize=9)
    for ax, (name, path) in zip(axes[1:], panels, strict=True):
        ax.imshow(class_rgba(path, classes), interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=c["colour"], label=f"{c['code']} {c['name']}") for c in classes]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False
    )
    if title:
        fig.suptitle(title)
    write_atomically(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
