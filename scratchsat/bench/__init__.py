"""``scratchsat bench``: throughput of each step beside a bound measured in the same run.

- tile: MB/s of raw band data vs one full read of the same file (GDAL threads on);
- load: patches/s through the Dataset (with and without augmentation) vs raw mmap slicing;
- train: end-to-end samples/s vs model-only on random tensors on the device, plus the classic
  fp32 loop (batch 32, ``loss.item()`` every step) as a reference point;
- predict: Mpx/s end to end vs the model-only forward rate and vs reading the scene.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .load import bench_load
from .predict import bench_predict
from .tile import bench_tile
from .train import bench_train

SIZES = {  # quick: under 2 minutes on a 2-core CPU
    "quick": {
        "scene": 1024,
        "load_patch": 128,
        "train_scene": 640,
        "epochs": 1,
        "steps": 3,
        "resnet_batch": 32,
        "unet_patch": 64,
        "unet_batch": 16,
    },
    "full": {
        "scene": 2048,
        "load_patch": 256,
        "train_scene": 2048,
        "epochs": 2,
        "steps": 30,
        "resnet_batch": 256,
        "unet_patch": 256,
        "unet_batch": 32,
    },
}


def hardware(device: str) -> dict:
    from importlib.metadata import version

    import numpy
    import rasterio
    import torch

    from .._version import __version__
    from ..device import pick_device

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    chosen = pick_device(device)
    gpu = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "device": str(chosen),
        "versions": {
            "scratchsat": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "numpy": numpy.__version__,
            "albumentations": version("albumentations"),  # not imported: augment owns it
        },
    }


STEPS = ("tile", "load", "train", "predict")


def run_benchmarks(
    quick: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = lambda message: None,
    tile_scene: str | os.PathLike | None = None,
    only: Sequence[str] = STEPS,
) -> dict:
    """The benchmarks in ``only`` (all by default); returns the figures (see :func:`rows` for
    the table). With ``tile_scene``, tile is also measured on that file (one constant class as
    labels). Load and predict read the synthetic tile benchmark's output, so it always runs."""
    size = SIZES["quick" if quick else "full"]
    result: dict = {"hardware": hardware(device), "quick": quick}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        log("tile: writing a synthetic 13-band scene and tiling it")
        result["tile"] = bench_tile(
            size=size["scene"], patch_size=size["load_patch"], keep=tmp, repeats=2
        )
        if tile_scene is not None:
            log(f"tile: {tile_scene}")
            result["tile_scene"] = bench_tile(
                Path(tile_scene), patch_size=size["load_patch"], repeats=2 if quick else 3
            )
        if "load" in only:
            log("load: reading patches through the Dataset")
            result["load"] = bench_load(tmp / "tiles", passes=1 if quick else 2)
        if "predict" in only:
            log("predict: U-Net over the tile benchmark's scene")
            result["predict"] = bench_predict(
                tmp / "scene.tif", patch_size=size["unet_patch"], device=device
            )
        if "train" in only:
            result["train"] = train_figures(tmp, size, device, result["hardware"]["device"], log)
    return result


def train_figures(tmp: Path, size: dict, device: str, chosen: str, log) -> list[dict]:
    """ResNet-18 (classification, 64 px) and U-Net (segmentation) on synthetic tiles."""
    from ..extras.synth import write_scene
    from ..tiles.tiling import TileOptions, tile

    scene = write_scene(
        tmp / "t.tif",
        tmp / "t_labels.tif",
        width=size["train_scene"],
        height=size["train_scene"],
        seed=3,
    )
    options = TileOptions(patch_size=64, task="classification", block_size=128)
    classification = tile([scene.path], scene.labels_path, tmp / "cls", options=options)
    p = size["unet_patch"]
    options = TileOptions(patch_size=p, block_size=2 * p, stride=p // 2)
    segmentation = tile([scene.path], scene.labels_path, tmp / "seg", options=options)
    # On a GPU both data paths: D4 per batch on the device, and albumentations in workers.
    ways = [None] if chosen == "cpu" else [True, False]
    figures = []
    for tiles, model, batch in (
        (classification, "resnet18", size["resnet_batch"]),
        (segmentation, "unet", size["unet_batch"]),
    ):
        for way in ways:
            log(f"train: {model} on {tiles.name} patches, batch {batch}")
            figures.append(
                bench_train(
                    tiles,
                    model=model,
                    batch_size=batch,
                    device=device,
                    batch_augment=way,
                    epochs=size["epochs"],
                    steps=size["steps"],
                )
            )
    return figures


def rows(result: dict) -> list[tuple[str, str, str, str]]:
    """(what, measured, bound, ratio) rows of the table."""
    out = []
    for key in ("tile", "tile_scene"):
        if key not in result:
            continue
        t = result[key]
        source = "synthetic" if key == "tile" else Path(t["scene"]).name
        out.append(
            (
                f"tile {source} {t['size'][0]}×{t['size'][1]}×{t['bands']} {t['dtype']} "
                f"({t['megabytes']:.1f} MB), {t['patch_size']} px, {t['workers']} worker(s)",
                f"{t['tile_mb_s']:.0f} MB/s",
                f"full read {t['read_mb_s']:.0f} MB/s",
                f"{t['ratio']:.2f}",
            )
        )
    load = result.get("load", {"patches_per_s": {}, "patch": []})
    bound = load["patches_per_s"].get("raw slices", 0.0)
    shape = "×".join(map(str, load["patch"]))
    for name, value in load["patches_per_s"].items():
        if name != "raw slices":
            out.append(
                (
                    f"load {shape}: {name}",
                    f"{value:,.0f} patches/s",
                    f"raw slices {bound:,.0f}/s",
                    f"{value / bound:.2f}",
                )
            )
    for r in result.get("train", []):
        shape = "×".join(map(str, r["patch"]))
        what = (
            f"train {r['model']} {shape}, batch {r['batch_size']}, {r['precision']}, "
            f"d4 {r['data_path']}"
        )
        out.append(
            (
                what,
                f"{r['end_to_end']:,.0f} samples/s",
                f"model only {r['model_only']:,.0f}/s",
                f"{r['end_to_end'] / r['model_only']:.2f}",
            )
        )
        out.append(
            (
                f"  classic fp32 loop, batch 32 ({r['model']})",
                f"{r['classic_fp32_batch32']:,.0f} samples/s",
                "",
                "",
            )
        )
    if "predict" not in result:
        return out
    p = result["predict"]
    bound = min(p["model_only_mpx_s"], p["read_mpx_s"])
    out.append(
        (
            f"predict {p['model']} {p['patch_size']} px, {p['scene'][0]}×{p['scene'][1]}",
            f"{p['end_to_end_mpx_s']:.2f} Mpx/s",
            f"model {p['model_only_mpx_s']:.2f}, read {p['read_mpx_s']:.1f} Mpx/s",
            f"{p['end_to_end_mpx_s'] / bound:.2f}",
        )
    )
    return out
