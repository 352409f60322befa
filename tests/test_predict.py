"""predict: exact stitching, GeoTIFFs GIS tools read with a legend, COGs, errors, real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import gdalinfo, peak_memory_mb, run_pyqgis, write_raster, write_with_alpha
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import BandError, InputError, OutputExistsError
from scratchsat.geo.classmap import sidecars
from scratchsat.prediction import (
    DriftWarning,
    PredictOptions,
    Predictor,
    predict,
    predict_scene,
)
from scratchsat.prediction.writers import Outputs

runner = CliRunner()
CODES = [3, 7, 11, 20]
COLOURS = ["#112233", "#445566", "#778899", "#aabbcc"]
NODATA = -9999.0


def identity_meta(bands: int, patch_size: int, task: str = "segmentation") -> dict:
    """A bundle description for a model whose logits are its (normalised) input."""
    return {
        "task": task,
        "patch_size": patch_size,
        "dtype": "float32",
        "bands": [{"name": f"B{i}", "mean": 0.0, "std": 1.0} for i in range(1, bands + 1)],
        "classes": [
            {"id": i, "code": c, "name": f"class {c}", "colour": COLOURS[i]}
            for i, c in enumerate(CODES[:bands])
        ],
    }


def random_scene(path, height, width, bands=4, seed=0):
    """Float32 scene of random logits; a few pixels nodata in one band, a few NaN."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 2, (bands, height, width)).astype(np.float32)
    data[1, rng.integers(0, height, 5), rng.integers(0, width, 5)] = NODATA
    data[2, rng.integers(0, height, 3), rng.integers(0, width, 3)] = np.nan
    write_raster(path, data, nodata=NODATA)
    return data


def expected(data: np.ndarray):
    invalid = (data == NODATA).any(0) | np.isnan(data).any(0)
    clean = np.where(invalid, 0, data)
    codes = np.array(CODES[: len(data)], np.uint8)[clean.argmax(0)]
    codes[invalid] = 255
    e = np.exp(clean - clean.max(0))
    probs = e / e.sum(0)
    probs[:, invalid] = np.nan
    return codes, probs, invalid


@pytest.mark.parametrize(
    ("height", "width", "patch", "overlap"),
    [
        (37, 53, 16, 0.0),
        (37, 53, 16, 0.25),
        (37, 53, 16, 0.5),
        (70, 100, 32, 0.3),
        (10, 12, 16, 0.25),
        (33, 17, 8, 0.75),
    ],
)
def test_identity_model_is_reproduced_exactly(tmp_path, height, width, patch, overlap):
    data = random_scene(tmp_path / "scene.tif", height, width)
    predictor = Predictor(torch.nn.Identity(), identity_meta(4, patch), torch.device("cpu"))
    options = PredictOptions(
        patch_size=patch, overlap=overlap, batch_size=3, float_probabilities=True
    )
    outputs = Outputs(tmp_path / "pred.tif", tmp_path / "probs.tif")
    predict_scene(predictor, tmp_path / "scene.tif", outputs, options)
    codes, probs, invalid = expected(data)
    with rasterio.open(tmp_path / "pred.tif") as src:
        np.testing.assert_array_equal(src.read(1), codes)
    with rasterio.open(tmp_path / "probs.tif") as src:
        got = src.read()
    np.testing.assert_allclose(got[:, ~invalid], probs[:, ~invalid], rtol=1e-5, atol=1e-6)
    assert np.isnan(got[:, invalid]).all()


def test_the_class_map_opens_in_gis_tools_with_a_legend(tmp_path):
    random_scene(tmp_path / "scene.tif", 300, 520)
    predictor = Predictor(torch.nn.Identity(), identity_meta(4, 64), torch.device("cpu"))
    path = tmp_path / "pred.tif"
    predict_scene(predictor, tmp_path / "scene.tif", Outputs(path, tmp_path / "p.tif"))
    info, scene = gdalinfo(path), gdalinfo(tmp_path / "scene.tif")
    assert info["size"] == [520, 300]
    assert info["geoTransform"] == scene["geoTransform"]
    assert info["coordinateSystem"]["wkt"] == scene["coordinateSystem"]["wkt"]
    band = info["bands"][0]
    assert band["type"] == "Byte" and band["noDataValue"] == 255
    assert band["colorInterpretation"] == "Palette"
    assert band["description"] == "predicted class"
    # The sidecar's colour table ends at the largest code (QGIS lists every entry) ...
    table = band["colorTable"]["entries"]
    assert len(table) == 21 and table[20] == [0xAA, 0xBB, 0xCC, 255]
    assert table[3] == [0x11, 0x22, 0x33, 255] and table[4] == [255, 255, 255, 0]  # unused: clear
    # ... the file's own (all 256 entries, as GeoTIFF stores them) serves when it travels alone.
    alone = gdalinfo(path, sidecars=False)["bands"][0]
    assert alone["colorTable"]["count"] == 256 and alone["colorTable"]["entries"][7][3] == 255
    assert alone["colorTable"]["entries"][255][3] == 0  # nodata is transparent
    assert band["categories"][7] == "class 7" and band["categories"][20] == "class 20"
    assert {r["f"][1] for r in info["rat"]["row"]} == {f"class {c}" for c in CODES}
    assert info["metadata"][""]["AREA_OR_POINT"] == "Area"
    assert json.loads(info["metadata"][""]["CLASSES"])[1]["name"] == "class 7"
    assert 'label="class 11"' in sidecars(path)["qml"].read_text()
    probs = gdalinfo(tmp_path / "p.tif")
    assert [b["description"] for b in probs["bands"]] == [
        f"probability of class {c}" for c in CODES
    ]
    for b in probs["bands"]:  # whole percent, nodata 255, a scale GDAL and QGIS apply
        assert b["type"] == "Byte" and b["colorInterpretation"] != "Alpha"
        assert b["noDataValue"] == 255 and b["scale"] == 0.01
        assert "mask" not in b  # no mask band, which QGIS would show as one more band
    assert 'type="singlebandgray" grayBand="1"' in (tmp_path / "p.qml").read_text()


QGIS_LEGEND = """
import os, sys
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsLayerTreeModel
app = QgsApplication([], False)
app.initQgis()
for path in sys.argv[1:]:
    layer = QgsRasterLayer(path, os.path.basename(path))
    QgsProject.instance().addMapLayer(layer)
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
    model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot())
    legend = model.layerLegendNodes(node)
    renderer = layer.renderer()
    band = getattr(renderer, "grayBand", lambda: 0)()
    names = "|".join(str(n.data(0)) for n in legend)
    print("LAYER", layer.bandCount(), renderer.type(), band, names)
app.exitQgis()
"""


def test_qgis_lists_the_classes_and_draws_scores_as_one_band(tmp_path):
    """In a real QGIS (skipped without PyQGIS): the class map without its .qml has a legend of
    the classes (not GeoTIFF's 256 colour entries); probabilities and uncertainty have no extra
    mask band and are drawn as one grey band (their .qml), not an RGB mix."""
    random_scene(tmp_path / "scene.tif", 64, 80)
    predictor = Predictor(torch.nn.Identity(), identity_meta(4, 32), torch.device("cpu"))
    out = tmp_path / "out"
    out.mkdir()
    outputs = Outputs(out / "pred.tif", out / "p.tif", out / "u.tif")
    predict_scene(predictor, tmp_path / "scene.tif", outputs)
    (out / "pred.qml").unlink()  # the map as a catalogue shares it: the raster and .aux.xml
    lines = run_pyqgis(QGIS_LEGEND, out / "pred.tif", out / "p.tif", out / "u.tif").splitlines()
    layers = [line.split(" ", 4)[1:] for line in lines if line.startswith("LAYER")]
    assert len(layers) == 3, lines
    names = [f"class {c}" if c in CODES else str(c) for c in range(21)]  # 0..20, unused: number
    assert layers[0] == [
        "1",
        "paletted",
        "0",
        "|".join(["Band 1: predicted class (Palette)", *names]),
    ]
    assert layers[1][:3] == ["4", "singlebandgray", "1"]  # 4 classes, no fifth (mask) band
    assert layers[2][:3] == ["3", "singlebandgray", "2"]  # entropy


def test_cog_output_passes_a_cog_validator(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    random_scene(tmp_path / "scene.tif", 1100, 900)
    predictor = Predictor(torch.nn.Identity(), identity_meta(4, 128), torch.device("cpu"))
    options = PredictOptions(cog=True)
    outputs = Outputs(tmp_path / "pred.tif", tmp_path / "probs.tif")
    predict_scene(predictor, tmp_path / "scene.tif", outputs, options)
    for path in (tmp_path / "pred.tif", tmp_path / "probs.tif"):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
        info = gdalinfo(path)
        assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
        assert info["bands"][0]["overviews"]
    assert gdalinfo(tmp_path / "pred.tif")["bands"][0]["colorTable"]["entries"][7][:3] == [
        0x44,
        0x55,
        0x66,
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_classification_writes_one_cell_per_window(tmp_path):
    """A model that averages each band over its window; cells are windows, centred."""

    class WindowMean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    data = np.zeros((3, 40, 50), np.float32)
    data[0, :20] = 5  # top half: class 3; bottom left: class 7; bottom right: class 11
    data[1, 20:, :22] = 5
    data[2, 20:, 22:] = 5
    write_raster(tmp_path / "scene.tif", data)
    meta = identity_meta(3, 10, task="classification")
    predictor = Predictor(WindowMean(), meta, torch.device("cpu"))
    predict_scene(
        predictor,
        tmp_path / "scene.tif",
        Outputs(tmp_path / "pred.tif"),
        PredictOptions(overlap=0.0),
    )
    with (
        rasterio.open(tmp_path / "pred.tif") as src,
        rasterio.open(tmp_path / "scene.tif") as scene,
    ):
        assert (src.width, src.height) == (5, 4)
        assert src.transform == scene.transform * scene.transform.scale(10)
        cells = src.read(1)
    np.testing.assert_array_equal(cells, [[3] * 5, [3] * 5, [7, 7, 11, 11, 11], [7, 7, 11, 11, 11]])


def test_wrong_band_count_is_refused_and_nothing_is_written(tmp_path, trained_run):
    run, _ = trained_run
    write_raster(tmp_path / "four.tif", np.ones((4, 20, 20), np.uint16), nodata=0)
    with pytest.raises(
        BandError,
        match=r"four.tif has 4 bands but the model was trained on 6 "
        r"\(B1, B2, B3, B4, B5, B6\); pass a 6-band scene",
    ):
        predict(run, [tmp_path / "four.tif"], tmp_path / "pred.tif")
    result = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "four.tif"), "--out", str(tmp_path / "pred.tif")]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and "has 4 bands" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.tif"]
    # More bands than trained, none described: nothing says which six are meant.
    write_raster(tmp_path / "seven.tif", np.ones((7, 20, 20), np.uint16), nodata=0)
    with pytest.raises(BandError, match=r"seven.tif has 7 bands but the model was trained on 6"):
        predict(run, [tmp_path / "seven.tif"], tmp_path / "pred.tif")


@pytest.fixture(scope="module")
def trained_run(trained, seg_tiles):
    """The session's trained run, and the folder of the scene it was trained on."""
    return trained[0], seg_tiles.parent


def test_a_trained_model_predicts_an_unseen_scene_through_the_cli(tmp_path, trained_run):
    from scratchsat import write_scene

    run, _ = trained_run
    scene = write_scene(
        tmp_path / "other.tif", tmp_path / "truth.tif", width=260, height=190, count=6, seed=42
    )
    out = tmp_path / "pred.tif"
    result = runner.invoke(
        app,
        [
            "predict",
            str(run),
            str(scene.path),
            "--out",
            str(out),
            "--probabilities",
            str(tmp_path / "probs.tif"),
        ],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as pred, rasterio.open(scene.labels_path) as truth:
        got, want = pred.read(1), truth.read(1)
        assert pred.transform == truth.transform and pred.crs == truth.crs
    with rasterio.open(scene.path) as src:
        invalid = (src.read() == 0).any(0)
    np.testing.assert_array_equal(got == 255, invalid)
    labelled = ~invalid & (want != 0)
    assert (got[labelled] == want[labelled]).mean() > 0.9
    result = runner.invoke(app, ["predict", str(run), str(scene.path), "--out", str(out)])
    assert result.exit_code == 1 and "exists already; pass --overwrite" in result.output


def test_several_scenes_go_into_a_folder(tmp_path, trained_run):
    run, folder = trained_run
    other = tmp_path / "b" / "scene2.tif"
    other.parent.mkdir()
    other.write_bytes((folder / "scene.tif").read_bytes())
    with pytest.raises(InputError, match="is a file name but there are several scenes"):
        predict(run, [folder / "scene.tif", other], tmp_path / "x.tif")
    with pytest.raises(InputError, match="two scenes share a file name"):
        predict(run, [folder / "scene.tif", folder / "scene.tif"], tmp_path / "preds")
    paths = predict(run, [folder / "scene.tif", other], tmp_path / "preds")
    assert [p.name for p in paths] == ["scene.tif", "scene2.tif"]
    assert all(p.parent == tmp_path / "preds" and p.exists() for p in paths)
    with pytest.raises(OutputExistsError, match="scene.tif exists already"):
        predict(run, [folder / "scene.tif"], tmp_path / "preds")


def test_drift_and_dtype_warnings(tmp_path, trained_run):
    run, folder = trained_run
    with rasterio.open(folder / "scene.tif") as src:
        data, profile = src.read(), src.profile
    profile.update(dtype="float32")
    with rasterio.open(tmp_path / "bright.tif", "w", **profile) as dst:
        dst.write(np.where(data == 0, 0, data.astype(np.float32) * 3 + 5000))
    with pytest.warns(DriftWarning) as caught:
        predict(run, [tmp_path / "bright.tif"], tmp_path / "pred.tif")
    messages = [str(w.message) for w in caught]
    assert any("is float32 but the model was trained on uint16" in m for m in messages)
    assert any("band means far from the training data's: B1" in m for m in messages)


def test_bad_options(tmp_path, trained_run):
    run, folder = trained_run
    with pytest.raises(InputError, match=r"--overlap must be a fraction in \[0, 1\)"):
        predict(
            run, [folder / "scene.tif"], tmp_path / "p.tif", options=PredictOptions(overlap=1.0)
        )
    with pytest.raises(InputError, match="is the scene itself"):
        predict(run, [folder / "scene.tif"], folder / "scene.tif", overwrite=True)


def test_memory_stays_flat_as_the_scene_grows(tmp_path, trained_run):
    """Predicting a scene 10× taller raises peak memory by far less than its extra size.

    One fresh process predicts the small scene, then the large one, and reports its peak
    resident memory after each; GDAL's block cache is held at 4 MB, so what grows is ours."""
    run, _ = trained_run
    paths = []
    for rows in (2048, 20480):
        data = np.random.default_rng(0).integers(1, 3000, (6, rows, 128), dtype=np.uint16)
        paths.append(
            write_raster(
                tmp_path / f"s{rows}.tif",
                data,
                nodata=0,
                tiled=True,
                blockxsize=128,
                blockysize=128,
                compress="deflate",
            )
        )
    small, large = peak_memory_mb(
        "from scratchsat.prediction import predict, PredictOptions",
        f"predict({str(run)!r}, [path], path + '.pred.tif', options=PredictOptions(batch_size=8))",
        paths,
    )
    extra = 6 * 4 * 128 * (20480 - 2048) / 2**20  # the large scene's extra pixels as float32
    assert large - small < 0.25 * extra, (small, large)


def test_several_scenes_in_worker_processes_match_one_process(tmp_path, trained_run):
    from scratchsat import write_scene

    run, _ = trained_run
    scenes = [
        write_scene(
            tmp_path / f"s{i}.tif",
            tmp_path / f"l{i}.tif",
            width=90 + 10 * i,
            height=70,
            count=6,
            seed=i,
        ).path
        for i in range(3)
    ]
    seen = []
    one = predict(run, scenes, tmp_path / "one", progress=lambda d, t, **f: seen.append((d, t)))
    assert seen[-1] == (sum(90 * 70 + 10 * i * 70 for i in range(3)),) * 2  # one count, all
    two = predict(run, scenes, tmp_path / "two", options=PredictOptions(device="cpu"), workers=2)
    for a, b in zip(one, two, strict=True):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            np.testing.assert_array_equal(x.read(), y.read())
            assert x.transform == y.transform


def test_codes_above_254_make_a_uint16_map(tmp_path):
    data = random_scene(tmp_path / "scene.tif", 20, 30, bands=3)
    meta = identity_meta(3, 8)
    meta["classes"] = [
        {"id": 0, "code": 100, "name": "a", "colour": "#ff0000"},
        {"id": 1, "code": 300, "name": "b", "colour": "#00ff00"},
        {"id": 2, "code": 1000, "name": "c", "colour": "#0000ff"},
    ]
    predictor = Predictor(torch.nn.Identity(), meta, torch.device("cpu"))
    predict_scene(predictor, tmp_path / "scene.tif", Outputs(tmp_path / "pred.tif"))
    invalid = (data == NODATA).any(0) | np.isnan(data).any(0)
    want = np.array([100, 300, 1000])[np.where(invalid, 0, data).argmax(0)]
    want[invalid] = 65535
    with rasterio.open(tmp_path / "pred.tif") as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 65535
        np.testing.assert_array_equal(src.read(1), want)
        assert src.colormap(1)[300][:3] == (0, 255, 0)


@pytest.mark.filterwarnings("ignore::scratchsat.prediction.engine.DriftWarning")
def test_an_alpha_band_is_a_mask_not_a_band(tmp_path):
    # RGB + alpha, as gdalwarp -dstalpha writes (GDAL reads an 8/16-bit alpha band as the
    # mask): an identity model over the 3 data bands; alpha 0 pixels come out as nodata.
    rng = np.random.default_rng(3)
    data = rng.integers(1, 60_000, (3, 24, 30)).astype(np.uint16)
    valid = np.ones((24, 30), bool)
    valid[:, :5] = False
    write_with_alpha(tmp_path / "rgba.tif", data, valid)
    meta = {**identity_meta(3, 8), "dtype": "uint16"}
    predictor = Predictor(torch.nn.Identity(), meta, torch.device("cpu"))
    predict_scene(
        predictor,
        tmp_path / "rgba.tif",
        Outputs(tmp_path / "pred.tif", None),
        PredictOptions(patch_size=8, overlap=0.25),
    )
    with rasterio.open(tmp_path / "pred.tif") as src:
        codes = src.read(1)
    want = np.array(CODES[:3], np.uint8)[data.argmax(0)]
    want[:, :5] = 255
    np.testing.assert_array_equal(codes, want)
    four = Predictor(
        torch.nn.Identity(), {**identity_meta(4, 8), "dtype": "uint16"}, torch.device("cpu")
    )  # the alpha band does not make up a 4th band
    with pytest.raises(
        BandError,
        match=r"rgba.tif has 3 bands \(and 1 alpha\) but the model "
        r"was trained on 4 \(B1, B2, B3, B4\)",
    ):
        predict_scene(
            four,
            tmp_path / "rgba.tif",
            Outputs(tmp_path / "p4.tif", None),
            PredictOptions(patch_size=8),
        )
    assert not (tmp_path / "p4.tif").exists()


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_uncertainty_is_margin_entropy_and_top_probability_of_the_blend(tmp_path, overlap):
    data = random_scene(tmp_path / "scene.tif", 45, 61)
    predictor = Predictor(torch.nn.Identity(), identity_meta(4, 16), torch.device("cpu"))
    outputs = Outputs(tmp_path / "pred.tif", uncertainty=tmp_path / "unsure.tif")
    predict_scene(predictor, tmp_path / "scene.tif", outputs, PredictOptions(overlap=overlap))
    _, probs, invalid = expected(data)
    ranked = np.sort(probs[:, ~invalid], axis=0)
    p = probs[:, ~invalid]
    want = [ranked[-1] - ranked[-2], -(p * np.log(p)).sum(0) / np.log(4), ranked[-1]]
    with rasterio.open(tmp_path / "unsure.tif") as src:
        got = src.read()
        assert src.descriptions == ("margin", "entropy", "top_probability")
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
    for band, expected_band in zip(got, want, strict=True):
        np.testing.assert_allclose(band[~invalid], expected_band, rtol=1e-4, atol=1e-5)
    assert np.isnan(got[:, invalid]).all()
    info = gdalinfo(tmp_path / "unsure.tif")
    assert info["size"] == [61, 45]


def test_a_one_class_model_is_certain_everywhere(tmp_path):
    data = np.random.default_rng(1).normal(0, 2, (1, 20, 30)).astype(np.float32)
    data[0, 3, 4] = NODATA
    write_raster(tmp_path / "scene.tif", data, nodata=NODATA)
    predictor = Predictor(torch.nn.Identity(), identity_meta(1, 16), torch.device("cpu"))
    outputs = Outputs(tmp_path / "pred.tif", uncertainty=tmp_path / "unsure.tif")
    predict_scene(predictor, tmp_path / "scene.tif", outputs)
    with rasterio.open(tmp_path / "unsure.tif") as src:
        margin, entropy, top = src.read()
    valid = data[0] != NODATA
    assert np.isnan(margin[3, 4]) and np.isnan(entropy[3, 4])
    assert (margin[valid] == 1).all() and (entropy[valid] == 0).all() and (top[valid] == 1).all()


def test_uncertainty_through_the_cli_with_tta_and_clashing_paths(tmp_path, trained_run):
    run, folder = trained_run
    scene = str(folder / "scene.tif")
    out, unsure = tmp_path / "map.tif", tmp_path / "unsure.tif"
    args = ["predict", str(run), scene, "--out", str(out), "--uncertainty", str(unsure)]
    result = runner.invoke(app, [*args, "--tta"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as classes, rasterio.open(unsure) as src:
        assert src.transform == classes.transform and src.crs == classes.crs
        margin, entropy, top = src.read(masked=False)
    assert np.nanmin(top) >= 0.25 - 1e-6 and np.nanmax(top) <= 1 + 1e-6
    assert np.nanmin(margin) >= 0 and np.nanmax(entropy) <= 1
    result = runner.invoke(app, ["predict", str(run), scene, "--out", str(out)])
    assert result.exit_code == 1 and "exists" in result.output
    clash = ["predict", str(run), scene, "--out", str(tmp_path / "b.tif")]
    result = runner.invoke(app, [*clash, "--uncertainty", str(tmp_path / "b.tif")])
    assert result.exit_code == 1 and "is the same file as the class map" in result.output
    assert not (tmp_path / "b.tif").exists()


def offset_agreement(run, scene, folder, options=None):
    """The share of shared pixels on which the map of ``scene`` and the map of the scene cut
    by 7 rows and 13 columns at the top left agree (the window grid then falls elsewhere, and
    the network's poolings too): ``benchmarks/artefacts.py``'s measure."""
    import sys
    from pathlib import Path

    from scratchsat.prediction import predict

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    from artefacts import DX, DY, cut_scene

    options = options or PredictOptions()
    cut_scene(scene, folder / "cut.tif")
    (whole,) = predict(run, [scene], folder / "whole.tif", options=options, overwrite=True)
    (cut,) = predict(
        run, [folder / "cut.tif"], folder / "cutmap.tif", options=options, overwrite=True
    )
    with rasterio.open(whole) as a, rasterio.open(cut) as b:
        shared, other = a.read(1)[DY:, DX:], b.read(1)
    both = (shared != 255) & (other != 255)
    return float((shared[both] == other[both]).mean())


def test_the_map_does_not_depend_on_where_the_window_grid_falls(tmp_path, trained_run):
    """A trained model's map of an unseen scene and its map of the same scene cut by 7 rows
    and 13 columns (windows and poolings fall elsewhere) agree on at least 99 % of their
    shared pixels; a map that followed its windows would not."""
    from scratchsat import write_scene

    run, _ = trained_run
    scene = write_scene(
        tmp_path / "unseen.tif", tmp_path / "truth.tif", width=300, height=260, count=6, seed=7
    )
    assert offset_agreement(run, scene.path, tmp_path) >= 0.99
    # the instrument can fail: unblended windows (overlap 0) follow their grid
    assert offset_agreement(run, scene.path, tmp_path, options=PredictOptions(overlap=0)) < 0.99


@pytest.mark.parametrize("size", [32, 64, 256])
def test_blended_windows_fall_at_every_phase_of_the_poolings(size):
    """A U-Net of 4 poolings sees a scene alike only at shifts of 16 px: the step between
    blended windows is odd, so successive windows fall at all 16 phases, not at one."""
    from scratchsat.geo.windows import blend_stride, cover_offsets

    stride = blend_stride(size, 0.5)
    assert stride % 2 == 1 and abs(stride - size / 2) <= 1
    offsets = cover_offsets(40 * size, size, stride)
    assert set((offsets % 16).tolist()) == set(range(16))
    assert blend_stride(size, 1 - 1 / size) == 1 and blend_stride(3, 0.0) == 3
