"""``report.html``: one self-contained page about a run, to look at or hand to a colleague —
settings, data, curves, scores, the confusion matrix, the test area's prediction beside its
labels and the bundle's band contract (pictures embedded; opens offline)."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import htmlpage as h
from .._version import __version__
from ..bundle import read_model_json
from ..geo.labels import IGNORE_INDEX
from ..geo.outputs import write_atomically
from ..geo.windows import SPLITS
from ..tiles.format import has_array
from .data import PatchDataset
from .offsets import moved_offsets
from .report import LABELS, SPLIT_WORDS, Report, _figure
from .setup import Run

MAX_PATCHES = 4096  # test patches drawn in the test-area picture (the model runs on them)
MAX_SIDE = 700  # the picture's scene is shrunk to at most this many pixels a side


def class_table(classes, task: str) -> str:
    rows = []
    for c in classes:
        split = c.get("pixels_by_split") or {}
        rows.append(
            [
                h.swatch(c["colour"], c["name"]),
                c["code"],
                *(split.get(s) for s in SPLITS),
                c.get("patches"),
            ]
        )
    unit = "pixels" if task == "segmentation" else "patches"
    return h.table(["class", "code", *(f"{s} {unit}" for s in SPLITS), "patches (majority)"], rows)


def scores_table(result: dict, task: str) -> str:
    score = "iou" if task == "segmentation" else "f1"
    rows = [
        [c["name"], c.get(score), c.get("f1"), c.get("precision"), c.get("recall"), c["support"]]
        for c in result["classes"]
    ]
    head = "IoU" if task == "segmentation" else "F1"
    overall = h.pairs(
        [
            ("overall accuracy", result["overall_accuracy"]),
            (LABELS[metric_of(task)], result[metric_of(task)]),
            ("macro F1", result.get("macro_f1")),
        ]
    )
    return overall + h.table(["class", head, "F1", "precision", "recall", "support"], rows)


def metric_of(task: str) -> str:
    return "mean_iou" if task == "segmentation" else "macro_f1"


def test_area(run: Run) -> tuple[bytes, str] | None:
    """The scene with most test patches, cut to the box around them (a patch of margin) and
    shrunk: labels beside the model's prediction on its test patches (the rest blank), so the
    panel is filled by them, not by the scene's empty rest. None without test patches."""
    data = PatchDataset(run.tiles, "test")
    if len(data) == 0 or not all(has_array(p.folder, "windows") for p in data.store.parts):
        return None  # no test patches, or chips (a chip folder has no scene to place them in)
    rows = data.indices
    part = np.searchsorted(data.store.starts, rows, side="right") - 1
    windows = data.store.read("windows", rows)  # (n, 3): scene, column, row
    keys = part * 100_000 + windows[:, 0]
    key = np.bincount(keys).argmax()
    chosen = np.flatnonzero(keys == key)[:MAX_PATCHES]
    source = data.store.parts[int(part[chosen[0]])].info["sources"][int(windows[chosen[0], 0])]
    size = run.tiles.patch_size
    cols, rows_ = windows[chosen, 1], windows[chosen, 2]
    left, top = max(0, int(cols.min()) - size), max(0, int(rows_.min()) - size)
    width = min(int(source["width"]), int(cols.max()) + 2 * size) - left
    height = min(int(source["height"]), int(rows_.max()) + 2 * size) - top
    step = max(1, -(-max(width, height) // MAX_SIDE))
    truth = np.full((-(-height // step), -(-width // step)), 254, np.uint8)  # 254: outside
    guess = truth.copy()
    model = run.scored
    model.eval()
    with torch.no_grad():
        for start in range(0, len(chosen), 64):
            batch = chosen[start : start + 64]
            x = torch.stack([data[int(i)][0] for i in batch]).to(run.device)
            y = [data[int(i)][1].numpy() for i in batch]
            logits = model(x).float()
            predicted = logits.argmax(1).cpu().numpy().astype(np.uint8)
            for i, target, pred in zip(batch, y, predicted, strict=True):
                if run.tiles.task != "segmentation":  # a class per patch: fill its footprint
                    target = np.full((size, size), target, np.uint8)
                    pred = np.full((size, size), pred, np.uint8)
                col, row = int(windows[i, 1]) - left, int(windows[i, 2]) - top
                r0, c0 = -(-row // step), -(-col // step)
                first_r, first_c = r0 * step - row, c0 * step - col  # patch pixels on the lattice
                t = target.astype(np.uint8)[first_r::step, first_c::step]
                p = pred[first_r::step, first_c::step]
                truth[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]] = np.where(
                    t == IGNORE_INDEX, 253, t
                )
                guess[r0 : r0 + p.shape[0], c0 : c0 + p.shape[1]] = p
    colours = np.full((256, 3), 255, np.uint8)  # outside the test patches: white
    colours[253] = (200, 200, 200)  # unlabelled: grey
    for c in run.tiles.classes:
        colours[c["id"]] = [int(c["colour"][i : i + 2], 16) for i in (1, 3, 5)]
    plt, fig = _figure(11, 11 * truth.shape[0] / (2 * truth.shape[1]) + 1.2)
    panels = zip(fig.subplots(1, 2), (truth, guess), ("labels", "prediction"), strict=True)
    for ax, image, title in panels:
        ax.imshow(colours[image], interpolation="nearest")
        ax.set(title=title, xticks=[], yticks=[])
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color=hex_colour(colours[c["id"]]), label=c["name"]) for c in run.tiles.classes
        ],
        loc="outside lower center",
        ncols=min(8, len(run.tiles.classes)),
        frameon=False,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    caption = (
        f"{Path(source['path']).name}, columns {left}–{left + width} and rows {top}–"
        f"{top + height}: its {len(chosen)} test patches, shrunk {step}×; grey: unlabelled, "
        "white: not in the test split"
    )
    return buffer.getvalue(), caption


SCORES_NOTE = (
    "Scored patch by patch: each patch of the split is predicted on its own, as in training. "
    "scratchsat evaluate MAP --tiles TILES --split test scores the map that predict writes over "
    "the same labelled pixels; there windows overlap and are blended, so a pixel near a patch "
    "edge sees its neighbours beyond it, and the two scores differ by a little. Report the "
    "evaluate figures for a map."
)


def as_given(value: object) -> object:
    """A setting as the user gave it (``0.002``, ``30``), not rounded like a score."""
    return f"{value:g}" if isinstance(value, float) else value


def statistic(value: float | None) -> str | None:
    """A band statistic in the data's units, to four significant digits (1,483; 0.03452)."""
    if value is None:
        return None
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def write_report_html(run: Run, report: Report) -> None:
    """``RUN/report.html`` from what the run wrote (report, plots, model.json) and the tiles."""
    folder, tiles, task = run.folder, run.tiles, run.tiles.task
    meta = read_model_json(folder)
    final, split = report.final, SPLIT_WORDS[report.final_split]
    parameters = sum(p.numel() for p in run.scored.parameters())
    summary = h.pairs(
        [
            ("run", str(folder)),
            ("task", task),
            (
                "model",
                f"{meta['model']['name']} ({parameters:,} parameters)",
            ),
            ("best epoch", epoch_text(report)),
            ("device", report.device),
            ("decision offsets", offsets_text(report.decision_offsets)),
            (f"{split} overall accuracy", final["overall_accuracy"]),
            (f"{split} {LABELS[metric_of(task)]}", final[metric_of(task)]),
            ("scratchsat", __version__),
        ]
    )
    config = asdict(run.config)
    flat = {**config.pop("model_settings", {}), **config}
    settings = h.pairs(sorted((k, as_given(v)) for k, v in flat.items()))  # not as scores
    folders = h.table(["tiles folder", "hash"], [[p, d] for p, d in run.folder_hashes.items()])
    splits = h.table(["split", "patches"], [[s, tiles.splits.get(s, 0)] for s in SPLITS])
    bands = h.table(
        ["band", "mean", "std", "p2", "p98"],
        [
            [b["name"], *(statistic(b.get(k)) for k in ("mean", "std", "p2", "p98"))]
            for b in tiles.info["bands"]
        ],
    )
    contract = h.pairs(
        [
            ("bands, in order", ", ".join(b["name"] for b in meta["bands"])),
            ("dtype", meta["dtype"]),
            ("nodata", "NaN" if meta.get("nodata_is_nan") else meta["nodata"]),
            ("patch size", meta["patch_size"]),
            ("normalisation", "(value − mean) / std per band, as in Data; invalid pixels → 0"),
        ]
    ) + h.table(
        ["class", "code", "id"],
        [[h.swatch(c["colour"], c["name"]), c["code"], c["id"]] for c in meta["classes"]],
    )
    picture = test_area(run)
    sections = [
        h.section("Summary", summary),
        h.section("Settings", settings),
        h.section("Data", folders, splits, class_table(tiles.classes, task), bands),
        h.section("Curves", h.image(run.files.curves.read_bytes(), "training curves")),
        h.section(
            f"Scores on the {split} split (best epoch)",
            h.paragraph(SCORES_NOTE),
            scores_table(final, task),
            h.image(run.files.confusion.read_bytes(), "confusion matrix"),
        ),
        h.section(
            "Test area: prediction beside labels",
            h.image(picture[0], "test area", picture[1])
            if picture
            else h.paragraph("No test patches with a place in a scene (chip folders have none)."),
        ),
        h.section("Band contract of the bundle (model.json)", contract),
    ]
    text = h.page(f"scratchsat run: {folder.resolve().name}", sections)
    write_atomically(run.files.page, lambda tmp: tmp.write_text(text))


def epoch_text(report: Report) -> str:
    """Which epoch's weights the run kept, and why where it is not the best on validation."""
    if not report.thin_validation:
        return f"{report.best_epoch} of {report.epochs_run}"
    thin = ", ".join(f"{name} {count:,} px" for name, count in report.thin_validation.items())
    return (
        f"the last, {report.best_epoch} of {report.epochs_run} (validation too thin to pick "
        f"one: {thin}; no decision offset for them)"
    )


def offsets_text(fitted: dict | None) -> str:
    """The decision offsets in words: those not 0, and what they gained on validation."""
    if not fitted:
        return "none (--no-calibrate, or no validation split or output bias)"
    metric = LABELS[fitted["metric"]]
    return (
        f"{moved_offsets(fitted['offsets'])} (validation {metric} {fitted['val_before']:.3f} → "
        f"{fitted['val_after']:.3f}; in the output bias)"
    )
