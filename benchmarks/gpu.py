"""Everything a GPU session should measure, in one command (see DEVELOPERS.md, "Measuring on
a GPU"): the full `scratchsat bench` on the device, and predict on a 10,000 × 10,000 × 13 scene
(the issue's size) with a U-Net at 256 px, with the peak host and device memory.

    python benchmarks/gpu.py OUT_DIR [--device cuda] [--side 10000] [--tiny]

Writes OUT_DIR/gpu.json and prints a short table last. ``--tiny`` runs the same code with small
sizes, to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

import scratchsat.bench as bench
from scratchsat.bench.predict import bench_predict
from scratchsat.geo.raster import geotiff_profile


def write_big_scene(path: Path, side: int, seed: int = 0) -> Path:
    """A 13-band uint16 scene written strip by strip (memory stays small at any size)."""
    rng = np.random.default_rng(seed)
    profile = geotiff_profile(
        width=side,
        height=side,
        count=13,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(400000, 5800000, 10, 10),
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, side, 512):
            rows = min(512, side - top)
            base = rng.integers(300, 3000, (13, 1, 1), dtype=np.uint16)
            noise = rng.integers(0, 200, (13, rows, side), dtype=np.uint16)
            dst.write(base + noise, window=rasterio.windows.Window(0, top, side, rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        bench.SIZES["full"] = {
            "scene": 256,
            "load_patch": 64,
            "train_scene": 256,
            "epochs": 1,
            "steps": 1,
            "resnet_batch": 4,
            "unet_patch": 32,
            "unet_batch": 4,
        }
        args.side = 512
    start = time.perf_counter()
    result = bench.run_benchmarks(quick=False, device=args.device, log=print)
    scene = write_big_scene(args.out / "big.tif", args.side)
    patch = 32 if args.tiny else 256
    result["predict_big"] = bench_predict(
        scene, patch_size=patch, device=args.device, batch_size=4 if args.tiny else 32
    )
    big = result["predict_big"]
    big["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        big["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    scene.unlink()
    result["seconds"] = time.perf_counter() - start
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    hw = result["hardware"]
    print(f"\n{hw['gpu'] or hw['cpu']} ({hw['device']}), torch {hw['versions']['torch']}")
    for what, measured, bound, ratio in bench.rows(result):
        print(f"{what[:60]:60} {measured:>20} {bound:>36} {ratio:>6}")
    p = result["predict_big"]
    bound = min(p["model_only_mpx_s"], p["read_mpx_s"])
    bounds = f"model {p['model_only_mpx_s']:.1f}, read {p['read_mpx_s']:.1f} Mpx/s"
    print(
        f"{'predict ' + str(p['scene']) + ' px':60} {p['end_to_end_mpx_s']:>14.1f} Mpx/s "
        f"{bounds:>36} {p['end_to_end_mpx_s'] / bound:>6.2f}"
    )
    print(f"peak host memory {p['peak_rss_mb']:.0f} MB, device {p.get('peak_cuda_mb', 0):.0f} MB")


if __name__ == "__main__":
    main()
