"""export --onnx: the exported graph matches torch (normalisation, invalid pixels, any window
size), carries the band contract and Deepness's keys, and predict runs it."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from scratchsat.bundle import load_bundle
from scratchsat.cli import app
from scratchsat.errors import InputError
from scratchsat.prediction import PredictOptions, Predictor, predict
from scratchsat.prediction.onnx import export_onnx

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = runner.invoke(app, ["export", str(small_run), "--onnx", str(path)])
    assert result.exit_code == 0, result.output
    return path


def raw_windows(meta, shape, seed=0):
    rng = np.random.default_rng(seed)
    mean = np.array([b["mean"] for b in meta.bands], np.float32)[None, :, None, None]
    std = np.array([b["std"] for b in meta.bands], np.float32)[None, :, None, None]
    x = (mean + std * rng.normal(size=shape)).astype(np.float32)
    x[0, 1, 3, 4] = np.nan  # an invalid pixel: every band becomes 0 after normalisation
    x[-1, 0, 5, 6] = np.inf
    if meta.nodata is not None:
        x[0, 2, 7, 8] = meta.nodata
    return x


def raw_windows_and_torch_probabilities(run, shape) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows and what the bundle's torch model gives for them, as predict runs it."""
    bundle = load_bundle(run)
    predictor = Predictor(bundle.model, bundle.meta, torch.device("cpu"))
    x = raw_windows(bundle.meta, shape)
    valid = np.isfinite(x).all(1)
    if bundle.meta.nodata is not None:
        valid &= (x != bundle.meta.nodata).all(1)
    expected = torch.stack(
        [
            predictor.probabilities(predictor.normalise(w, v)[None])[0]
            for w, v in zip(x, valid, strict=True)
        ]
    ).numpy()
    return x, expected


@pytest.mark.parametrize("shape", [(2, 6, 32, 32), (3, 6, 37, 53)])
def test_onnx_matches_torch_on_raw_values(exported, small_run, shape):
    x, expected = raw_windows_and_torch_probabilities(small_run, shape)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(None, {"bands": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_metadata_holds_the_band_contract_and_deepness_keys(exported, small_run, tmp_path):
    meta = load_bundle(small_run).meta
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    found = session.get_modelmeta().custom_metadata_map
    record = json.loads(found["scratchsat"])
    assert [b["name"] for b in record["bands"]] == meta.band_list
    assert [c["code"] for c in record["classes"]] == [c["code"] for c in meta.classes]
    assert json.loads(found["model_type"]) == "Segmentor"
    names = json.loads(found["class_names"])
    assert names == {str(i): c["name"] for i, c in enumerate(meta.classes)}
    assert json.loads(found["tiles_size"]) == meta.patch_size
    assert json.loads(found["resolution"]) == 1000.0  # 10 m pixels, in cm
    inputs = session.get_inputs()[0]
    assert inputs.name == "bands" and inputs.shape[1] == len(meta.bands)
    assert isinstance(inputs.shape[2], str)  # dynamic window size
    deepness = tmp_path / "deepness.onnx"
    export_onnx(small_run, deepness, deepness=True, tile_size=64)
    other = ort.InferenceSession(str(deepness), providers=["CPUExecutionProvider"])
    assert other.get_inputs()[0].shape[2:] == [64, 64]
    x = raw_windows(meta, (1, 6, 64, 64))
    np.testing.assert_allclose(
        other.run(None, {"bands": x / 255})[0],
        session.run(None, {"bands": x})[0],
        atol=1e-5,
    )


def test_predict_runs_the_onnx_file_like_the_bundle(exported, small_run, seg_tiles, tmp_path):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    scene = info["sources"][0]["path"]
    a = predict(small_run, [scene], tmp_path / "torch.tif")[0]
    b = predict(exported, [scene], tmp_path / "onnx.tif", options=PredictOptions(tta=True))[0]
    c = predict(exported, [scene], tmp_path / "plain.tif")[0]
    with rasterio.open(a) as x, rasterio.open(c) as y, rasterio.open(b) as z:
        assert (x.read(1) == y.read(1)).mean() > 0.999  # float rounding may flip a tie
        assert z.read(1).shape == x.read(1).shape
        assert json.loads(y.tags()["CLASSES"]) == json.loads(x.tags()["CLASSES"])
    wrong = tmp_path / "three.tif"
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 3}
        with rasterio.open(wrong, "w", **profile) as dst:
            dst.write(src.read([1, 2, 3]))
    result = runner.invoke(
        app, ["predict", str(exported), str(wrong), "--out", str(tmp_path / "w.tif")]
    )
    assert result.exit_code == 1 and "has 3 bands but the model was trained on 6" in result.output


def test_an_operation_onnx_cannot_express_is_named(seg_tiles, tmp_path):
    from scratchsat.models import REGISTRY, register_model
    from scratchsat.training.loop import TrainConfig, train

    class Cumulative(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.conv = torch.nn.Conv2d(config.in_channels, config.num_classes, 1)

        def forward(self, x):
            return torch.cummax(self.conv(x), dim=2).values

    register_model("cummax-fcn", "segmentation", Cumulative)
    try:
        run = tmp_path / "run"
        train(
            seg_tiles, run, TrainConfig.of(model="cummax-fcn", epochs=1, batch_size=16, ema=False)
        )
        with pytest.raises(InputError, match=r"cannot express \(aten.cummax"):
            export_onnx(run, tmp_path / "m.onnx")
        assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".m.onnx*"))
    finally:
        REGISTRY.pop("cummax-fcn", None)


def test_not_an_onnx_file_or_one_without_our_metadata(tmp_path, small_run, seg_tiles):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    result = runner.invoke(app, ["predict", str(tmp_path / "junk.onnx"), "x.tif", "--out", "y.tif"])
    assert result.exit_code == 1 and "is not a readable ONNX model" in result.output
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(6, 2, 1), (torch.randn(1, 6, 8, 8),), str(path), dynamo=True)
    result = runner.invoke(app, ["predict", str(path), "x.tif", "--out", "y.tif"])
    assert result.exit_code == 1 and "has no scratchsat metadata" in result.output


@pytest.mark.parametrize("deepness", [False, True])
def test_the_file_loads_in_the_onnxruntime_deepness_installs(small_run, tmp_path, deepness):
    """QGIS Deepness installs ``onnxruntime<=1.17.0``, which reads ONNX IR version 9 at most
    (``Unsupported model IR version: 10``) and opsets up to 20: the file stays within both and
    passes ONNX's own checker."""
    import onnx

    path = tmp_path / "model.onnx"
    args = ["export", str(small_run), "--onnx", str(path), *(["--deepness"] * deepness)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(path))
    assert model.ir_version <= 9
    assert all(o.version <= 20 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    shape[2:] = [s if isinstance(s, int) and s > 1 else 32 for s in shape[2:]]
    (out,) = session.run(None, {"bands": np.zeros(shape, np.float32)})
    assert np.allclose(out.sum(axis=1), 1, atol=1e-4)


def test_info_describes_an_onnx_model(exported, small_run):
    """``info model.onnx`` said the file could not be read as a raster: it describes the
    model from its metadata, as for a run folder (bands, classes, patch size, input)."""
    meta = load_bundle(small_run).meta
    result = runner.invoke(app, ["info", str(exported)])
    assert result.exit_code == 0, result.output
    assert "for segmentation" in result.output and "ONNX" in result.output
    assert ", ".join(b["name"] for b in meta.bands) in result.output
    described = json.loads(runner.invoke(app, ["info", "--json", str(exported)]).output)
    assert described["kind"] == "model" and described["format"] == "onnx"
    assert [c["name"] for c in described["classes"]] == [c["name"] for c in meta.classes]
    assert described["parameters"] > 1000  # the graph's stored weights
