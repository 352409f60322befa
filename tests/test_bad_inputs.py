"""Every command through a table of bad inputs and faults: a missing file, a folder where a
file belongs, a foreign file of the right suffix, negative and absurd numbers, a read-only
output folder, a full disk (a small tmpfs, where mounting is allowed) and ``--config`` naming a
folder. Each row must end in exit 1 with an ``Error:`` line that says what is wrong, no
traceback, and nothing new under the output's name (no file, no temporary, no lock).

A new command or option that takes a path or a number adds its rows here;
``test_every_command_has_rows`` fails until it does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from typer.testing import CliRunner

from scratchsat.cli import app

runner = CliRunner()


@dataclass
class Place:
    """What the rows build their command lines from."""

    run: Path  # a trained run folder
    tiles: Path  # its tiles folder
    scene: Path  # its scene
    labels: Path  # its label raster
    classmap: Path  # a class map predicted from the scene
    onnx: Path  # the run exported to ONNX
    work: Path  # a folder of this test's own: outputs go here
    ro: Path | None  # a read-only folder (None: cannot be mounted here)
    full: Path | None  # a full disk (None: cannot be mounted here)


@dataclass(frozen=True)
class Row:
    command: str
    case: str
    args: Callable[[Place], list[str]]
    message: str  # a part of the Error: line
    outputs: Callable[[Place], list[Path]]  # must not exist afterwards, nor their temporaries
    needs: str = ""  # "ro" or "full": skipped where that folder cannot be mounted


def out(name: str) -> Callable[[Place], list[Path]]:
    return lambda p: [p.work / name]


def ro(name: str) -> Callable[[Place], list[Path]]:
    return lambda p: [p.ro / name]  # type: ignore[operator]


def full(name: str) -> Callable[[Place], list[Path]]:
    return lambda p: [p.full / name]  # type: ignore[operator]


NO_SPACE, READ_ONLY = "no space left on", "is read-only or not writable"
CONFIG_DIR = "is a folder; pass a TOML file"


def rows() -> list[Row]:
    def predict(p: Place, *more: str, model=None, to="p.tif") -> list[str]:
        return ["predict", str(model or p.run), str(p.scene), "--out", str(p.work / to), *more]

    def tile(p: Place, *more: str, to=None) -> list[str]:
        target = str(to or p.work / "t")
        return ["tile", str(p.scene), "--labels", str(p.labels), "--out", target, *more]

    def train(p: Place, *more: str, to=None) -> list[str]:
        return ["train", str(p.tiles), "--out", str(to or p.work / "r"), "--epochs", "1", *more]

    def vectorize(p: Place, target: Path, *more: str) -> list[str]:
        return ["vectorize", str(p.classmap), "--out", str(target), *more]

    def suggest(p: Place, target: Path, *more: str) -> list[str]:
        return ["suggest", str(p.run), str(p.scene), "--out", str(target), *more]

    def export(p: Place, *more: str, to=None) -> list[str]:
        return ["export", str(p.run), "--onnx", str(to or p.work / "m.onnx"), *more]

    def evaluate(p: Place, *more: str) -> list[str]:
        return ["evaluate", str(p.classmap), "--labels", str(p.labels), *more]

    missing = "no such file; check the path"
    return [
        # stack
        Row("stack", "missing band", lambda p: ["stack", str(p.work / "no.tif"), "--out",
            str(p.work / "s.tif")], missing, out("s.tif")),
        Row("stack", "folder for a band", lambda p: ["stack", str(p.tiles), "--out",
            str(p.work / "s.tif")], "", out("s.tif")),
        Row("stack", "foreign .tif", lambda p: ["stack", str(foreign(p, "x.tif")), "--out",
            str(p.work / "s.tif")], "", out("s.tif")),
        Row("stack", "read-only folder", lambda p: ["stack", str(p.scene), "--out",
            str(p.ro / "s.tif")], READ_ONLY, ro("s.tif"), "ro"),
        Row("stack", "full disk", lambda p: ["stack", str(p.scene), "--out",
            str(p.full / "s.tif")], NO_SPACE, full("s.tif"), "full"),
        Row("stack", "config folder", lambda p: ["stack", str(p.scene), "--out",
            str(p.work / "s.tif"), "--config", str(p.work)], CONFIG_DIR, out("s.tif")),
        Row("stack", "negative resolution", lambda p: ["stack", str(p.scene), "--out",
            str(p.work / "s.tif"), "--resolution", "-10"], "resolution", out("s.tif")),
        # tile
        Row("tile", "missing scene", lambda p: ["tile", str(p.work / "no.tif"), "--labels",
            str(p.labels), "--out", str(p.work / "t")], missing, out("t")),
        Row("tile", "foreign labels", lambda p: ["tile", str(p.scene), "--labels",
            str(foreign(p, "l.gpkg")), "--out", str(p.work / "t")], "", out("t")),
        Row("tile", "negative patch", lambda p: tile(p, "--patch-size", "-4"),
            "--patch-size must be at least 4, got -4", out("t")),
        Row("tile", "absurd patch", lambda p: tile(p, "--patch-size", "100000"),
            "smaller than --patch-size 100000", out("t")),
        Row("tile", "patch beyond 8192 px", lambda p: ["tile", str(big_scene(p)), "--labels",
            str(p.labels), "--patch-size", "9000", "--out", str(p.work / "t")],
            "--patch-size must be from 4 to 8192 px, got 9000", out("t")),
        Row("tile", "negative block", lambda p: tile(p, "--block-size", "-8"),
            "--block-size must be at least 1 px, got -8", out("t")),
        Row("tile", "split above 1", lambda p: tile(p, "--val", "1.5"), "val", out("t")),
        Row("tile", "negative stride", lambda p: tile(p, "--stride", "-1"), "--stride",
            out("t")),
        Row("tile", "min-valid above 1", lambda p: tile(p, "--min-valid", "2"), "--min-valid",
            out("t")),
        Row("tile", "negative min-labeled", lambda p: tile(p, "--min-labeled", "-1"),
            "--min-labeled", out("t")),
        Row("tile", "test above 1", lambda p: tile(p, "--test", "1.5"), "--test", out("t")),
        Row("tile", "shard beyond its count", lambda p: tile(p, "--shard", "3/2"), "--shard",
            out("t")),
        Row("tile", "negative workers", lambda p: tile(p, "--workers", "-1"),
            "--workers must be at least 1", out("t")),
        Row("tile", "no Dask scheduler there", lambda p: tile(p, "--dask", "tcp://127.0.0.1:9"),
            "--dask tcp://127.0.0.1:9: no Dask scheduler answered there", out("t")),
        Row("tile", "local cluster of 0", lambda p: tile(p, "--dask", "local:0"),
            "a local cluster is local:N with N ≥ 1", out("t")),
        Row("tile", "read-only folder", lambda p: tile(p, to=p.ro / "t"), READ_ONLY, ro("t"),
            "ro"),
        Row("tile", "full disk", lambda p: tile(p, to=p.full / "t"), NO_SPACE, full("t"),
            "full"),
        Row("tile", "config folder", lambda p: tile(p, "--config", str(p.work)), CONFIG_DIR,
            out("t")),
        # train
        Row("train", "missing tiles", lambda p: ["train", str(p.work / "none"), "--out",
            str(p.work / "r")], "", out("r")),
        Row("train", "a file for tiles", lambda p: ["train", str(p.scene), "--out",
            str(p.work / "r")], "", out("r")),
        Row("train", "negative epochs", lambda p: train(p, "--epochs", "-1"), "--epochs",
            out("r")),
        Row("train", "zero batch", lambda p: train(p, "--batch-size", "0"), "--batch-size",
            out("r")),
        Row("train", "negative lr", lambda p: train(p, "--lr", "-1"), "--lr", out("r")),
        Row("train", "zero epoch steps", lambda p: train(p, "--epoch-steps", "0"),
            "--epoch-steps", out("r")),
        Row("train", "negative weight decay", lambda p: train(p, "--weight-decay", "-1"),
            "--weight-decay", out("r")),
        Row("train", "label smoothing of 1", lambda p: train(p, "--label-smoothing", "1"),
            "--label-smoothing", out("r")),
        Row("train", "zero patience", lambda p: train(p, "--patience", "0"), "--patience",
            out("r")),
        Row("train", "zero depth", lambda p: train(p, "--depth", "0"), "depth", out("r")),
        Row("train", "missing init-from", lambda p: train(p, "--init-from",
            str(p.work / "none")), "no model bundle at", out("r")),
        Row("train", "negative workers", lambda p: train(p, "--workers", "-1"),
            "--workers must be 0", out("r")),
        Row("train", "negative budget", lambda p: train(p, "--time-budget", "-5"),
            "--time-budget", out("r")),
        Row("train", "cutmix above 1", lambda p: train(p, "--cutmix", "2"), "--cutmix",
            out("r")),
        Row("train", "zero width", lambda p: train(p, "--width", "0"), "width", out("r")),
        Row("train", "read-only folder", lambda p: train(p, to=p.ro / "r"), READ_ONLY,
            ro("r"), "ro"),
        Row("train", "config folder", lambda p: train(p, "--config", str(p.work)), CONFIG_DIR,
            out("r")),
        # predict
        Row("predict", "missing run", lambda p: predict(p, model=p.work / "none"),
            "no model bundle at", out("p.tif")),
        Row("predict", "missing scene", lambda p: ["predict", str(p.run),
            str(p.work / "no.tif"), "--out", str(p.work / "p.tif")], missing, out("p.tif")),
        Row("predict", "overlap of 1", lambda p: predict(p, "--overlap", "1"), "--overlap",
            out("p.tif")),
        Row("predict", "zero batch", lambda p: predict(p, "--batch-size", "0"),
            "--batch-size", out("p.tif")),
        Row("predict", "absurd batch", lambda p: predict(p, "--batch-size", "100000000"),
            "GB, more than the", out("p.tif")),
        Row("predict", "absurd window", lambda p: predict(p, "--patch-size", "100000"),
            "--patch-size 100000", out("p.tif")),
        Row("predict", "negative window", lambda p: predict(p, "--patch-size", "-32"),
            "--patch-size at least 8", out("p.tif")),
        Row("predict", "missing ensemble member", lambda p: predict(p, "--ensemble",
            str(p.work / "none")), "no model bundle at", out("p.tif")),
        Row("predict", "probabilities in a read-only folder", lambda p: predict(p,
            "--probabilities", str(p.ro / "pr.tif")), READ_ONLY,
            lambda p: [p.ro / "pr.tif", p.work / "p.tif"], "ro"),
        Row("predict", "uncertainty onto a full disk", lambda p: predict(p, "--uncertainty",
            str(p.full / "u.tif")), NO_SPACE, lambda p: [p.full / "u.tif", p.work / "p.tif"],
            "full"),
        Row("predict", "negative workers", lambda p: predict(p, "--workers", "-1"),
            "--workers must be at least 1", out("p.tif")),
        Row("predict", "no Dask scheduler there", lambda p: predict(p, "--dask",
            "tcp://127.0.0.1:9"), "--dask tcp://127.0.0.1:9: no Dask scheduler answered",
            out("p.tif")),
        Row("predict", "local cluster of -1", lambda p: predict(p, "--dask", "local:-1"),
            "a local cluster is local:N with N ≥ 1", out("p.tif")),
        Row("predict", "--workers and --dask", lambda p: predict(p, "--dask", "local:2",
            "--workers", "2"), "both deal scenes out; pass one of them", out("p.tif")),
        Row("predict", "huge patch in model.json", lambda p: predict(p, model=edited_run(
            p, patch_size=10**6)), "patch_size 1000000 px is outside", out("p.tif")),
        Row("predict", "model.json of another tool", lambda p: predict(p, model=edited_run(
            p, replace={"format": "scratchsat-model", "weights": "model.safetensors"})),
            "must be a", out("p.tif")),
        Row("predict", "foreign .onnx", lambda p: predict(p, model=foreign(p, "f.onnx")),
            "is not a readable ONNX model", out("p.tif")),
        Row("predict", "onnx metadata not JSON", lambda p: predict(p, model=edited_onnx(
            p, "{not json")), "metadata is not valid JSON", out("p.tif")),
        Row("predict", "onnx metadata without fields", lambda p: predict(p, model=edited_onnx(
            p, "{}")), "'task' must be a str", out("p.tif")),
        Row("predict", "onnx huge patch", lambda p: predict(p, model=edited_onnx(
            p, patch_size=10**6)), "patch_size 1000000 px is outside", out("p.tif")),
        Row("predict", "onnx huge fixed input", lambda p: predict(p, model=edited_onnx(
            p, side=100_000)), "fixed at 100000 px", out("p.tif")),
        Row("predict", "read-only folder", lambda p: ["predict", str(p.run), str(p.scene),
            "--out", str(p.ro / "p.tif")], READ_ONLY, ro("p.tif"), "ro"),
        Row("predict", "vector onto a full disk", lambda p: predict(p, "--vector",
            str(p.full / "p.gpkg")), NO_SPACE, lambda p: [p.full / "p.gpkg"], "full"),
        Row("predict", "config folder", lambda p: predict(p, "--config", str(p.work)),
            CONFIG_DIR, out("p.tif")),
        # vectorize
        Row("vectorize", "missing map", lambda p: ["vectorize", str(p.work / "no.tif"),
            "--out", str(p.work / "v.gpkg")], missing, out("v.gpkg")),
        Row("vectorize", "several bands", lambda p: ["vectorize", str(p.scene), "--out",
            str(p.work / "v.gpkg")], "vectorize takes a class map", out("v.gpkg")),
        Row("vectorize", "codes beyond 32 bits", lambda p: ["vectorize",
            str(wide_map(p, "uint32", 4_000_000_000)), "--out", str(p.work / "v.gpkg")],
            "does not fit a 32-bit integer", out("v.gpkg")),
        Row("vectorize", "missing uncertainty", lambda p: vectorize(p, p.work / "v.gpkg",
            "--uncertainty", str(p.work / "no.tif")), missing, out("v.gpkg")),
        Row("vectorize", "negative area", lambda p: vectorize(p, p.work / "v.gpkg",
            "--min-area", "-1"), "--min-area", out("v.gpkg")),
        Row("vectorize", "area beyond the map", lambda p: vectorize(p, p.work / "v.gpkg",
            "--min-area", "1e15"), "not smaller than the whole map", out("v.gpkg")),
        Row("vectorize", "negative simplify", lambda p: vectorize(p, p.work / "v.gpkg",
            "--simplify", "-2"), "--simplify", out("v.gpkg")),
        Row("vectorize", "unknown suffix", lambda p: vectorize(p, p.work / "v.xyz"),
            "cannot tell the vector format", out("v.xyz")),
        *[
            Row("vectorize", f"read-only folder {s}", lambda p, s=s: vectorize(p, p.ro / f"v{s}"),
                READ_ONLY, ro(f"v{s}"), "ro")
            for s in (".gpkg", ".shp")
        ],
        *[
            Row("vectorize", f"full disk {s}", lambda p, s=s: vectorize(p, p.full / f"v{s}"),
                NO_SPACE, full(f"v{s}"), "full")
            for s in (".gpkg", ".geojson", ".shp")
        ],
        Row("vectorize", "config folder", lambda p: vectorize(p, p.work / "v.gpkg",
            "--config", str(p.work)), CONFIG_DIR, out("v.gpkg")),
        # suggest
        Row("suggest", "zero windows", lambda p: suggest(p, p.work / "s.gpkg", "--n", "0"),
            "--n must be at least 1", out("s.gpkg")),
        Row("suggest", "negative windows", lambda p: suggest(p, p.work / "s.gpkg", "--n", "-3"),
            "--n must be at least 1", out("s.gpkg")),
        Row("suggest", "missing scene", lambda p: ["suggest", str(p.run), str(p.work / "no.tif"),
            "--out", str(p.work / "s.gpkg")], missing, out("s.gpkg")),
        Row("suggest", "missing tiles", lambda p: suggest(p, p.work / "s.gpkg", "--tiles",
            str(p.work / "none")), "is not a tiles folder", out("s.gpkg")),
        Row("suggest", "missing run", lambda p: ["suggest", str(p.work / "none"), str(p.scene),
            "--out", str(p.work / "s.gpkg")], "no model bundle at", out("s.gpkg")),
        Row("suggest", "shapefile", lambda p: suggest(p, p.work / "s.shp"), "writes one file",
            out("s.shp")),
        Row("suggest", "read-only folder", lambda p: suggest(p, p.ro / "s.gpkg"), READ_ONLY,
            ro("s.gpkg"), "ro"),
        Row("suggest", "full disk", lambda p: suggest(p, p.full / "s.gpkg"), NO_SPACE,
            full("s.gpkg"), "full"),
        Row("suggest", "config folder", lambda p: suggest(p, p.work / "s.gpkg", "--config",
            str(p.work)), CONFIG_DIR, out("s.gpkg")),
        # export
        Row("export", "missing run", lambda p: ["export", str(p.work / "none"), "--onnx",
            str(p.work / "m.onnx")], "no model bundle at", out("m.onnx")),
        Row("export", "absurd tile size", lambda p: export(p, "--deepness", "--tile-size",
            "100000"), "--tile-size must be from 8 to 8192 px, not 100000", out("m.onnx")),
        Row("export", "tiny tile size", lambda p: export(p, "--deepness", "--tile-size", "4"),
            "--tile-size must be from 8", out("m.onnx")),
        Row("export", "negative tile size", lambda p: export(p, "--tile-size", "-64"),
            "--tile-size must be from 8", out("m.onnx")),
        Row("export", "read-only folder", lambda p: export(p, to=p.ro / "m.onnx"), READ_ONLY,
            ro("m.onnx"), "ro"),
        Row("export", "full disk", lambda p: export(p, to=p.full / "m.onnx"), NO_SPACE,
            full("m.onnx"), "full"),
        Row("export", "config folder", lambda p: export(p, "--config", str(p.work)),
            CONFIG_DIR, out("m.onnx")),
        # evaluate
        Row("evaluate", "missing map", lambda p: ["evaluate", str(p.work / "no.tif"),
            "--labels", str(p.labels)], missing, out("e.json")),
        Row("evaluate", "missing labels", lambda p: ["evaluate", str(p.classmap), "--labels",
            str(p.work / "no.gpkg")], missing, out("e.json")),
        Row("evaluate", "unknown split", lambda p: evaluate(p, "--tiles", str(p.tiles),
            "--split", "holdout"), "holdout", out("e.json")),
        Row("evaluate", "a file for tiles", lambda p: evaluate(p, "--tiles", str(p.scene),
            "--split", "test"), "is a file, not a tiles folder", out("e.json")),
        Row("evaluate", "missing tiles", lambda p: evaluate(p, "--tiles", str(p.work / "none"),
            "--split", "test"), "does not exist", out("e.json")),
        Row("evaluate", "html in a read-only folder", lambda p: evaluate(p, "--html",
            str(p.ro / "e.html")), READ_ONLY, ro("e.html"), "ro"),
        Row("evaluate", "json in a read-only folder", lambda p: evaluate(p, "--json",
            str(p.ro / "e.json")), READ_ONLY, ro("e.json"), "ro"),
        Row("evaluate", "html onto a full disk", lambda p: evaluate(p, "--html",
            str(p.full / "e.html")), NO_SPACE, full("e.html"), "full"),
        Row("evaluate", "config folder", lambda p: evaluate(p, "--config", str(p.work)),
            CONFIG_DIR, out("e.json")),
        # demo
        Row("demo", "zero epochs", lambda p: ["demo", "--out", str(p.work / "d"), "--epochs",
            "0"], "--epochs must be at least 1, not 0", out("d")),
        Row("demo", "negative epochs", lambda p: ["demo", "--out", str(p.work / "d"),
            "--epochs", "-3"], "--epochs must be at least 1, not -3", out("d")),
        Row("demo", "out is a file", lambda p: ["demo", "--out", str(p.scene), "--overwrite"],
            "is a file; the demo writes a folder", lambda p: []),
        Row("demo", "read-only folder", lambda p: ["demo", "--out", str(p.ro / "d")], READ_ONLY,
            ro("d"), "ro"),
        Row("demo", "config folder", lambda p: ["demo", "--out", str(p.work / "d"), "--config",
            str(p.work)], CONFIG_DIR, out("d")),
        # info
        Row("info", "missing path", lambda p: ["info", str(p.work / "no.tif")], missing,
            lambda p: []),
        Row("info", "foreign .tif", lambda p: ["info", str(foreign(p, "i.tif"))], "",
            lambda p: []),
        Row("info", "config folder", lambda p: ["info", str(p.scene), "--config", str(p.work)],
            CONFIG_DIR, lambda p: []),
        # bench
        Row("bench", "unknown step", lambda p: ["bench", "--quick", "--only", "fly"],
            "unknown step", lambda p: []),
        Row("bench", "missing tile scene", lambda p: ["bench", "--quick", "--only", "tile",
            "--tile-scene", str(p.work / "no.tif")], missing, lambda p: []),
        Row("bench", "json onto an existing folder", lambda p: ["bench", "--quick", "--json",
            str(p.tiles)], "exists already", lambda p: []),
        Row("bench", "config folder", lambda p: ["bench", "--config", str(p.work)], CONFIG_DIR,
            lambda p: []),
    ]  # fmt: skip


ROWS = rows()


def foreign(p: Place, name: str) -> Path:
    """A file of the right suffix that is not what the suffix says."""
    path = p.work / name
    path.write_text("not what the suffix says\n")
    return path


def edited_run(p: Place, patch_size: int | None = None, replace: dict | None = None) -> Path:
    """A copy of the run whose model.json is edited by hand."""
    copy = p.work / "edited-run"
    shutil.copytree(p.run, copy)
    meta = json.loads((copy / "model.json").read_text())
    if patch_size is not None:
        meta["patch_size"] = patch_size
    if replace is not None:
        meta = replace
    (copy / "model.json").write_text(json.dumps(meta))
    return copy


def edited_onnx(
    p: Place, text: str | None = None, patch_size: int | None = None, side: int | None = None
) -> Path:
    """A copy of the exported model with its scratchsat metadata or input shape edited."""
    import onnx

    model = onnx.load(str(p.onnx))
    for entry in model.metadata_props:
        if entry.key == "scratchsat":
            if text is not None:
                entry.value = text
            if patch_size is not None:
                entry.value = json.dumps({**json.loads(entry.value), "patch_size": patch_size})
    if side is not None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim in dims[2:]:
            dim.ClearField("dim_param")
            dim.dim_value = side
    path = p.work / "edited.onnx"
    onnx.save(model, str(path))
    return path


def big_scene(p: Place) -> Path:
    """A 9,000 × 9,000 px scene (sparse: GDAL writes no blocks for it) beside the labels."""
    import rasterio
    from rasterio.transform import from_origin

    path = p.work / "big.tif"

    profile = {"driver": "GTiff", "width": 9000, "height": 9000, "count": 1, "dtype": "uint8"}
    with rasterio.open(p.labels) as labels:  # on the labels' ground
        corner = labels.transform * (0, 0)
        profile |= {"crs": labels.crs, "transform": from_origin(*corner, 10, 10)}
    with rasterio.open(path, "w", tiled=True, SPARSE_OK=True, **profile):
        pass
    return path


def wide_map(p: Place, dtype: str, code: int) -> Path:
    codes = np.ones((40, 40), dtype=dtype)
    codes[10:20, 10:20] = code
    return write_raster(p.work / f"{dtype}.tif", codes)


@pytest.fixture(scope="module")
def made(small_run, seg_tiles, tmp_path_factory) -> dict:
    """The run's class map and ONNX export, made once for the module."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    scene = seg_tiles.parent / "scene.tif"
    classmap = folder / "classes.tif"
    result = runner.invoke(app, ["predict", str(small_run), str(scene), "--out", str(classmap)])
    assert result.exit_code == 0, result.output
    onnx = folder / "model.onnx"
    result = runner.invoke(app, ["export", str(small_run), "--onnx", str(onnx)])
    assert result.exit_code == 0, result.output
    return {"classmap": classmap, "onnx": onnx}


def mount(folder: Path, options: str) -> bool:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def place(small_run, seg_tiles, made, tmp_path) -> Iterator[Place]:
    work = tmp_path / "work"
    work.mkdir()
    ro_folder, full_folder = tmp_path / "ro", tmp_path / "full"
    read_only = mount(ro_folder, "ro,size=1m")
    disk = mount(full_folder, "size=1m")
    if disk:  # full but for 8 KB: room for a lock file and the first bytes of an output
        with open(full_folder / "filler", "wb") as filler:
            filler.write(b"\0" * (shutil.disk_usage(full_folder).free - (8 << 10)))
    yield Place(
        run=small_run,
        tiles=seg_tiles,
        scene=seg_tiles.parent / "scene.tif",
        labels=seg_tiles.parent / "labels.tif",
        classmap=made["classmap"],
        onnx=made["onnx"],
        work=work,
        ro=ro_folder if read_only else None,
        full=full_folder if disk else None,
    )
    for folder in (ro_folder, full_folder):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def left_beside(path: Path) -> list[str]:
    """``path`` itself, its temporaries and its lock, where any is left."""
    if not path.parent.is_dir():
        return []
    return [p.name for p in path.parent.iterdir() if p.name.lstrip(".").startswith(path.name)]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.command}: {r.case}" for r in ROWS])
def test_a_bad_input_is_an_error_without_traceback(row: Row, place: Place):
    if row.needs == "ro" and place.ro is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    if row.needs == "full" and place.full is None:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root and mount rights)")
    args = row.args(place)
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert lines, result.output
    assert row.message in result.output, result.output
    for path in row.outputs(place):
        assert left_beside(path) == [], f"{args}: left {left_beside(path)}"


def test_every_command_has_rows():
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    covered = {r.command for r in ROWS}
    assert commands - covered == set(), "add rows for these commands"
    config_rows = {r.command for r in ROWS if r.message == CONFIG_DIR}
    assert config_rows == commands  # every command takes --config


def test_int64_and_uint32_class_maps_are_vectorized(tmp_path):
    """A class map of any integer width is polygonised when its codes fit 32 bits."""
    import fiona

    for dtype in ("int64", "uint32", "int8"):
        codes = np.ones((40, 40), dtype=dtype)
        codes[10:20, 10:20] = 7
        codes[30:, 30:] = 9
        path = write_raster(tmp_path / f"{dtype}.tif", codes, nodata=9)
        target = tmp_path / f"{dtype}.gpkg"
        result = runner.invoke(app, ["vectorize", str(path), "--out", str(target)])
        assert result.exit_code == 0, result.output
        with fiona.open(target, layer="classes") as layer:
            found = sorted(
                (f["properties"]["class_code"], f["properties"]["pixels"]) for f in layer
            )
        assert found == [(1, 40 * 40 - 100 - 100), (7, 100)]  # nodata 9 left out
