"""train --indices: normalised differences of named bands as extra inputs, computed inside the
model on the bands' own values, so predict, --tta, --ensemble, --init-from and the ONNX export
get them with the weights and nothing to keep in step."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
import torch
from test_init_from import variant_tiles
from test_onnx import raw_windows_and_torch_probabilities
from torch import nn
from typer.testing import CliRunner

from scratchsat.bundle import load_bundle
from scratchsat.cli import app
from scratchsat.errors import InputError
from scratchsat.models import build_model
from scratchsat.models.inputs import WithIndices, index_pairs, set_band_stats, unwrap
from scratchsat.prediction import PredictOptions, predict
from scratchsat.tiles.format import read_tiles
from scratchsat.training.init import init_from
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.setup import model_config_for

runner = CliRunner()


class Fed(nn.Module):
    """Returns what it is fed: the inputs a wrapped network sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_the_extra_inputs_are_normalised_differences_of_the_bands_own_values():
    raw = np.array(  # 3 bands, 1 × 5 pixels
        [
            [[100.0, 300.0, 7.0, 1.0, 5.0]],
            [[50.0, 50.0, 7.0, -1.0, 5.0]],
            [[400.0, 100.0, 7.0, 3.0, -3.0]],
        ],
        np.float32,
    )[None]
    mean, std = np.array([90.0, 40.0, 200.0], np.float32), np.array([20.0, 10.0, 50.0], np.float32)
    x = (raw - mean[None, :, None, None]) / std[None, :, None, None]
    x[..., 2] = 0.0  # an invalid pixel: every band is 0 after standardisation
    model = WithIndices(Fed(), [(2, 0), (0, 1)], bands=3)
    model.set_band_stats(mean, std)
    got = model(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 5, 1, 5)
    np.testing.assert_array_equal(got[:, :3], x)  # the bands themselves, first and unchanged
    # (B3 - B1) / (B3 + B1): 300/500, -200/400, invalid, 2/4, -8/2 clamped to -1
    expected_first = [0.6, -0.5, 0.0, 0.5, -1.0]
    # (B1 - B2) / (B1 + B2): 50/150, 250/350, invalid, 1 + (-1) = 0 so no ratio, 0/10
    expected_second = [1 / 3, 250 / 350, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(got[0, 3, 0], expected_first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0, 4, 0], expected_second, rtol=1e-5, atol=1e-6)


def test_band_names_resolve_to_positions_and_bad_ones_are_refused():
    bands = ("B03", "B04", "B08")
    assert index_pairs("B08-B04,B03-B08", bands) == ((2, 1), (0, 2))
    assert index_pairs(" nir-1-red ", ("red", "nir-1")) == ((1, 0),)  # a '-' inside a name
    for text, why in [
        ("B08-B99", "the bands are B03, B04, B08"),
        ("B08", "not two different band names"),
        ("B08-B08", "not two different band names"),
        ("B08-B04,", "'' is not"),
    ]:
        with pytest.raises(InputError, match=why):
            index_pairs(text, bands)


def test_without_band_names_the_bands_are_b1_to_bn():
    model = build_model("unet", 6, 3, "segmentation", width=8, indices="B4-B3,B2-B6")
    assert isinstance(model, WithIndices)
    assert (model.first, model.second) == ([3, 1], [2, 5])
    first = next(p for p in model.net.parameters() if p.dim() == 4)
    assert first.shape[1] == 6 + 2
    assert index_pairs(None, ("B1",)) == () and index_pairs("", ("B1",)) == ()
    with pytest.raises(InputError, match="the bands are B1, B2, B3, B4, B5, B6"):
        build_model("unet", 6, 3, "segmentation", indices="B4-B7")


@pytest.fixture(scope="module")
def indices_run(seg_tiles, tmp_path_factory):
    """One epoch of a small U-Net with two indices over the synthetic bands B1 … B6."""
    run = tmp_path_factory.mktemp("indices") / "run"
    train(seg_tiles, run, TrainConfig.of(epochs=1, batch_size=8, width=8, indices="B4-B3,B2-B4"))
    return run


def test_a_run_with_indices_keeps_them_and_the_band_statistics_in_its_bundle(
    indices_run, seg_tiles
):
    meta = json.loads((indices_run / "model.json").read_text())
    assert meta["model"]["indices"] == "B4-B3,B2-B4"
    assert meta["model"]["index_bands"] == [[3, 2], [1, 3]]
    model = unwrap(load_bundle(indices_run).model)
    assert isinstance(model, WithIndices)
    tiles = read_tiles(seg_tiles)
    np.testing.assert_array_equal(model.mean.numpy(), tiles.mean)
    np.testing.assert_array_equal(model.std.numpy(), tiles.std)
    first = next(p for p in model.net.parameters() if p.dim() == 4)
    assert first.shape[1] == 6 + 2


def test_predict_and_onnx_compute_the_indices_alike(indices_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    plain = predict(indices_run, [scene], tmp_path / "map.tif")[0]
    turned = predict(indices_run, [scene], tmp_path / "tta.tif", options=PredictOptions(tta=True))
    with rasterio.open(plain) as a, rasterio.open(turned[0]) as b:
        assert len(np.unique(a.read(1))) > 1 and b.read(1).shape == a.read(1).shape
    onnx = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(indices_run), "--onnx", str(onnx)])
    assert result.exit_code == 0, result.output
    x, expected = raw_windows_and_torch_probabilities(indices_run, (2, 6, 32, 32))
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"bands": x})[0], expected, atol=1e-5)


def test_reordered_bands_start_from_a_run_with_indices(indices_run, seg_tiles, tmp_path):
    order = [5, 4, 3, 2, 1, 0]
    tiles = read_tiles(variant_tiles(seg_tiles, tmp_path / "rev", bands=order))
    config = model_config_for(TrainConfig.of(width=8, indices="B4-B3,B2-B4"), tiles)
    assert config.index_bands == ((2, 3), (4, 2))  # the same bands, at their new places
    model = build_model(config)
    init_from(model, config, str(indices_run), tiles)
    set_band_stats(model, tiles.mean, tiles.std)
    source = load_bundle(indices_run).model.eval()
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(
            model.eval()(x[:, order]).numpy(), source(x).numpy(), rtol=1e-4, atol=1e-4
        )


def test_an_unknown_band_is_refused_before_anything_is_written(seg_tiles, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(seg_tiles), "--out", str(run), "--epochs", "1", "--indices", "B4-B9"]
    )
    assert result.exit_code == 1
    assert "Error:" in result.output and "the bands are B1, B2, B3, B4, B5, B6" in result.output
    assert "Traceback" not in result.output
    assert not run.exists()
