"""What a Dask scheduler costs: the same scenes through ``predict --workers`` and ``predict
--dask local:N``, and one large scene through ``predict`` and the lazy xarray path on 1 and 2
Dask worker processes.

    python benchmarks/cluster.py OUT [--scenes 8] [--size 512] [--large 2048] [--bands 6]
        [--device cpu]

Every step is its own command, timed by the wall clock from start to exit, as a user runs it
(so starting Python, importing torch and, for Dask, starting the LocalCluster are in it); its
peak memory is the largest resident set among the command and its worker processes (as in
``benchmarks/scale.py``: ``getrusage(RUSAGE_CHILDREN)`` of a fresh parent per step), which
bounds the memory of each worker. A tiny U-Net (width 8, one epoch) trained here predicts
every step; the model is not the point, the dealing-out is. ``OUT/cluster.json`` has it all.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scale import measure, scenes_in_a_row

PATCH = 32

LAZY = """
import logging, sys
import rioxarray
from distributed import Client, LocalCluster
import scratchsat.xarray as sx
from scratchsat.prediction import PredictOptions

if __name__ == "__main__":
    run, scene, out, workers, device = sys.argv[1:]
    options = PredictOptions(device=device)
    with LocalCluster(n_workers=int(workers), threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster):
        data = rioxarray.open_rasterio(scene, chunks={"y": 512, "x": 512})
        sx.write_prediction(sx.predict_dataset(run, data, options=options), out, options=options)
"""


def steps(folder: Path, scenes: list[Path], large: Path, device: str) -> dict[str, list]:
    cli = [sys.executable, "-m", "scratchsat"]
    run = str(folder / "run")
    predict = [*cli, "predict", run, *map(str, scenes), "--device", device, "--out"]
    lazy = folder / "lazy.py"
    lazy.write_text(LAZY)
    one = [*cli, "predict", run, str(large), "--device", device, "--out"]
    return {
        "scenes: predict, 1 process": [[*predict, str(folder / "p1")]],
        "scenes: predict --workers 2": [[*predict, str(folder / "p2"), "--workers", "2"]],
        "scenes: predict --dask local:1": [[*predict, str(folder / "d1"), "--dask", "local:1"]],
        "scenes: predict --dask local:2": [[*predict, str(folder / "d2"), "--dask", "local:2"]],
        "large scene: predict": [[*one, str(folder / "large.tif")]],
        "large scene: xarray, 1 Dask worker": [
            [sys.executable, str(lazy), run, str(large), str(folder / "x1.tif"), "1", device]
        ],
        "large scene: xarray, 2 Dask workers": [
            [sys.executable, str(lazy), run, str(large), str(folder / "x2.tif"), "2", device]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="side of each scene in px")
    parser.add_argument("--large", type=int, default=2048, help="side of the large scene in px")
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = args.out / "work"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.time()
    scenes, labels = scenes_in_a_row(folder, args.scenes, args.size, args.bands)
    large = scenes_in_a_row(folder / "large", 1, args.large, args.bands)[0][0]
    cli = [sys.executable, "-m", "scratchsat"]
    subprocess.run(
        [*cli, "-q", "tile", str(scenes[0]), "--labels", str(labels), "--out", str(folder / "t")]
        + ["--patch-size", str(PATCH)],
        check=True,
    )
    subprocess.run(
        [*cli, "-q", "train", str(folder / "t"), "--out", str(folder / "run"), "--epochs", "1"]
        + ["--width", "8", "--device", args.device],
        check=True,
    )
    rows = []
    for step, commands in steps(folder, scenes, large, args.device).items():
        result = measure(commands)
        pixels = (args.large**2) if step.startswith("large") else args.scenes * args.size**2
        rows.append(
            {
                "step": step,
                "seconds": result["seconds"],
                "mpx_per_s": pixels / 1e6 / result["seconds"],
                "peak_mb": result["peak_mb"],
            }
        )
        print(f"{step:<38} {result['seconds']:7.1f} s  {result['peak_mb']:6.0f} MB", flush=True)
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "settings": vars(args) | {"out": str(args.out), "patch_size": PATCH},
        "rows": rows,
        "wall_s": time.time() - started,
    }
    (args.out / "cluster.json").write_text(json.dumps(out, indent=2))
    shutil.rmtree(folder)
    print("\n| step | s | Mpx/s | peak MB (largest process) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['seconds']:.1f} | {r['mpx_per_s']:.2f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
