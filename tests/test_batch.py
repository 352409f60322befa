"""Per-batch normalisation and D4 on the device match the per-patch path exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from scratchsat.errors import InputError
from scratchsat.tiles.format import read_tiles
from scratchsat.training.batch import d4, d4_batch, host_batch, normalise_batch, raw_view
from scratchsat.training.data import EpochSampler, PatchDataset, normalise
from scratchsat.training.loop import TrainConfig, train
from scratchsat.training.setup import build_loaders


def test_raw_batches_normalise_like_single_patches(seg_tiles):
    tiles = read_tiles(seg_tiles)
    raw = PatchDataset(tiles, "train", raw=True)
    x, y, k = next(iter(DataLoader(raw, batch_size=8)))
    assert x.dtype == torch.int16 and k.tolist() == [0] * 8  # no seed: identity
    got = normalise_batch(
        x, tiles.dtype, torch.from_numpy(tiles.mean), torch.from_numpy(tiles.std), tiles.nodata
    )
    images = np.load(seg_tiles / "images.npy")[raw.indices[:8]]
    want = np.stack([normalise(i, tiles.mean, tiles.std, tiles.nodata) for i in images])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), np.load(seg_tiles / "masks.npy")[raw.indices[:8]])
    with pytest.raises(InputError, match="augmented on the device"):
        PatchDataset(tiles, "train", "d4", raw=True)


def test_raw_batches_get_d4crops_crop_as_they_are_read(seg_tiles, cls_tiles):
    tiles = read_tiles(seg_tiles)
    plain, cropping = (
        PatchDataset(tiles, "train", raw=True),
        PatchDataset(tiles, "train", raw=True, crop=True),
    )
    keys = [(i % len(plain), seed) for i, seed in enumerate(range(1000, 1040))]
    (x, y, ks), (cx, cy, cks) = plain[keys], cropping[keys]
    assert torch.equal(ks, cks)  # the d4 symmetries (made on the device) are the same draws
    changed = 0
    for image, mask, out, out_mask in zip(x, y, cx, cy, strict=True):
        # every pixel (all bands) arrives with its own label, values unchanged
        pairs = {(*image[:, r, c].tolist(), int(mask[r, c])) for r in range(32) for c in range(32)}
        for r in range(32):
            assert all((*out[:, r, c].tolist(), int(out_mask[r, c])) in pairs for c in range(32))
        changed += not torch.equal(image, out)
    assert 10 <= changed <= 30  # about half
    unseeded = [0, 1, 2]  # validation, test and prediction reads: never cropped
    assert torch.equal(cropping[unseeded][0], plain[unseeded][0])
    assert not PatchDataset(cls_tiles, "train", raw=True, crop=True).crop  # labels per patch
    with pytest.raises(InputError, match="crop=True is the raw path's d4crop"):
        PatchDataset(tiles, "train", crop=True)


def test_uint16_above_32767_survives_the_int16_trip():
    raw = torch.from_numpy(np.array([[[[0, 1, 40000, 65535]]]], np.uint16).view(np.int16))
    x = normalise_batch(raw, "uint16", torch.zeros(1), torch.ones(1), None)
    assert x.flatten().tolist() == [0, 1, 40000, 65535]


def test_d4_batch_applies_each_samples_symmetry_to_image_and_mask():
    x = torch.arange(8 * 2 * 5 * 5, dtype=torch.float32).reshape(8, 2, 5, 5)
    y = torch.arange(8 * 5 * 5).reshape(8, 5, 5)
    ks = torch.tensor([3, 0, 7, 1, 4, 6, 2, 5])
    out_x, out_y = d4_batch(x, y, ks)
    for i, k in enumerate(ks.tolist()):
        base = np.rot90(x[i].numpy(), k % 4, axes=(-2, -1))
        base = base[..., ::-1] if k >= 4 else base
        np.testing.assert_array_equal(out_x[i].numpy(), base)
        np.testing.assert_array_equal(out_y[i].numpy(), d4(y[i], k).numpy())
    assert len({tuple(d4(x[0], k).flatten().tolist()) for k in range(8)}) == 8


def test_training_with_per_batch_d4_learns_and_replays(seg_tiles, tmp_path):
    config = TrainConfig.of(epochs=8, batch_size=8, width=8, lr=3e-3, batch_augment=True)
    report = train(seg_tiles, tmp_path / "a", config)
    assert report["val"]["overall_accuracy"] > 0.85
    again = train(seg_tiles, tmp_path / "b", TrainConfig.of(**{**config.__dict__, "epochs": 2}))
    first = json.loads((tmp_path / "a" / "report.json").read_text())
    assert first["val"]["confusion"] != again["val"]["confusion"]  # 2 vs 8 epochs differ
    third = train(seg_tiles, tmp_path / "c", TrainConfig.of(**{**config.__dict__, "epochs": 2}))
    assert third["val"]["confusion"] == again["val"]["confusion"]


def test_sampler_seeds_pick_symmetries(seg_tiles):
    raw = PatchDataset(seg_tiles, "train", raw=True)
    sampler = EpochSampler(len(raw), seed=0)
    ks = torch.cat([b[2] for b in DataLoader(raw, batch_size=16, sampler=sampler)])
    assert set(ks.tolist()) == set(range(8))


@pytest.mark.parametrize("tiles_name", ["seg_tiles", "cls_tiles"])
def test_a_list_of_keys_fetches_the_collated_batch_in_one_read(tiles_name, request):
    folder = request.getfixturevalue(tiles_name)
    keys = [(5, 11), (0, 3), (7, 8), 2]  # any order, seeded or not
    raw = PatchDataset(folder, "train", raw=True)
    x, y, ks = raw[keys]
    one_by_one = [raw[k] for k in keys]
    np.testing.assert_array_equal(x.numpy(), np.stack([i[0].numpy() for i in one_by_one]))
    np.testing.assert_array_equal(y.numpy(), np.stack([i[1].numpy() for i in one_by_one]))
    assert ks.tolist() == [11 % 8, 3 % 8, 8 % 8, 0] and y.dtype == torch.int64
    normalised = PatchDataset(folder, "val", "d4")  # item by item, then collated
    images, targets = normalised[[(1, 4), (0, 9)]]
    for i, key in enumerate([(1, 4), (0, 9)]):
        image, target = normalised[key]
        np.testing.assert_array_equal(images[i].numpy(), image.numpy())
        np.testing.assert_array_equal(targets[i].numpy(), target.numpy())


def test_gpu_loaders_read_raw_batches_in_the_training_process(seg_tiles):
    # Built for a CUDA device without touching it: the loaders are only configured here.
    cuda, tiles = torch.device("cuda"), read_tiles(seg_tiles)
    raw = build_loaders(TrainConfig.of(batch_size=8, aug="d4"), tiles, None, cuda)
    train_loader = raw["train"]
    assert train_loader.dataset.raw and train_loader.num_workers == 0
    assert train_loader.batch_size is None and isinstance(train_loader.sampler, BatchSampler)
    assert train_loader.sampler.batch_size == 8 and train_loader.pin_memory
    assert raw["val"].dataset.raw and raw["val"].num_workers == 0
    assert not train_loader.dataset.crop
    crop = build_loaders(TrainConfig.of(batch_size=8, aug="d4crop"), tiles, None, cuda)
    assert crop["train"].dataset.raw and crop["train"].dataset.crop  # cropped as it is read
    assert crop["val"].dataset.raw and not crop["val"].dataset.crop
    geo = build_loaders(TrainConfig.of(batch_size=8, aug="geo"), tiles, None, cuda)["train"]
    assert not geo.dataset.raw and geo.batch_size == 8
    assert geo.num_workers == min(8, os.cpu_count() or 1)  # interpolating: per patch in workers
    chosen = build_loaders(TrainConfig.of(batch_size=8, workers=1), tiles, None, cuda)["train"]
    assert chosen.dataset.raw and chosen.num_workers == 1  # the user's choice stands


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("uint16", 0), ("uint16", None), ("uint8", 7), ("int16", -9), ("float32", float("nan"))],
)
def test_host_batches_match_the_device_path(dtype, nodata):
    # The CPU path (numpy, one pass per sample, threads) gives what the torch path gives.
    rng = np.random.default_rng(4)
    high = 60_000 if dtype == "uint16" else 120
    images = rng.integers(1, high, (8, 3, 6, 6)).astype(dtype)
    images[2, 1, 3, 4] = 0 if nodata is None else nodata  # one invalid pixel (or a plain 0)
    if dtype == "float32":
        images[5, 0, 0, 0] = np.nan
    raw = torch.from_numpy(raw_view(images))
    masks = torch.from_numpy(rng.integers(0, 4, (8, 6, 6)))
    labels = torch.arange(8)
    ks = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    mean, std = rng.random(3) * 50, rng.random(3) * 10 + 1
    want = normalise_batch(raw, dtype, torch.from_numpy(mean), torch.from_numpy(std), nodata)
    want_x, want_y = d4_batch(want, masks, ks)
    got_x, got_y = host_batch(raw, masks, ks, dtype, mean, std, nodata)
    np.testing.assert_allclose(got_x.numpy(), want_x.numpy(), rtol=1e-5, atol=1e-5)
    assert torch.equal(got_y, want_y) and got_x.dtype == torch.float32
    assert (got_x == 0).all(dim=1).sum() >= (1 if nodata is not None else 0)
    plain_x, same = host_batch(raw, labels, None, dtype, mean, std, nodata)
    np.testing.assert_allclose(plain_x.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert torch.equal(same, labels)


def test_cutmix_pastes_a_square_of_another_sample_with_its_labels():
    """Every pixel keeps its own label: image and mask come from the same sample at the same
    place. About p of the samples get a square (side 25–75 % of the patch) of another sample;
    the same generator seed draws the same; p = 0 is the identity."""
    from scratchsat.training.batch import cutmix_batch, step_generator

    n, size = 64, 20
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    x = torch.stack([torch.stack([torch.full((size, size), i), rows, cols]) for i in range(n)])
    x = x.float()
    y = torch.arange(n).view(n, 1, 1).expand(n, size, size).clone()
    y[:, 0, 0] = 255  # an ignored pixel travels like any other
    out_x, out_y = cutmix_batch(x, y, step_generator(7, 2, 5), p=0.5)
    torch.testing.assert_close(out_x[:, 1:], x[:, 1:])  # pasted at the same place
    source = out_x[:, 0].long()
    expected = source.clone()
    expected[:, 0, 0] = 255
    assert torch.equal(out_y, expected)
    mixed = [i for i in range(n) if (source[i] != i).any()]
    assert 16 <= len(mixed) <= 48
    for i in mixed:
        box = torch.nonzero(source[i] != i)
        (top, left), (bottom, right) = box.min(0).values, box.max(0).values
        side = int(bottom - top + 1)
        assert side == int(right - left + 1) and 5 <= side <= 15
        assert len(box) == side * side and len(set(source[i][source[i] != i].tolist())) == 1
    again_x, again_y = cutmix_batch(x, y, step_generator(7, 2, 5), p=0.5)
    assert torch.equal(again_x, out_x) and torch.equal(again_y, out_y)
    other, _ = cutmix_batch(x, y, step_generator(7, 2, 6), p=0.5)
    assert not torch.equal(other, out_x)
    same_x, same_y = cutmix_batch(x, y, step_generator(7, 2, 5), p=0.0)
    assert torch.equal(same_x, x) and torch.equal(same_y, y)


def test_training_with_cutmix_replays_and_differs_from_without(seg_tiles, tmp_path):
    from typer.testing import CliRunner

    from scratchsat.cli import app

    config = TrainConfig.of(epochs=2, batch_size=8, width=8, cutmix=0.5)
    first = train(seg_tiles, tmp_path / "a", config)
    again = train(seg_tiles, tmp_path / "b", config)
    plain = train(seg_tiles, tmp_path / "c", TrainConfig.of(**{**config.__dict__, "cutmix": 0.0}))
    assert first["val"]["confusion"] == again["val"]["confusion"]
    assert first["val"]["confusion"] != plain["val"]["confusion"]
    result = CliRunner().invoke(
        app, ["train", str(seg_tiles), "--out", str(tmp_path / "d"), "--cutmix", "1.5"]
    )
    assert result.exit_code == 1 and "--cutmix must be in [0, 1], not 1.5" in result.output
