"""``scratchsat predict``, ``vectorize``, ``suggest`` and ``export``: from a run to maps,
polygons, windows worth labelling and ONNX. ``predict``'s options are the fields of
``settings.PredictOptions`` (see ``options.with_fields``) beside its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import PredictOptions
from .app import command
from .console import progress_bar, results, say, state
from .options import (
    ClassMap,
    Dask,
    Device,
    Overwrite,
    RunFolderArgument,
    fields_of,
    out_option,
    with_fields,
)

# predict's own options beside PredictOptions' fields: where its outputs go, how it runs
Model = Annotated[
    Path,
    typer.Argument(help="Run folder (or its model.json) from `train`, or a .onnx from `export`."),
]
Probabilities = Annotated[
    Path | None,
    typer.Option(help="Also write per-class probabilities here (a .tif, or a folder)."),
]
Uncertainty = Annotated[
    Path | None,
    typer.Option(
        help="Also write how sure the model is here (a .tif, or a folder): margin between the "
        "two most probable classes, normalised entropy, top probability (float32)."
    ),
]
Vector = Annotated[
    Path | None,
    typer.Option(
        help="Also write the map as polygons here (a .gpkg, or a folder), as `vectorize` does."
    ),
]
Stac = Annotated[
    bool,
    typer.Option(
        "--stac",
        help="Also write a STAC Item (PRED.stac.json) beside each class map: grid, classes, the "
        "model's band contract and provenance.",
    ),
]
Workers = Annotated[
    int, typer.Option(help="Processes predicting scenes in parallel (several scenes).")
]
PredictDryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Check scenes and outputs, predict nothing: bands, windows, sizes."
    ),
]


@command
@with_fields(PredictOptions)
def predict(
    run: Model,
    scenes: Annotated[list[str], typer.Argument(help="Scenes to predict (GeoTIFFs).")],
    out: Annotated[
        Path,
        out_option(help="Class-map GeoTIFF for one scene, or a folder for several."),
    ],
    probabilities: Probabilities = None,
    uncertainty: Uncertainty = None,
    vector: Vector = None,
    stac: Stac = False,
    workers: Workers = 1,
    dask: Dask = None,
    overwrite: Overwrite = False,
    dry_run: PredictDryRun = False,
    **options,  # one option per field of PredictOptions (see with_fields)
) -> None:
    """Predict scenes to class-map GeoTIFFs on their exact grids, with a legend.

    \b
    Example: scratchsat predict runs/brandenburg brandenburg.tif --out brandenburg_classes.tif
    """
    from ..prediction import predict as run_predict
    from ..ranks import Ranks
    from .views import scene_table

    ranks = Ranks.from_env()
    state["quiet"] = state["quiet"] or not ranks.main  # under torchrun, rank 0 alone speaks
    with progress_bar("predict") as callback:
        paths = run_predict(
            run,
            scenes,
            out,
            probabilities=probabilities,
            uncertainty=uncertainty,
            vector=vector,
            stac=stac,
            options=PredictOptions(**fields_of(options, PredictOptions)),
            overwrite=overwrite,
            progress=callback,
            workers=workers,
            dask=dask,
            summary=lambda rows: results().print(scene_table(rows)),
            dry_run=dry_run,
        )
    if dry_run:
        from .views import show_predict_dry_run

        show_predict_dry_run(paths, results())  # type: ignore[arg-type]
        return
    for path in paths:
        say(f"wrote {path}")
    if ranks.distributed:
        say(f"{len(paths)} scenes predicted by {ranks.world_size} processes")


@command
def vectorize(
    classmap: ClassMap,
    out: Annotated[
        Path,
        out_option(help="Vector file: .gpkg (default format), .geojson, .fgb, .shp."),
    ],
    uncertainty: Annotated[
        str | None,
        typer.Option(
            help="The map's --uncertainty raster: adds each polygon's mean top probability."
        ),
    ] = None,
    min_area: Annotated[
        float,
        typer.Option(
            help="Regions smaller than this (CRS units², m² for UTM) join their largest neighbour."
        ),
    ] = 0.0,
    drop_small: Annotated[
        bool, typer.Option("--drop-small", help="Leave regions under --min-area out instead.")
    ] = False,
    simplify: Annotated[
        float,
        typer.Option(help="Simplify each polygon to this tolerance (CRS units), keeping it valid."),
    ] = 0.0,
    classes: Annotated[
        list[str] | None,
        typer.Option("--classes", help="Only this class (name or code); repeat for more."),
    ] = None,
    driver: Annotated[
        str | None, typer.Option(help="OGR driver, when the suffix does not tell (e.g. GPKG).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Class map to polygons: one feature per connected region of a class, with its class,
    area and (given the uncertainty raster) mean top probability; styled for QGIS.

    \b
    Example: scratchsat vectorize brandenburg_classes.tif --out classes.gpkg --min-area 5000
    """
    from ..geo.vectorize import vectorize as run_vectorize

    report = run_vectorize(
        classmap,
        out,
        uncertainty=uncertainty,
        min_area=min_area,
        drop_small=drop_small,
        simplify=simplify,
        keep=classes,
        driver=driver,
        overwrite=overwrite,
    )
    say(f"wrote {report.features} polygons to {report.path}")


@command
def suggest(
    run: RunFolderArgument,
    scene: Annotated[str, typer.Argument(help="Scene to look for windows worth labelling.")],
    out: Annotated[Path, out_option(help="Footprints: .gpkg (default), .geojson or .fgb.")],
    n: Annotated[int, typer.Option("--n", help="How many windows to suggest.")] = 50,
    tiles: Annotated[
        Path | None,
        typer.Option(help="Tiles folder whose patches are labelled already (default: the run's)."),
    ] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """What to label next: the training-patch-sized windows where the model is least sure,
    spread over the scene, none overlapping a labelled patch; footprints to digitise in QGIS.

    \b
    Example: scratchsat suggest runs/brandenburg brandenburg.tif --n 50 --out to_label.gpkg
    """
    from ..prediction.suggest import suggest as run_suggest

    with progress_bar("suggest") as callback:
        found = run_suggest(
            run,
            scene,
            out,
            n=n,
            tiles=tiles,
            options=PredictOptions(device=device),
            overwrite=overwrite,
            progress=callback,
        )
    say(f"wrote {len(found)} windows to label to {out}")


@command
def export(
    run: RunFolderArgument,
    onnx: Annotated[Path, typer.Option("--onnx", help="Write the model here as ONNX.")],
    deepness: Annotated[
        bool,
        typer.Option(
            "--deepness",
            help="For the QGIS Deepness plugin: fixed tile size, 8-bit input scaled as it does.",
        ),
    ] = False,
    tile_size: Annotated[
        int | None, typer.Option(help="With --deepness: tile side (default: the patch size).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Export a run's model to ONNX with its band contract, classes and normalisation, for
    onnxruntime, QGIS (Deepness) and other tools; `predict` runs the file too.

    \b
    Example: scratchsat export runs/brandenburg --onnx brandenburg.onnx
    """
    from ..prediction.onnx import export_onnx

    path = export_onnx(run, onnx, deepness=deepness, tile_size=tile_size, overwrite=overwrite)
    say(f"wrote {path}")
