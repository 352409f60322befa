"""``scratchsat stack`` and ``scratchsat tile``: from scenes to a tiles folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import comma_list
from ..tiles.options import TileOptions
from .app import command
from .console import progress_bar, results, say
from .options import (
    Background,
    Dask,
    DryRun,
    LabelField,
    OptionalLabels,
    Overwrite,
    fields_of,
    out_option,
    with_fields,
)


@command
def stack(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Input rasters (paths, URLs or /vsi… paths), one or more bands each, in order."
        ),
    ],
    out: Annotated[Path, out_option(help="Output GeoTIFF.")],
    resolution: Annotated[
        float | None,
        typer.Option(help="Output pixel size in CRS units (default: the finest input's)."),
    ] = None,
    band_names: Annotated[
        str | None, typer.Option(help="Comma-separated band names (default: from the file names).")
    ] = None,
    resampling: Annotated[
        str,
        typer.Option(
            help="nearest, bilinear (default, for continuous data), cubic, average or mode."
        ),
    ] = "bilinear",
    cog: Annotated[
        bool, typer.Option("--cog", help="Write a Cloud-Optimized GeoTIFF with overviews.")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Stack per-band files into one multi-band GeoTIFF on one grid.

    \b
    Example: scratchsat stack T33UUU_*_B0[1-8].jp2 --out scene.tif
    """
    from ..tiles.stack import stack as run_stack

    with progress_bar("stack") as callback:
        path = run_stack(
            files,
            out,
            resolution=resolution,
            band_names=comma_list(band_names) if band_names else None,
            resampling=resampling,
            cog=cog,
            overwrite=overwrite,
            progress=callback,
        )
    say(f"wrote {path}")


ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="K/N: tile only this machine's share of the scenes (sorted, every N-th from the "
        "K-th) into OUT/shard-K-of-N; under torchrun (RANK, WORLD_SIZE) by default.",
    ),
]


@command
@with_fields(TileOptions)
def tile(
    scenes: Annotated[
        list[str],
        typer.Argument(
            help="Scene GeoTIFFs (same bands), or one folder of class folders of chips."
        ),
    ],
    labels: OptionalLabels = None,
    out: Annotated[
        Path | None,
        out_option(help="Output folder (default: tiles/<scene name>)."),
    ] = None,
    label_field: LabelField = None,
    background: Background = None,
    shard: ShardOption = None,
    dask: Dask = None,
    overwrite: Overwrite = False,
    dry_run: DryRun = False,
    **options,  # one option per field of TileOptions (see with_fields)
) -> None:
    """Cut scenes and labels into patches with statistics, spatial splits and an index.

    \b
    Example: scratchsat tile scene.tif --labels landuse.gpkg --label-field fclass
    --patch-size 32 --out tiles/brandenburg
    A job array of 8: scratchsat tile scenes/*.tif --labels l.gpkg --out tiles/region --shard
    $K/8, then scratchsat train tiles/region/shard-* --out runs/region
    """
    from ..tiles.options import Shard
    from ..tiles.tiling import tile as run_tile

    with progress_bar("tile") as callback:
        folder = run_tile(
            scenes,
            labels,
            out,
            label_field=label_field,
            background=background,
            options=TileOptions(**fields_of(options, TileOptions)),
            overwrite=overwrite,
            progress=callback,
            dry_run=dry_run,
            shard=Shard.parse(shard) if shard else None,
            dask=dask,
        )
    if dry_run:
        from .views import show_tile_dry_run

        show_tile_dry_run(folder, out, results())
        return
    from ..tiles.format import read_dataset_json

    info = read_dataset_json(folder)
    splits = ", ".join(f"{n} {name}" for name, n in info["splits"].items())
    skipped = ", ".join(f"{n} {why}" for why, n in info["skipped"].items() if n) or "none"
    say(f"wrote {info['patches']} patches ({splits}; skipped: {skipped}) to {folder}")
