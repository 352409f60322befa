"""``scratchsat predict``: plan the outputs, refuse bad scenes up front, then predict each
scene here or in worker processes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..device import Ranks, pick_device
from ..errors import InputError
from ..geo.cluster import check_address
from ..geo.outputs import check_output, write_text
from ..geo.raster import open_raster
from ..geo.sources import as_source
from ..geo.vectorize import driver_for, vector_files, vectorize
from .engine import Progress, load_predictor, predict_scene, scene_indexes
from .options import DEFAULTS, MAX_WINDOW, PredictOptions
from .pool import Tally, predict_in_processes
from .stac import stac_item
from .writers import outputs_for


def predict(
    bundle: str | os.PathLike,
    scenes: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    uncertainty: str | os.PathLike | None = None,
    vector: str | os.PathLike | None = None,
    stac: bool = False,
    dry_run: bool = False,
    options: PredictOptions = DEFAULTS,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
    dask: str | None = None,
    summary: Callable[[list], None] | None = None,
) -> list[Path]:
    """Predict scenes with a model bundle; returns the class-map paths written.

    ``out`` is a ``.tif`` path for one scene, or a folder (one ``<scene name>.tif`` each);
    ``probabilities`` likewise, for per-class probability rasters, and ``uncertainty`` for
    margin, normalised entropy and top probability (float32); ``vector`` (a vector file for
    one scene, or a folder: ``<scene name>.gpkg``) gets the map's polygons, as
    :func:`~scratchsat.geo.vectorize.vectorize` writes them; ``stac`` a STAC Item beside each
    class map (:mod:`.stac`). With ``workers`` > 1,
    scenes are predicted in that many processes (each loads the model once); with ``dask``
    (a scheduler's address, or ``local:N``) as tasks of a Dask cluster (:mod:`.cluster`),
    and ``summary`` gets a :class:`~.cluster.SceneDone` per scene at the end. ``progress``
    counts pixels over all scenes.
    """
    check_options(options, workers, dask)
    plan = outputs_for(
        [as_source(s) for s in scenes],
        Path(out),
        Path(probabilities) if probabilities else None,
        overwrite,
        Path(uncertainty) if uncertainty else None,
        stac,
    )
    polygons = vector_targets(plan, vector, overwrite)
    ranks = Ranks.from_env()
    device = pick_device(options.device)
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    predictor = load_predictor(bundle, options, device)
    pixels, matched = [], []
    for scene, _outputs in plan:
        with open_raster(scene) as src:
            indexes = scene_indexes(scene, src, predictor.meta, warn=False)  # refuse bad scenes
            pixels.append(src.width * src.height)
            matched.append((indexes, src.descriptions, src.width, src.height))
    if dry_run:
        return dry_run_report(predictor, plan, matched, polygons, options)  # type: ignore[return-value]
    every = [outputs.classes for _, outputs in plan]
    if ranks.distributed:  # deal the scenes out: this process predicts every world_size-th
        wait_for_ranks()  # every process has checked every output before any is written
        mine = range(ranks.rank, len(plan), ranks.world_size)
        plan = [plan[i] for i in mine]
        pixels = [pixels[i] for i in mine]
        polygons = [polygons[i] for i in mine]
    tally = Tally(pixels, progress)
    if dask is not None:
        from .cluster import predict_on_cluster

        predict_on_cluster(bundle, plan, pixels, options, overwrite, tally, dask, summary)
    elif workers > 1 and len(plan) > 1:
        predict_in_processes(bundle, plan, pixels, options, overwrite, tally, workers)
    else:
        for i, (scene, outputs) in enumerate(plan):
            predict_scene(predictor, scene, outputs, options, overwrite, tally.for_scene(i))
    for (scene, outputs), target in zip(plan, polygons, strict=True):
        write_extras(scene, outputs, target, predictor.meta, Path(bundle), options, overwrite)
    if ranks.distributed:
        wait_for_ranks()  # every scene is written: rank 0's summary is true
    return every


def vector_targets(plan, vector, overwrite: bool) -> list[Path | None]:
    """``--vector``'s file for each scene (None without it), refused where one of its files
    is a file the class map writes too."""
    polygons = [
        vector_path(Path(vector), scene, len(plan) == 1, overwrite) if vector else None
        for scene, _ in plan
    ]
    for (_, outputs), target in zip(plan, polygons, strict=True):
        taken = {p.resolve() for p in (outputs.classes, *outputs.sidecar_paths())}
        for path in vector_files(target, *driver_for(target, None)) if target else ():
            if path.resolve() in taken:
                raise InputError(
                    f"--vector {target} would write {path}, which the class map writes too; "
                    "name the vector file differently (or use .gpkg, which keeps its style inside)"
                )
    return polygons


def write_extras(scene, outputs, target, meta, bundle: Path, options, overwrite: bool) -> None:
    """After a scene's map: its polygons (``--vector``) and its STAC Item (``--stac``)."""
    if target is not None:
        vectorize(outputs.classes, target, uncertainty=outputs.uncertainty, overwrite=overwrite)
    if outputs.stac is not None:
        item = stac_item(
            outputs.classes,
            scene,
            meta,
            bundle,
            probabilities=outputs.probabilities,
            uncertainty=outputs.uncertainty,
            vector=target,
            cog=options.cog,
        )
        write_text(outputs.stac, json.dumps(item, indent=2) + "\n", overwrite=overwrite)


def wait_for_ranks() -> None:
    """A barrier across the launcher's processes (gloo: no GPU needed for it)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def vector_path(vector: Path, scene, single: bool, overwrite: bool) -> Path:
    """``vector`` itself for one scene named with a vector suffix, else
    ``vector/<scene name>.gpkg``; refused up front if it exists or the format is unknown."""
    path = vector if single and vector.suffix else vector / f"{scene.stem}.gpkg"
    if vector.suffix and not single:
        raise InputError(
            f"--vector {vector} is a file name but there are several scenes; pass a folder"
        )
    for candidate in vector_files(path, *driver_for(path, None)):
        check_output(candidate, overwrite)
    return path


def dry_run_report(predictor, plan, matched, polygons, options: PredictOptions) -> dict:
    """``predict --dry-run``: per scene, how its bands match the model's, the windows, and the
    outputs with their uncompressed sizes; nothing is predicted or written."""
    from ..geo.classmap import class_dtype_and_nodata
    from ..geo.windows import blend_stride, cover_offsets, window_stride

    size = options.patch_size or predictor.meta.patch_size
    step = blend_stride if predictor.task == "segmentation" else window_stride
    stride = step(size, options.overlap)
    dtype, _ = class_dtype_and_nodata([c["code"] for c in predictor.classes])
    classes = len(predictor.classes)
    rows = []
    for (scene, outputs), (indexes, descriptions, width, height), vector in zip(
        plan, matched, polygons, strict=True
    ):
        windows = len(cover_offsets(height, size, stride)) * len(cover_offsets(width, size, stride))
        pixels = width * height
        files = {str(outputs.classes): pixels * (1 if dtype == "uint8" else 2)}
        if outputs.probabilities:
            files[str(outputs.probabilities)] = (
                pixels * classes * (4 if options.float_probabilities else 1)
            )
        if outputs.uncertainty:
            files[str(outputs.uncertainty)] = pixels * 3 * 4
        bands = [
            f"{name} ← band {i}" + (f" ({descriptions[i - 1]})" if descriptions[i - 1] else "")
            for name, i in zip(predictor.meta.band_list, indexes, strict=True)
        ]
        rows.append(
            {
                "scene": str(scene),
                "size": [width, height],
                "bands": bands,
                "windows": windows * (8 if options.tta else 1) * len(predictor.members),
                "outputs": files,
                "vector": str(vector) if vector else None,
            }
        )
    return {"dry_run": True, "window": size, "stride": stride, "scenes": rows}


def check_options(options: PredictOptions, workers: int = 1, dask: str | None = None) -> None:
    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}")
    if dask is not None:
        check_address(dask, workers)
        if Ranks.from_env().distributed:
            raise InputError(
                "--dask under torchrun: the launcher's processes and the Dask cluster would "
                "both deal the scenes out; run predict --dask as one command"
            )
    if not 0 <= options.overlap < 1:
        raise InputError(f"--overlap must be a fraction in [0, 1), not {options.overlap:g}")
    if options.batch_size < 1 or (options.patch_size is not None and options.patch_size < 8):
        raise InputError("--batch-size must be at least 1 and --patch-size at least 8")
    if options.patch_size is not None and options.patch_size > MAX_WINDOW:
        raise InputError(
            f"--patch-size {options.patch_size} is larger than {MAX_WINDOW} px: one window "
            "would need more memory than it is worth (the U-Net's context is far smaller); "
            "use a window of a few hundred to a few thousand pixels"
        )
