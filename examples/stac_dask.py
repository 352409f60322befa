"""A STAC catalog read lazily with odc-stac, predicted on a Dask cluster, written as one mosaic.

    python examples/stac_dask.py OUT [--epochs 4] [--workers 2]

Everything is local and made here (no network): a model trained on a synthetic scene, then an
unseen region cut into two STAC Items of single-band COGs (the way Sentinel-2 scenes arrive),
an ItemCollection pointing at them, ``odc.stac.load`` of the collection onto one grid (Dask
chunks, nothing read yet), ``scratchsat.xarray.predict_dataset`` (lazy too) and
``write_prediction``, which computes it a band of chunk rows at a time on a LocalCluster of
``--workers`` processes into OUT/mosaic.tif, a COG with the class legend. Last, the mosaic is
compared with ``scratchsat predict`` of the region's own GeoTIFF: the chunked, catalog-read
prediction is the file prediction.

Needs the xarray extra and odc-stac: ``pip install 'scratchsat[xarray]' odc-stac``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import odc.stac
import pystac
import rasterio
from distributed import Client, LocalCluster
from pystac.extensions.projection import ProjectionExtension
from rasterio.windows import Window

import scratchsat
import scratchsat.xarray as sx
from scratchsat.prediction import PredictOptions

WHEN = dt.datetime(2024, 6, 1, 10, 30, tzinfo=dt.timezone.utc)


def train_model(out: Path, epochs: int) -> Path:
    scene = scratchsat.write_scene(out / "train.tif", out / "train_labels.tif", count=6, seed=0)
    options = scratchsat.TileOptions(patch_size=32)
    tiles = scratchsat.tile([scene.path], scene.labels_path, out / "tiles", options=options)
    config = scratchsat.TrainConfig.of(epochs=epochs, batch_size=16, width=8)
    scratchsat.train(tiles, out / "run", config)
    return out / "run"


def write_items(region: Path, folder: Path) -> list[pystac.Item]:
    """Cut ``region`` into a left and a right Item, one single-band COG per band each."""
    items = []
    with rasterio.open(region) as src:
        half = src.width // 2
        for name, window in (("left", Window(0, 0, half, src.height)),
                             ("right", Window(half, 0, src.width - half, src.height))):  # fmt: skip
            transform = src.window_transform(window)
            bounds = rasterio.windows.bounds(window, src.transform)
            item = pystac.Item(
                id=f"region-{name}",
                geometry=None,
                bbox=None,
                datetime=WHEN,
                properties={},
            )
            projection = ProjectionExtension.ext(item, add_if_missing=True)
            projection.code = src.crs.to_string()
            projection.shape = [int(window.height), int(window.width)]
            projection.transform = list(transform)[:6]
            projection.bbox = list(bounds)
            for band, description in enumerate(src.descriptions, start=1):
                path = folder / f"{name}_{description}.tif"
                profile = {**src.profile, "driver": "COG", "count": 1}
                profile.update(width=int(window.width), height=int(window.height))
                profile.update(transform=transform, blocksize=128, compress="deflate")
                for key in ("tiled", "blockxsize", "blockysize", "interleave"):
                    profile.pop(key, None)
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(band, window=window), 1)
                asset = pystac.Asset(str(path.resolve()), media_type=pystac.MediaType.COG)
                item.add_asset(description, asset)
            items.append(item)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = args.out
    (out / "cogs").mkdir(parents=True, exist_ok=True)
    run = train_model(out, args.epochs)
    region = scratchsat.write_scene(
        out / "region.tif", out / "region_labels.tif", width=400, height=300, count=6, seed=3
    ).path
    catalog = out / "items.json"
    pystac.ItemCollection(write_items(region, out / "cogs")).save_object(str(catalog))

    items = pystac.ItemCollection.from_file(str(catalog))
    with rasterio.open(region) as src:
        bands, nodata = list(src.descriptions), src.nodata
    # One time step: both Items share their date, so odc-stac mosaics them onto one grid.
    chunks = {"x": 192, "y": 160}
    loaded = odc.stac.load(items, bands=bands, chunks=chunks, nodata=nodata, dtype="uint16")
    scene = loaded.isel(time=0).to_array("band")  # (band, y, x), the band names as coordinates
    scene = scene.rio.write_nodata(nodata)  # to_array keeps no band's nodata: say it once
    print(f"catalog: {len(items)} items → a {scene.sizes['x']} × {scene.sizes['y']} px scene")

    options = PredictOptions(device="cpu", cog=True)
    result = sx.predict_dataset(run, scene, options=options)  # lazy: nothing computed yet
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster),
    ):
        mosaic = sx.write_prediction(result, out / "mosaic.tif", options=options, overwrite=True)
    print(f"wrote {mosaic} on {args.workers} Dask workers")

    scratchsat.predict(run, [region], out / "file.tif", options=options, overwrite=True)
    with rasterio.open(mosaic) as a, rasterio.open(out / "file.tif") as b:
        same = float((a.read(1) == b.read(1)).mean())
        assert a.transform == b.transform and a.crs == b.crs
    print(f"agreement with predict on the region's GeoTIFF: {same:.4%} of pixels")
    with rasterio.open(mosaic) as src:
        found = np.unique(src.read(1))
    names = {c["code"]: c["name"] for c in json.loads(result.attrs["CLASSES"])}
    print(f"classes in the mosaic: {', '.join(names[int(c)] for c in found if int(c) in names)}")


if __name__ == "__main__":
    main()
