"""train --init-from: an earlier run's weights as the start, bands matched by name, a new
last layer for other classes, refusals for other bands or another model."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import torch

from scratchsat import TileOptions, tile
from scratchsat.bundle import load_bundle
from scratchsat.errors import InitWarning, InputError
from scratchsat.models import ModelConfig, build_model
from scratchsat.tiles.format import read_tiles
from scratchsat.training.init import init_from
from scratchsat.training.loop import TrainConfig, train


def variant_tiles(seg_tiles, folder, bands=None, relabel=None):
    """The synthetic scene of ``seg_tiles`` with its bands picked/reordered by ``bands``
    (0-based) and label codes mapped by ``relabel``, tiled the same way."""
    info = json.loads((seg_tiles / "dataset.json").read_text())
    scene, labels = info["sources"][0]["path"], info["labels"]["path"]
    folder.mkdir()
    with rasterio.open(scene) as src:
        data, profile, names = src.read(), src.profile, src.descriptions
    order = list(range(len(data))) if bands is None else bands
    with rasterio.open(folder / "scene.tif", "w", **{**profile, "count": len(order)}) as dst:
        dst.write(data[order])
        dst.descriptions = tuple(names[i] for i in order)
    with rasterio.open(labels) as src:
        codes, lprofile = src.read(1), src.profile
    for old, new in (relabel or {}).items():
        codes[codes == old] = new
    with rasterio.open(folder / "labels.tif", "w", **lprofile) as dst:
        dst.write(codes, 1)
    options = TileOptions(patch_size=32, block_size=64)
    return tile([folder / "scene.tif"], folder / "labels.tif", folder / "tiles", options=options)


def fresh_model(run, tiles):
    meta = load_bundle(run).meta
    config = ModelConfig.from_dict(
        {**meta.model, "in_channels": len(tiles.info["bands"]), "num_classes": tiles.num_classes}
    )
    return build_model(config), config


def test_same_bands_and_classes_take_every_weight(small_run, seg_tiles):
    tiles = read_tiles(seg_tiles)
    model, config = fresh_model(small_run, tiles)
    assert init_from(model, config, str(small_run), tiles) == []
    source = load_bundle(small_run).model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_reordered_bands_permute_the_first_layer(small_run, seg_tiles, tmp_path):
    tiles = read_tiles(variant_tiles(seg_tiles, tmp_path / "rev", bands=[5, 4, 3, 2, 1, 0]))
    model, config = fresh_model(small_run, tiles)
    init_from(model, config, str(small_run), tiles)
    source = load_bundle(small_run).model.state_dict()
    first = next(k for k, v in source.items() if v.dim() == 4 and v.shape[1] == 6)
    assert torch.equal(model.state_dict()[first], source[first][:, [5, 4, 3, 2, 1, 0]])
    # the reordered model on reordered bands computes what the source computes
    x = torch.randn(2, 6, 32, 32)
    reference = load_bundle(small_run).model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            model.eval()(x[:, [5, 4, 3, 2, 1, 0]]).numpy(), reference(x).numpy(), atol=1e-5
        )


def test_other_classes_get_a_new_last_layer_and_the_run_records_its_start(
    small_run, seg_tiles, tmp_path
):
    tiles = variant_tiles(seg_tiles, tmp_path / "merged", relabel={4: 3})
    config = TrainConfig.of(epochs=1, batch_size=8, width=8, init_from=str(small_run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiles, tmp_path / "run", config)
    said = [str(w.message) for w in caught if issubclass(w.category, InitWarning)]
    assert len(said) == 1 and "start(s) from random weights" in said[0], said
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["training"]["init_from"] == str(small_run)


def test_other_bands_or_another_model_are_refused(small_run, seg_tiles, tmp_path):
    tiles = variant_tiles(seg_tiles, tmp_path / "five", bands=[0, 1, 2, 3, 4])
    config = TrainConfig.of(epochs=1, batch_size=8, width=8, init_from=str(small_run))
    with pytest.raises(InputError, match=r"missing: B6|missing: \w+; new: none"):
        train(tiles, tmp_path / "run", config)
    wider = TrainConfig.of(epochs=1, batch_size=8, width=16, init_from=str(small_run))
    with pytest.raises(InputError, match="its model differs: .*width"):
        train(seg_tiles, tmp_path / "run2", wider)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()
