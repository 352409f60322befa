"""Beyond a class map: uncertainty, polygons, what to label next and an ONNX model, from one
trained run and one scene, with the two pictures of the README.

    python examples/maps_for_gis.py RUN SCENE OUT [--min-area 5000] [--n 20]

Writes into OUT: classes.tif (+ uncertainty.tif), classes.gpkg (polygons, styled for QGIS),
to_label.gpkg (the windows most worth labelling), model.onnx (where onnx is installed), and
uncertainty.png (the class map beside its entropy) and polygons.png (the polygons and the
suggested windows over the scene in false colour).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fiona
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

import scratchsat  # noqa: E402
from scratchsat.extras.pictures import class_rgba, quicklook_rgb  # noqa: E402
from scratchsat.geo.vectorize import vectorize  # noqa: E402
from scratchsat.prediction.suggest import suggest  # noqa: E402


def legend(fig, classes) -> None:
    handles = [Patch(color=c["colour"], label=c["name"]) for c in classes]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8))


def draw_uncertainty(out: Path, classes: list[dict]) -> None:
    with rasterio.open(out / "uncertainty.tif") as src:
        step = max(1, max(src.width, src.height) // 800)
        entropy = src.read(2)[::step, ::step]
    fig = plt.figure(figsize=(12, 4.2), dpi=90, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(class_rgba(out / "classes.tif", classes), interpolation="nearest")
    left.set_title("class map")
    shown = right.imshow(entropy, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    right.set_title("uncertainty: normalised entropy (0 sure, 1 clueless)")
    fig.colorbar(shown, ax=right, shrink=0.8)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    legend(fig, classes)
    fig.savefig(out / "uncertainty.png")
    plt.close(fig)


def draw_polygons(out: Path, scene: Path, classes: list[dict]) -> None:
    rgb, what = quicklook_rgb(scene)
    with rasterio.open(scene) as src:
        bounds = src.bounds
    colours = {int(c["code"]): c["colour"] for c in classes}
    fig = plt.figure(figsize=(12, 6.5), dpi=90, layout="constrained")
    ax = fig.subplots()
    extent = (bounds.left, bounds.right, bounds.bottom, bounds.top)
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    with fiona.open(out / "classes.gpkg", layer="classes") as src:
        for feature in src:
            colour = colours.get(feature.properties["class_code"], "white")
            for ring in feature.geometry.coordinates:
                xs, ys = np.asarray(ring).T
                ax.plot(xs, ys, color=colour, linewidth=0.8)
    with fiona.open(out / "to_label.gpkg") as src:
        for feature in src:
            xs, ys = np.asarray(feature.geometry.coordinates[0]).T
            ax.plot(xs, ys, color="white", linewidth=1.6)
            ax.text(xs.min(), ys.max(), str(feature.properties["rank"]), color="white", fontsize=7)
    ax.set_title(f"polygons (class colours) and windows to label next (white) over {what}")
    ax.set_xticks([])
    ax.set_yticks([])
    legend(fig, classes)
    fig.savefig(out / "polygons.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("scene", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--min-area", type=float, default=5000.0)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    scratchsat.predict(
        args.run,
        [args.scene],
        out / "classes.tif",
        uncertainty=out / "uncertainty.tif",
        overwrite=True,
    )
    report = vectorize(
        out / "classes.tif",
        out / "classes.gpkg",
        uncertainty=out / "uncertainty.tif",
        min_area=args.min_area,
        overwrite=True,
    )
    found = suggest(args.run, args.scene, out / "to_label.gpkg", n=args.n, overwrite=True)
    try:
        from scratchsat.prediction.onnx import export_onnx

        export_onnx(args.run, out / "model.onnx", overwrite=True)
        onnx = "model.onnx"
    except scratchsat.ScratchsatError as exc:
        onnx = f"no ONNX ({exc})"
    classes = scratchsat.load_bundle(args.run).meta.classes
    draw_uncertainty(out, list(classes))
    draw_polygons(out, args.scene, list(classes))
    print(f"{report.features} polygons, {len(found)} windows to label, {onnx}")


if __name__ == "__main__":
    main()
