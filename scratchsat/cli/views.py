"""Results as tables on a rich console, for the CLI: ``info``, ``evaluate`` and ``bench``."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> Table:
    """A results table that is never cut: on a narrow terminal the names (first two columns)
    and the title fold onto more lines, and figures keep their full width."""
    cells = [[cell if isinstance(cell, str) else number(cell) for cell in row] for row in rows]
    out = Table(title=Text(title, overflow="fold"), title_justify="left")
    for i, column in enumerate(columns):
        widest = max((len(row[i]) for row in cells), default=0)
        if i < 2:  # a name: at least its longest word, or 12 characters
            words = max((len(w) for row in cells for w in row[i].split()), default=0)
            least = max(len(column), min(words, 12))
            out.add_column(column, justify="left", overflow="fold", min_width=least)
        else:
            least = max(len(column), widest)
            out.add_column(column, justify="right", no_wrap=True, min_width=least)
    for row in cells:
        out.add_row(*row)
    return out


def figure(value: float | None, digits: int = 3) -> str:
    """A score or area to ``digits`` decimals with thousands separators; "–" when unknown."""
    return "–" if value is None else f"{value:,.{digits}f}"


def number(value: float) -> str:
    """Whole numbers and large values with thousands separators, others to 4 digits."""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def show(info: dict, console: Console) -> None:
    {"raster": show_raster, "tiles": show_tiles, "model": show_model}[info["kind"]](info, console)


def lines(console: Console, pairs: Sequence[tuple[str, object]]) -> None:
    for key, value in pairs:
        console.print(f"[bold]{key:<12}[/] {value}", highlight=False)


def bounds_text(bounds, resolution: float) -> str:
    """West, south, east, north as coordinates: thousands separated, to about a tenth of a
    pixel (10 m pixels: whole metres; 0.1 m: centimetres; 0.0001°: five decimals)."""
    import math

    digits = max(0, min(9, math.ceil(-math.log10(resolution)) + 1)) if resolution > 0 else 6
    west, south, east, north = (f"{v:,.{digits}f}" for v in bounds)
    return f"west {west}, south {south}, east {east}, north {north}"


def show_raster(info: dict, console: Console) -> None:
    west, south, east, north = info["bounds"]
    lines(
        console,
        [
            ("raster", f"{info['path']} ({info['driver']})"),
            (
                "size",
                f"{info['width']} × {info['height']} px, {info['count']} bands of {info['dtype']}"
                + "".join(f" (band {i}: alpha, the mask)" for i in info["alpha_bands"]),
            ),
            ("nodata", info["nodata"]),
            ("mask", "GDAL's mask band marks invalid pixels" if info["mask_band"] else "none"),
            ("crs", info["crs"]),
            ("resolution", " × ".join(f"{r:g}" for r in info["resolution"])),
            ("bounds", bounds_text((west, south, east, north), min(info["resolution"]))),
            ("valid", f"{info['valid_fraction']:.1%} of pixels"),
        ],
    )
    rows = [
        (
            str(b["index"]),
            b["name"],
            b.get("min", "–"),
            b.get("max", "–"),
            b.get("mean", "–"),
            b.get("std", "–"),
        )
        for b in info["bands"]
    ]
    console.print(
        table(
            f"bands (statistics over {info['statistics']})",
            ["#", "name", "min", "max", "mean", "std"],
            rows,
        )
    )
    if info["classes"]:
        console.print(
            table(
                "classes (CLASSES tag)",
                ["code", "name"],
                [(str(c["code"]), c["name"]) for c in info["classes"]],
            )
        )


def show_tiles(info: dict, console: Console) -> None:
    splits = ", ".join(f"{n} {k}" for k, n in info["splits"].items())
    skipped = ", ".join(f"{n} {k}" for k, n in info["skipped"].items() if n) or "none"
    lines(
        console,
        [
            ("tiles", info["path"]),
            ("task", info["task"]),
            ("patches", f"{info['patches']:,} of {info['patch_size']} px ({splits})"),
            ("skipped", skipped),
            ("data", f"{len(info['bands'])} bands of {info['dtype']}, nodata {info['nodata']}"),
            ("sources", ", ".join(info["sources"])),
        ],
    )
    console.print(
        table(
            "classes",
            ["code", "name", "pixels", "patches"],
            [(str(c["code"]), c["name"], c["pixels"], c["patches"]) for c in info["classes"]],
        )
    )
    console.print(
        table(
            "band statistics (valid pixels)",
            ["#", "name", "mean", "std", "p2", "p98"],
            [
                (str(i), b["name"], b["mean"], b["std"], b["p2"], b["p98"])
                for i, b in enumerate(info["bands"], start=1)
            ],
        )
    )


def network_line(info: dict) -> str:
    """The network, what it is for, its size, and for an ONNX file its input."""
    weights = info["parameters"]
    size = "" if weights is None else f", {weights:,} parameters"
    line = f"{(info['model'] or {}).get('name', 'a network')} for {info['task']}{size}"
    if info.get("format") == "onnx":
        line += f" (ONNX, input {' × '.join(map(str, info['input']))})"
    return line


def show_model(info: dict, console: Console) -> None:
    model = info["model"]
    settings = ", ".join(
        f"{k} {v}"
        for k, v in model.items()
        if k not in ("name", "in_channels", "num_classes", "task")
    )
    names = [b["name"] for b in info["bands"]]
    scores = (
        "; ".join(
            f"{split}: accuracy {s['overall_accuracy']:.3f}, mean IoU {s['mean_iou']:.3f}, "
            f"macro F1 {s['macro_f1']:.3f}"
            for split, s in info["scores"].items()
        )
        or "no report.json"
    )
    lines(
        console,
        [
            ("model", f"{info['path']} (scratchsat {info['scratchsat_version']})"),
            ("network", network_line(info)),
            ("settings", settings),
            (
                "bands",
                f"{len(names)} of {info['dtype']} (nodata {info['nodata']}): {', '.join(names)}",
            ),
            ("patches", f"{info['patch_size']} px"),
            ("epoch", info["epoch"]),
            ("decision offsets", offsets_line(info.get("decision_offsets"))),
            ("scores", scores),
        ],
    )
    console.print(
        table(
            "classes",
            ["code", "name", "colour"],
            [(str(c["code"]), c["name"], c["colour"]) for c in info["classes"]],
        )
    )


def offsets_line(offsets: dict | None) -> str:
    """A bundle's decision offsets, those not 0, for ``info``."""
    from ..training.offsets import moved_offsets  # torch: only where a bundle was loaded

    if offsets is None:
        return "none"
    return f"{moved_offsets(offsets)} (in the output bias, fitted on validation)"


def show_scores(result: dict, console: Console) -> None:
    """``evaluate``: the per-class table and the overall figures."""
    score = figure
    rows = [
        (
            str(c["code"]),
            c["name"],
            score(c["iou"]),
            score(c["f1"]),
            score(c["precision"]),
            score(c["recall"]),
            f"{c['support']:,}",
        )
        for c in result["classes"]
    ]
    console.print(
        table(
            f"{result['prediction']} vs {result['labels']}",
            ["code", "class", "IoU", "F1", "precision", "recall", "support"],
            rows,
        )
    )
    where = f", {result['split']} split" if result["split"] else ""
    console.print(
        f"overall accuracy {score(result['overall_accuracy'])}  mean IoU "
        f"{score(result['mean_iou'])}  macro F1 {score(result['macro_f1'])}  "
        f"({result['pixels']:,} pixels{where})",
        highlight=False,
    )
    area = result.get("area")
    if area:
        show_area(area, console)


def show_tile_dry_run(summary: dict, out, console: Console) -> None:
    """``tile --dry-run``: what would be written."""
    skipped = ", ".join(f"{n:,} {why}" for why, n in summary["skipped"].items() if n) or "none"
    splits = ", ".join(f"{n:,} {name}" for name, n in summary["splits"].items())
    console.print(
        f"dry run, nothing written: {summary['windows']:,} windows considered, "
        f"{summary['patches']:,} patches kept ({splits}); skipped: {skipped}; the store "
        f"would take {summary['store_bytes'] / 2**20:,.1f} MB in {summary['out']}",
        highlight=False,
    )
    rows = [
        (
            str(c["code"]),
            c["name"],
            f"{c['pixels']:,}",
            f"{c['patches']:,}",
            f"{c['majority_patches']:,}",
        )
        for c in summary["classes"]
    ]
    console.print(
        table("classes", ["code", "class", "pixels", "patches with it", "majority in"], rows)
    )


def show_train_dry_run(report: dict, console: Console) -> None:
    """``train --dry-run``: what training would be."""
    patches = ", ".join(f"{n:,} {split}" for split, n in report["patches"].items())
    console.print(
        f"dry run, nothing trained or written: {report['model']} with "
        f"{report['parameters']:,} parameters on {report['device']} in {report['precision']}; "
        f"patches: {patches}; "
        f"batch {report['batch_size']}, {report['steps_per_epoch']} steps an epoch, "
        f"{report['epochs']} epochs\n"
        f"  {report['step_s']:.3f} s a step (timed), {report['epoch_s']:.1f} s an epoch with "
        f"validation: about {report['estimated_s'] / 60:.1f} min in all\n"
        f"  memory: {report['memory_bytes'] / 2**20:,.0f} MB on {report['memory_measured_on']}",
        highlight=False,
    )
    weights = report.get("class_weights") or {}
    weighted = ", ".join(f"{name} {w:.2f}" for name, w in weights.items() if w != 1)
    if weights:
        console.print(f"  class weights: {weighted or 'all 1'}", highlight=False)
    if report.get("calibrate"):
        console.print(
            "  decision offsets: fitted on the validation split after training", highlight=False
        )


def show_predict_dry_run(report: dict, console: Console) -> None:
    """``predict --dry-run``: per scene, bands, windows and outputs."""
    console.print(
        f"dry run, nothing predicted or written: windows of {report['window']} px every "
        f"{report['stride']} px",
        highlight=False,
    )
    for scene in report["scenes"]:
        width, height = scene["size"]
        outputs = ", ".join(
            f"{p} ({n / 2**20:,.1f} MB uncompressed)" for p, n in scene["outputs"].items()
        )
        vector = f"; polygons to {scene['vector']}" if scene["vector"] else ""
        console.print(
            f"{scene['scene']}: {width} × {height} px, {scene['windows']:,} windows\n"
            f"  bands (model ← scene): {', '.join(scene['bands'])}\n  writes {outputs}{vector}",
            highlight=False,
        )


def show_area(area: dict, console: Console) -> None:
    """``evaluate``: mapped and error-adjusted areas, user's and producer's accuracies."""
    num = figure
    rows = [
        (
            str(c["code"]),
            c["name"],
            num(c["mapped"]),
            num(c["estimated"]),
            num(c["estimated_ci95"]),
            num(c["users_accuracy"], 2),
            num(c["users_ci95"], 2),
            num(c["producers_accuracy"], 2),
            num(c["producers_ci95"], 2),
            f"{c['sample']:,}",
        )
        for c in area["classes"]
    ]
    title = (
        f"Area in {area['units']}, error-adjusted (Olofsson et al. 2014: strata = map classes, "
        "sample = the labelled pixels; ± = 95 % interval, valid for a probability sample only)"
    )
    headers = ["code", "class", "mapped", "adjusted", "±", "user's", "±", "producer's", "±", "n"]
    console.print(table(title, headers, rows))
    note = (
        f"overall accuracy {num(area['overall_accuracy'])} ± {num(area['overall_ci95'])} "
        "(area-weighted)"
    )
    if area["unsampled_map_classes"]:
        note += (
            f"; no labelled pixel is mapped as {', '.join(area['unsampled_map_classes'])}, "
            "so the intervals cannot be estimated"
        )
    console.print(note, highlight=False)


def show_bench(result: dict, console: Console) -> None:
    """``bench``: hardware and versions, then each figure beside its bound."""
    from ..bench import rows

    hw = result["hardware"]
    versions = ", ".join(f"{k} {v}" for k, v in hw["versions"].items())
    title = (
        f"{hw['cpu']}, {hw['cores']} cores; GPU: {hw['gpu'] or 'none'}; device "
        f"{hw['device']}\n{versions}"
    )
    console.print(table(title, ["what", "measured", "bound (same run)", "ratio"], rows(result)))


def interrupted_message(stop, tiles, out) -> str:
    """What an interrupted ``train`` left on disk, and how to go on: only what is true."""
    folders = " ".join(map(str, tiles)) if isinstance(tiles, (list, tuple)) else tiles
    resume = f"Continue with: scratchsat train {folders} --out {out} --resume"
    where = f"epoch {stop.epoch}, step {stop.step}"
    if stop.saved:
        return f"Interrupted at {where}; a checkpoint of that point is in {stop.folder}. {resume}"
    if stop.resumable:
        return (
            f"Interrupted (stopped at once, mid-step); the checkpoint in {stop.folder} "
            f"continues from {where}. {resume}"
        )
    return (
        "Interrupted (stopped at once) before the first checkpoint was saved: there is nothing "
        "to resume. Run the same command again to start over."
    )


def train_summary(report: dict, out) -> str:
    """The line ``train`` ends with: the best epoch's scores on the final split."""
    from ..training.report import LABELS, SPLIT_WORDS, Report

    record = Report.from_dict(report)
    final, split, metric = record.final, SPLIT_WORDS[record.final_split], record.metric
    return (
        f"best epoch {report['best_epoch']}: {split} accuracy {final['overall_accuracy']:.3f}, "
        f"{LABELS[metric]} {final[metric]:.3f}; model bundle in {out}"
    )


def scene_table(rows) -> Table:
    """``predict --dask``'s summary: one row per scene (``prediction.cluster.SceneDone``)."""
    cells = [
        [r.scene, r.out, r.worker or "-", f"{r.seconds:.1f}", "failed" if r.error else "written"]
        for r in rows
    ]
    return table("scenes on the Dask cluster", ["scene", "class map", "worker", "s", ""], cells)
