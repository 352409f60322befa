"""How cost grows with the number of scenes: 1, 10 and 100 small synthetic scenes through
``tile`` (one worker, N workers, N shards), ``train`` (one epoch) and ``predict``.

    python benchmarks/scale.py OUT [--counts 1,10,100] [--size 256] [--bands 4]
        [--workers 2] [--shards 2] [--device cpu]

Every step runs as its own ``python -m scratchsat`` command, as a user would run it, timed by
the wall clock; its peak memory is the largest resident set of the command and its worker
processes (``getrusage(RUSAGE_CHILDREN)`` of a fresh parent per step), so a step's memory is
not hidden by an earlier, larger one. N shards run as N commands at once (a job array on one
machine); their time is until the last ends and their memory the largest shard's. Each step's
time includes starting Python and importing torch (about 2 s here), a constant that the
per-scene figure divides away as scenes are added; the cost of one more scene is the slope
between scene counts, (T(n) − T(m)) / (n − m), which is flat where cost grows linearly. The
table gives, per step and scene count, the total time, the time per scene, that slope from the
previous count and the peak memory; ``OUT/scale.json`` has it all.
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

import numpy as np
import rasterio

from scratchsat.extras.synth import write_scene

PATCH = 32

# Run a command list (JSON in argv[1]) at once; print wall seconds and the children's peak RSS.
MEASURE = """
import json, resource, subprocess, sys, time
commands = json.loads(sys.argv[1])
start = time.perf_counter()
procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
errors = [p.communicate()[1].decode()[-2000:] for p in procs]
failed = [e for p, e in zip(procs, errors) if p.returncode]
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "failed": failed}))
"""


def measure(commands: list[list[str]]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(commands)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    if result["failed"]:
        raise SystemExit(f"a step failed: {result['failed'][0]}")
    return result


def scenes_in_a_row(folder: Path, count: int, size: int, bands: int) -> tuple[list[Path], Path]:
    """``count`` synthetic scenes side by side and one label raster over all of them."""
    paths, labels = [], []
    for i in range(count):
        scene = write_scene(
            folder / f"scene{i:03d}.tif",
            folder / "labels" / f"labels{i:03d}.tif",
            width=size,
            height=size,
            count=bands,
            seed=i,
            origin=(399_960.0 + i * size * 10, 5_800_020.0),
        )
        paths.append(scene.path)
        with rasterio.open(scene.labels_path) as src:
            labels.append(src.read(1))
            if i == 0:
                profile, tags = src.profile, src.tags()
    profile.update(width=size * count)
    mosaic = folder / "labels.tif"
    with rasterio.open(mosaic, "w", **profile) as dst:
        dst.write(np.concatenate(labels, axis=1), 1)
        dst.update_tags(**tags)
    shutil.rmtree(folder / "labels")
    return paths, mosaic


def run_count(out: Path, n: int, args) -> list[dict]:
    folder = out / f"{n}-scenes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scenes, labels = scenes_in_a_row(folder, n, args.size, args.bands)
    cli = [sys.executable, "-m", "scratchsat"]
    tile = [*cli, "tile", *map(str, scenes), "--labels", str(labels), "--patch-size", str(PATCH)]
    tile += ["--block-size", str(2 * PATCH)]  # small scenes: several split blocks each
    shards = min(args.shards, n)
    steps = {
        "tile, 1 worker": [[*tile, "--out", str(folder / "tiles")]],
        f"tile, {args.workers} workers": [
            [*tile, "--out", str(folder / "tiles-w"), "--workers", str(args.workers)]
        ],
        f"tile, {shards} shards": [
            [*tile, "--out", str(folder / "tiles-s"), "--shard", f"{k}/{shards}"]
            for k in range(1, shards + 1)
        ],
        "train, 1 epoch": [
            [
                *cli,
                "train",
                str(folder / "tiles"),
                "--out",
                str(folder / "run"),
                "--epochs",
                "1",
                "--width",
                "8",
                "--batch-size",
                "32",
                "--device",
                args.device,
            ]
        ],
        "predict": [
            [
                *cli,
                "predict",
                str(folder / "run"),
                *map(str, scenes),
                "--out",
                str(folder / "pred"),
                "--device",
                args.device,
            ]
        ],
    }
    rows = []
    for step, commands in steps.items():
        result = measure(commands)
        row = {
            "step": step.replace(f"{args.workers} workers", "N workers").replace(
                f"{shards} shards", "N shards"
            ),
            "scenes": n,
            "seconds": result["seconds"],
            "seconds_per_scene": result["seconds"] / n,
            "peak_mb": result["peak_mb"],
        }
        print(
            f"{row['step']:<16} {n:>4} scenes  {row['seconds']:7.1f} s  "
            f"{row['seconds_per_scene']:6.2f} s/scene  {row['peak_mb']:6.0f} MB",
            flush=True,
        )
        rows.append(row)
    shutil.rmtree(folder)  # 100 scenes and their outputs: a few hundred MB
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--counts", default="1,10,100")
    parser.add_argument("--size", type=int, default=256, help="scene side in pixels")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        rows += run_count(args.out, n, args)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "settings": vars(args) | {"out": str(args.out), "patch_size": PATCH},
        "rows": rows,
        "wall_s": time.time() - started,
    }
    previous: dict[str, dict] = {}
    for r in rows:  # the slope from the previous scene count of the same step
        before = previous.get(r["step"])
        r["seconds_per_added_scene"] = (
            (r["seconds"] - before["seconds"]) / (r["scenes"] - before["scenes"])
            if before
            else None
        )
        previous[r["step"]] = r
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    print("\n| step | scenes | total s | s / scene | s / added scene | peak MB |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["step"], r["scenes"])):
        added = r["seconds_per_added_scene"]
        print(
            f"| {r['step']} | {r['scenes']} | {r['seconds']:.1f} | {r['seconds_per_scene']:.3f} | "
            f"{'–' if added is None else f'{added:.3f}'} | {r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
