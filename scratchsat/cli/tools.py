"""``scratchsat evaluate``, ``demo``, ``info`` and ``bench``: scores, the whole flow on
synthetic scenes, descriptions of files and folders, throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .app import command
from .console import progress_bar, results, say
from .options import (
    STDOUT,
    Background,
    ClassMap,
    Device,
    LabelField,
    Labels,
    Overwrite,
    emit_json,
    json_option,
    out_option,
)


@command
def evaluate(
    prediction: ClassMap,
    labels: Labels,
    label_field: LabelField = None,
    background: Background = None,
    tiles: Annotated[
        Path | None, typer.Option(help="Tiles folder of the scene, to score one --split only.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="train, val or test: only the pixels of that split's patches."),
    ] = None,
    json_out: Annotated[Path | None, json_option("the scores")] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write a self-contained page: scores, per-class table, confusion matrix "
            "and area estimates."
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Score a class map against labels: accuracy, per-class IoU/F1/precision/recall, confusion.

    \b
    Example: scratchsat evaluate pred.tif --labels landuse.gpkg --label-field fclass
    --tiles tiles/brandenburg --split test --json scores.json --html scores.html
    """
    from ..evaluation import check_score_outputs, write_scores
    from ..evaluation import evaluate as run_evaluate
    from .views import show_scores

    to_file = None if json_out == STDOUT else json_out
    check_score_outputs(overwrite, to_file, html)
    with progress_bar("evaluate") as callback:
        result = run_evaluate(
            prediction,
            labels,
            label_field=label_field,
            background=background,
            tiles=tiles,
            split=split,
            progress=callback,
        )
    show_scores(result, results(stderr=json_out == STDOUT))  # stdout: JSON only
    for path in write_scores(result, to_file, html, overwrite):
        say(f"wrote {path}")
    if json_out == STDOUT:
        emit_json(STDOUT, result, overwrite)


@command
def demo(
    out: Annotated[Path, out_option(help="Folder for everything.")] = Path("scratchsat-demo"),
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: 12 on the CPU, 40 on a GPU).")
    ] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Run the whole flow on synthetic scenes: tile, train from scratch, predict, evaluate.

    Leaves both scenes, the tiles, the run folder, the prediction GeoTIFF and pictures in --out.

    \b
    Example: scratchsat demo --out scratchsat-demo
    """
    from ..extras.demo import demo as run_demo

    result = run_demo(
        out, epochs=epochs, device=device, overwrite=overwrite, bars=progress_bar, log=say
    )
    files = result["files"]
    typer.echo(
        f"Unseen scene: overall accuracy {result['overall_accuracy']:.3f}, mean IoU "
        f"{result['mean_iou']:.3f}\n"
        f"  prediction   {files['prediction']} (open it in QGIS: the legend names the classes)\n"
        f"  pictures     {', '.join(files['pictures'])}\n"
        f"  model bundle {files['run']}\n  tiles        {files['tiles']}\n"
        f"  scenes       {', '.join(files['scenes'])}"
    )


@command
def info(
    path: Annotated[
        list[str],
        typer.Argument(
            help="A raster, a tiles folder or a run folder; several tiles folders: their union "
            "as `train` sees it."
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    open_report: Annotated[
        bool,
        typer.Option("--open", help="Open a run's report.html in the web browser as well."),
    ] = False,
) -> None:
    """Describe a raster, a tiles folder (or several together) or a model bundle.

    \b
    Example: scratchsat info tiles/brandenburg; scratchsat info runs/brandenburg --open
    """
    import json

    from ..extras.info import describe_folders, report_page

    described = describe_folders(path)
    if open_report:
        import webbrowser

        page = report_page(described)
        webbrowser.open(page.resolve().as_uri())
        say(f"opened {page}")
    if json_output:
        typer.echo(json.dumps(described, indent=2))
        return
    from .views import show

    show(described, results())


@command
def bench(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: under 2 minutes on a 2-core CPU.")
    ] = False,
    device: Device = "auto",
    json_out: Annotated[Path | None, json_option("every figure")] = None,
    overwrite: Overwrite = False,
    tile_scene: Annotated[
        str | None,
        typer.Option(
            help="Also measure tile on this GeoTIFF of yours (one constant class as labels)."
        ),
    ] = None,
    only: Annotated[
        str,
        typer.Option(help="Comma-separated steps to measure: tile, load, train, predict."),
    ] = "tile,load,train,predict",
) -> None:
    """Measure tile, load, train and predict throughput, each beside its bound in the same run.

    \b
    Example: scratchsat bench --quick --json bench.json
    """
    from ..bench import STEPS, run_benchmarks
    from ..geo.outputs import check_output

    steps = [step.strip() for step in only.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or not steps:
        raise InputError(
            f"--only {only!r}: {'unknown step ' + repr(unknown[0]) if unknown else 'no step'}; "
            f"name one or more of {', '.join(STEPS)}, separated by commas"
        )
    if json_out is not None and json_out != STDOUT:
        check_output(json_out, overwrite)
    if tile_scene is not None:  # refuse a file tile would refuse before anything runs
        from ..tiles.tiling import describe_scene

        describe_scene(tile_scene, None)
    result = run_benchmarks(quick=quick, device=device, log=say, tile_scene=tile_scene, only=steps)
    from .views import show_bench

    show_bench(result, results(stderr=json_out == STDOUT))  # stdout: JSON only
    if json_out is not None and emit_json(json_out, result, overwrite):
        say(f"wrote {json_out}")
