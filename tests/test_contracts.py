"""Never a silently wrong map: bands matched by name, class codes that fit the class map,
bad inputs refused with an Error: (no traceback, nothing left behind), --resume that cannot
change a run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import BandError, BundleError, DatasetError, InputError, LabelError
from scratchsat.geo.classmap import class_dtype_and_nodata
from scratchsat.prediction import (
    BandOrderWarning,
    PredictOptions,
    Predictor,
    predict,
    predict_scene,
    scene_indexes,
)
from scratchsat.prediction.writers import Outputs
from scratchsat.tiles.tiling import TileOptions, tile
from scratchsat.training.loop import TrainConfig, train

runner = CliRunner()


def refused(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Error:" in result.output and message in result.output, result.output


def rewrite_bands(src_path, dst_path, order, names=None, extra=0):
    """Copy a scene with its bands in ``order`` (0-based), described as ``names`` (None: no
    descriptions), plus ``extra`` bands of noise."""
    with rasterio.open(src_path) as src:
        data, nodata = src.read(), src.nodata
        descriptions = list(src.descriptions)
    bands = [data[i] for i in order] + [np.full_like(data[0], 7)] * extra
    if names is None:
        names = None
    elif names == "same":
        names = [descriptions[i] for i in order] + [f"extra{k}" for k in range(extra)]
    return write_raster(dst_path, np.stack(bands), nodata=nodata, descriptions=names)


def class_map(path):
    with rasterio.open(path) as src:
        return src.read(1)


# ---- bands ---------------------------------------------------------------------------------


def test_described_bands_are_matched_by_name_in_any_order(small_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    predict(small_run, [scene], tmp_path / "straight.tif")
    straight = class_map(tmp_path / "straight.tif")
    shuffled = rewrite_bands(scene, tmp_path / "shuffled.tif", [3, 0, 5, 1, 4, 2], "same")
    reversed_ = rewrite_bands(scene, tmp_path / "reversed.tif", [5, 4, 3, 2, 1, 0], "same")
    more = rewrite_bands(scene, tmp_path / "more.tif", [2, 5, 0, 1, 3, 4], "same", extra=2)
    for path in (shuffled, reversed_, more):
        predict(small_run, [path], tmp_path / f"{path.stem}_pred.tif")
        np.testing.assert_array_equal(class_map(tmp_path / f"{path.stem}_pred.tif"), straight)


def test_band_names_that_conflict_are_refused_with_both_orders(small_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    with rasterio.open(scene) as src:
        names = list(src.descriptions)
    renamed = rewrite_bands(scene, tmp_path / "renamed.tif", range(6), [*names[:5], "thermal"])
    with pytest.raises(
        BandError,
        match=rf"{names[5]} is missing.*file order: "
        rf"{', '.join(names[:5])}, thermal; the model's: ",
    ):
        predict(small_run, [renamed], tmp_path / "x.tif")
    twice = rewrite_bands(scene, tmp_path / "twice.tif", [0, 1, 2, 3, 4, 5, 0], [*names, names[0]])
    with pytest.raises(BandError, match=rf"{names[0]} is described twice"):
        predict(small_run, [twice], tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_undescribed_bands_are_taken_in_order_with_a_warning(small_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    plain = rewrite_bands(scene, tmp_path / "plain.tif", range(6), None)
    with pytest.warns(BandOrderWarning, match="no descriptions.*taken in file order"):
        predict(small_run, [plain], tmp_path / "plain_pred.tif")
    predict(small_run, [scene], tmp_path / "straight.tif")
    np.testing.assert_array_equal(
        class_map(tmp_path / "plain_pred.tif"), class_map(tmp_path / "straight.tif")
    )
    fewer = rewrite_bands(scene, tmp_path / "fewer.tif", range(5), None)
    with pytest.raises(BandError, match="has 5 bands but the model was trained on 6"):
        predict(small_run, [fewer], tmp_path / "x.tif")


def test_a_model_without_band_names_refuses_a_scene_that_reorders_them(tmp_path):
    bands = [{"name": f"B{i}", "mean": 0.0, "std": 1.0} for i in (1, 2, 3)]
    meta = {"task": "segmentation", "patch_size": 16, "dtype": "uint8", "bands": bands}
    ordered = write_raster(
        tmp_path / "a.tif", np.zeros((3, 4, 4), np.uint8), descriptions=["B1", "B2", "B3"]
    )
    swapped = write_raster(
        tmp_path / "b.tif", np.zeros((3, 4, 4), np.uint8), descriptions=["B2", "B1", "B3"]
    )
    with rasterio.open(ordered) as src, pytest.warns(BandOrderWarning, match="model's bands"):
        assert scene_indexes(ordered, src, meta) == [1, 2, 3]
    with rasterio.open(swapped) as src, pytest.raises(BandError, match="without names"):
        scene_indexes(swapped, src, meta)


# ---- class codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "dtype", "nodata"),
    [
        ([0, 254], "uint8", 255),
        ([1, 255], "uint8", 0),
        ([0, 255], "uint16", 65535),
        ([0, 1000], "uint16", 65535),
        ([1, 65535], "uint16", 0),
        ([0, 65535], "uint16", 65534),
        ([0, 65534, 65535], "uint16", 65533),
        ([3], "uint8", 255),
        ([255], "uint8", 0),
    ],
)
def test_the_class_map_nodata_is_never_a_class_code(codes, dtype, nodata):
    assert class_dtype_and_nodata(codes) == (dtype, nodata)
    with pytest.raises(InputError, match="does not fit a class map"):
        class_dtype_and_nodata([*codes, 65536])
    with pytest.raises(InputError, match="does not fit a class map"):
        class_dtype_and_nodata([-1, *codes])


@pytest.mark.parametrize("codes", [[0, 65535], [1, 255]])
def test_pixels_of_the_top_code_read_back_as_that_class(tmp_path, codes):
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (2, 40, 40)).astype(np.float32)
    scene = write_raster(tmp_path / "scene.tif", data)
    meta = {
        "task": "segmentation",
        "patch_size": 16,
        "dtype": "float32",
        "bands": [{"name": f"B{i}", "mean": 0.0, "std": 1.0} for i in (1, 2)],
        "classes": [
            {"id": i, "code": c, "name": f"c{c}", "colour": "#102030"} for i, c in enumerate(codes)
        ],
    }
    predictor = Predictor(torch.nn.Identity(), meta, torch.device("cpu"))
    with pytest.warns(BandOrderWarning):
        predict_scene(predictor, scene, Outputs(tmp_path / "pred.tif"), PredictOptions())
    with rasterio.open(tmp_path / "pred.tif") as src:
        got = src.read(1, masked=True)
    expected = np.array(codes)[data.argmax(0)]
    assert not got.mask.any()  # no class pixel reads back as nodata
    np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize(("dtype", "code"), [("int16", -1), ("int32", 70000)])
def test_tile_refuses_codes_a_class_map_cannot_hold(tmp_path, dtype, code):
    scene = write_raster(tmp_path / "scene.tif", np.ones((2, 32, 32), np.uint16))
    labels = np.ones((32, 32), dtype)
    labels[:8] = code
    label_path = write_raster(tmp_path / "labels.tif", labels)
    with pytest.raises(LabelError, match=rf"labels.tif: class code {code} is outside 0..65535"):
        tile([scene], label_path, tmp_path / "tiles", options=TileOptions(patch_size=16))
    assert not (tmp_path / "tiles").exists()


def test_vector_labels_with_negative_codes_are_refused(tmp_path):
    import fiona

    scene = write_raster(tmp_path / "scene.tif", np.ones((2, 32, 32), np.uint16))
    schema = {"geometry": "Polygon", "properties": {"code": "int"}}
    with fiona.open(
        tmp_path / "l.gpkg", "w", driver="GPKG", crs="EPSG:32633", schema=schema
    ) as dst:
        x, y = 500_000.0, 5_800_000.0
        ring = [(x, y), (x + 200, y), (x + 200, y - 200), (x, y - 200), (x, y)]
        dst.write(
            {"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"code": -3}}
        )
    with pytest.raises(LabelError, match="class code -3 is outside"):
        tile(
            [scene],
            tmp_path / "l.gpkg",
            tmp_path / "tiles",
            label_field="code",
            options=TileOptions(patch_size=16),
        )


# ---- bad inputs ----------------------------------------------------------------------------


def test_a_scene_smaller_than_the_patch(tmp_path):
    scene = write_raster(tmp_path / "s.tif", np.ones((2, 20, 20), np.uint16))
    labels = write_raster(tmp_path / "l.tif", np.ones((20, 20), np.uint8))
    for size in ("32", "100000000"):
        result = runner.invoke(
            app,
            [
                "tile",
                str(scene),
                "--labels",
                str(labels),
                "--patch-size",
                size,
                "--out",
                str(tmp_path / "t"),
            ],
        )
        refused(result, f"is 20 × 20 px, smaller than --patch-size {size}")
    assert not (tmp_path / "t").exists()


def test_float64_scenes_with_nan_and_inf(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (3, 64, 64))
    data[:, :, :32] += 4  # two halves a model can tell apart
    data[0, 5, 5], data[1, 6, 40], data[2, 50, 7] = np.nan, np.inf, -np.inf
    scene = write_raster(tmp_path / "s.tif", data, descriptions=["a", "b", "c"])
    labels = np.where(np.arange(64)[None, :] < 32, 1, 2).repeat(64, 0).astype(np.uint8)
    label_path = write_raster(tmp_path / "l.tif", labels)
    tiles = tile(
        [scene],
        label_path,
        tmp_path / "tiles",
        options=TileOptions(patch_size=16, block_size=16, seed=2),
    )
    info = json.loads((tiles / "dataset.json").read_text())
    assert all(np.isfinite([b["mean"], b["std"]]).all() for b in info["bands"])
    report = train(tiles, tmp_path / "run", TrainConfig.of(epochs=2, batch_size=4, width=8))
    assert np.isfinite(report["val"]["loss"])
    predict(tmp_path / "run", [scene], tmp_path / "pred.tif")
    with rasterio.open(tmp_path / "pred.tif") as src:
        got = src.read(1)
        nodata = src.nodata
    assert got[5, 5] == got[6, 40] == got[50, 7] == nodata
    assert (got != nodata).sum() == 64 * 64 - 3


@pytest.mark.parametrize("command", ["tile", "predict"])
def test_workers_below_one_are_refused(small_run, seg_tiles, tmp_path, command):
    scene = seg_tiles.parent / "scene.tif"
    args = {
        "tile": [
            "tile",
            str(scene),
            "--labels",
            str(seg_tiles.parent / "labels.tif"),
            "--out",
            str(tmp_path / "t"),
        ],
        "predict": ["predict", str(small_run), str(scene), "--out", str(tmp_path / "p.tif")],
    }
    refused(
        runner.invoke(app, [*args[command], "--workers", "0"]),
        "--workers must be at least 1, not 0",
    )
    assert list(tmp_path.iterdir()) == []


def edited(seg_tiles, tmp_path, edit):
    copy = tmp_path / "tiles"
    shutil.copytree(seg_tiles, copy)
    info = json.loads((copy / "dataset.json").read_text())
    edit(info)
    (copy / "dataset.json").write_text(json.dumps(info))
    return copy


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("classes"), "'classes' must be a list, found missing"),
        (lambda d: d.update(bands=d["bands"][:2]), "describes patches of 2 bands"),
        (lambda d: d.update(classes=d["classes"][:2]), "holds class id 3 but"),
        (lambda d: d.update(format_version=7), "format_version 7, newer than"),
        (lambda d: d.update(patch_size="32"), "'patch_size' must be a int, found str"),
        (lambda d: d["bands"][0].pop("std"), "every entry of 'bands' needs 'std'"),
        (lambda d: d["classes"].reverse(), "class ids must be 0, 1, … in order"),
    ],
)
def test_a_hand_edited_dataset_json_is_refused_before_training(seg_tiles, tmp_path, edit, message):
    copy = edited(seg_tiles, tmp_path, edit)
    with pytest.raises(DatasetError, match=message):
        train(copy, tmp_path / "run", TrainConfig.of(epochs=1))
    assert not (tmp_path / "run").exists()  # no empty run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]  # nor a lock file


def test_a_damaged_or_planted_checkpoint(small_run, seg_tiles, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match="is not a scratchsat checkpoint"):
        train(seg_tiles, run, resume=True)

    import pickle

    class Planted:
        def __reduce__(self):
            return (print, ("this must never run",))

    (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": Planted()}))
    result = runner.invoke(app, ["train", str(seg_tiles), "--out", str(run), "--resume"])
    refused(result, "is not a scratchsat checkpoint")
    assert "this must never run" not in result.output
    assert "weights_only" not in result.output


def test_bundle_weights_outside_the_bundle_are_refused(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    meta = json.loads((run / "model.json").read_text())
    for name in (f"../{small_run.name}/model.safetensors", "/etc/passwd", ".."):
        (run / "model.json").write_text(json.dumps({**meta, "weights": name}))
        with pytest.raises(BundleError, match="which is not a file beside it"):
            predict(run, [tmp_path / "unused.tif"], tmp_path / "x.tif")


def test_demo_overwrite_replaces_a_symlinked_run_folder_without_following_it(tmp_path):
    out, elsewhere = tmp_path / "demo", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (out / "run").symlink_to(elsewhere)
    result = runner.invoke(app, ["demo", "--out", str(out), "--epochs", "1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "keep.txt").read_text() == "keep"
    assert not (out / "run").is_symlink() and (out / "run" / "model.json").exists()


# ---- resume --------------------------------------------------------------------------------


def test_resume_refuses_settings_that_change_the_run(small_run, seg_tiles, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    result = runner.invoke(
        app,
        ["train", str(seg_tiles), "--out", str(run), "--resume", "--epochs", "5", "--lr", "0.1"],
    )
    refused(result, "--epochs 5 (the run has 1), --lr 0.1 (the run has 0.002) would change it")
    with pytest.raises(InputError, match="--batch-size 4 .the run has 8."):
        train(seg_tiles, run, TrainConfig.of(batch_size=4), resume=True)
    # the same values, and settings that only change speed, are accepted
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            str(run),
            "--resume",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output


def test_vector_labels_without_features_are_refused(tmp_path):
    scene = write_raster(tmp_path / "scene.tif", np.ones((2, 32, 32), np.uint16))
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(LabelError, match="holds no features"):
        tile(
            [scene],
            tmp_path / "empty.geojson",
            tmp_path / "tiles",
            options=TileOptions(patch_size=16),
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"optimizer": "adam2"}, "unknown optimizer 'adam2'; choose one of adamw, sgd"),
        ({"schedule": "cos"}, "unknown schedule 'cos'; choose one of onecycle"),
        ({"class_weights": "inv"}, "unknown class weighting 'inv'; choose one of none"),
        ({"aug": "flips"}, "unknown augmentation 'flips'; choose one of none, d4, d4crop, geo"),
        ({"model": "vit"}, "unknown model 'vit'; known models: simple"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"activation": "tanh"}, "unknown activation 'tanh'"),
        ({"width": 0}, "--width and --depth must be at least 1"),
    ],
)
def test_training_settings_are_checked_before_anything_is_read(tmp_path, settings, message):
    with pytest.raises(InputError, match=message):  # not "tiles folder … does not exist"
        train(tmp_path / "no-such-tiles", tmp_path / "run", TrainConfig(**settings))
    assert list(tmp_path.iterdir()) == []
