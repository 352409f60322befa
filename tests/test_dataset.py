"""PatchDataset: normalisation from dataset.json, invalid pixels at 0, splits, workers, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scratchsat.bundle import load_checkpoint
from scratchsat.errors import DatasetError, InputError
from scratchsat.geo.windows import SPLITS
from scratchsat.tiles.format import read_tiles
from scratchsat.training.data import (
    EpochSampler,
    PatchDataset,
    epoch_length,
    normalise,
)


def test_items_are_normalised_with_the_folder_statistics(seg_tiles):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    dataset = PatchDataset(seg_tiles, "train")
    assert len(dataset) == info["splits"]["train"]
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (6, 32, 32)
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    row = dataset.indices[0]
    raw = np.load(seg_tiles / "images.npy")[row].astype(np.float64)
    band = info["bands"][2]
    valid = (raw != 0).all(axis=0)
    expected = (raw[2][valid] - band["mean"]) / band["std"]
    np.testing.assert_allclose(image[2].numpy()[valid], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), np.load(seg_tiles / "masks.npy")[row])


def test_all_train_pixels_have_mean_0_and_std_1(seg_tiles):
    """Statistics are over every kept patch; the train split alone comes out close to them."""
    dataset = PatchDataset(seg_tiles, None)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # (N, C, P, P)
    masks = torch.stack([dataset[i][1] for i in range(len(dataset))])
    raw = np.load(seg_tiles / "images.npy")
    valid = torch.from_numpy((raw != 0).all(axis=1))  # (N, P, P)
    values = images.permute(1, 0, 2, 3)[:, valid]  # (C, valid pixels)
    np.testing.assert_allclose(values.mean(1).numpy(), 0, atol=1e-3)
    np.testing.assert_allclose(values.std(1).numpy(), 1, atol=1e-3)
    assert (masks[~valid] == 255).all()


def test_invalid_pixels_become_zero_in_every_band():
    image = np.array([[[0, 10], [20, 30]], [[5, 0], [7, 9]]], np.uint16)  # (2, 2, 2)
    out = normalise(image, np.array([10.0, 5.0], np.float32), np.array([10.0, 2.0], np.float32), 0)
    np.testing.assert_allclose(out[:, 0, 0], 0)  # band 1 nodata
    np.testing.assert_allclose(out[:, 0, 1], 0)  # band 2 nodata
    np.testing.assert_allclose(out[:, 1, 1], [2.0, 2.0])
    floats = np.array([[[np.nan, 1.0]]], np.float32)
    np.testing.assert_allclose(
        normalise(floats, np.zeros(1, np.float32), np.ones(1, np.float32), None), [[[0.0, 1.0]]]
    )


def test_splits_partition_the_store(seg_tiles):
    splits = np.load(seg_tiles / "splits.npy")
    sets = [set(PatchDataset(seg_tiles, name).indices) for name in SPLITS]
    assert sum(map(len, sets)) == len(splits)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    with pytest.raises(InputError, match="unknown split 'validation'; choose one of train, val"):
        PatchDataset(seg_tiles, "validation")


def test_classification_items_are_class_ids(cls_tiles):
    dataset = PatchDataset(cls_tiles, "val")
    labels = np.load(cls_tiles / "labels.npy")[dataset.indices]
    got = [int(dataset[i][1]) for i in range(len(dataset))]
    assert got == labels.tolist()
    assert dataset[0][1].shape == () and dataset[0][1].dtype == torch.int64


def test_seeded_items_replay_and_workers_give_the_same_batches(seg_tiles):
    dataset = PatchDataset(seg_tiles, "train", augment="geo")
    a, b = dataset[(3, 99)], dataset[(3, 99)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    sampler = EpochSampler(len(dataset), seed=5)
    sampler.set_epoch(2)
    inline = list(DataLoader(dataset, batch_size=16, sampler=sampler))
    workers = list(DataLoader(dataset, batch_size=16, sampler=sampler, num_workers=2))
    assert len(inline) == len(workers)
    for (x1, y1), (x2, y2) in zip(inline, workers, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_epoch_sampler_orders_resumes_and_shards():
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    assert sorted(i for i, _ in full) == list(range(10))
    sampler.set_epoch(3, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(4)
    assert list(sampler) != full
    shards = [EpochSampler(10, seed=1, rank=r, world_size=3) for r in range(3)]
    for s in shards:
        s.set_epoch(3)
    items = [list(s) for s in shards]
    assert all(len(i) == 4 for i in items)  # 10 padded to 12
    assert {i for shard in items for i, _ in shard} == set(range(10))


def test_a_small_training_split_is_drawn_again_within_an_epoch():
    sampler = EpochSampler(10, seed=1, length=25)
    sampler.set_epoch(3)
    items = list(sampler)
    order = [i for i, _ in items]
    assert len(items) == len(sampler) == 25
    # Each pass over the split is a whole permutation in its own order; the last is cut short.
    assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10))
    assert order[:10] != order[10:20] and len(set(order[20:])) == 5
    assert len({seed for _, seed in items}) == 25  # every draw its own augmentation
    sampler.set_epoch(3, start=17)
    assert list(sampler) == items[17:] and len(sampler) == 8
    shards = [EpochSampler(10, seed=1, rank=r, world_size=3, length=25) for r in range(3)]
    for s in shards:
        s.set_epoch(3)
    assert [len(list(s)) for s in shards] == [9, 9, 9]  # 25 padded to 27
    # A length at or below the split's size changes nothing: one pass, the same draw.
    plain, same = EpochSampler(10, seed=1), EpochSampler(10, seed=1, length=4)
    plain.set_epoch(3), same.set_epoch(3)
    assert list(plain) == list(same) and [i for i, _ in plain] == order[:10]


def test_an_epoch_is_at_least_a_number_of_optimizer_steps():
    assert epoch_length(28, 32, 16) == 16 * 32  # 28 patches: an epoch of 16 batches
    assert epoch_length(28, 32, 16, world_size=2) == 16 * 64  # 16 batches each
    assert epoch_length(604, 32, 16) == 604  # 19 batches: once an epoch, as ever
    assert epoch_length(28, 32, 1) == 28  # --epoch-steps 1: one pass, whatever its size
    assert epoch_length(66, 8, 9) == 72  # 8 full batches (the last 2 patches are dropped)
    assert epoch_length(66, 8, 8) == 66


def test_training_on_a_few_patches_takes_the_minimum_steps(seg_tiles, tmp_path):
    from scratchsat.training.loop import TrainConfig, train

    train_patches = json.loads((seg_tiles / "dataset.json").read_text())["splits"]["train"]
    batch = 64
    default = TrainConfig().epoch_steps
    assert default == 16 and train_patches // batch < default  # a split of a few batches
    config = TrainConfig(epochs=2, batch_size=batch, width=8, calibrate=False)
    assert train(seg_tiles, tmp_path / "plan", config, dry_run=True)["steps_per_epoch"] == 16
    train(seg_tiles, tmp_path / "run", config)
    schedule = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["schedule"]
    assert schedule["last_epoch"] == 2 * 16  # the optimizer steps taken
    one_pass = TrainConfig(epochs=2, batch_size=batch, width=8, epoch_steps=1)
    assert train(seg_tiles, tmp_path / "p1", one_pass, dry_run=True)["steps_per_epoch"] == 1


def test_a_run_saved_before_epoch_steps_resumes_with_one_pass_an_epoch(tmp_path):
    from dataclasses import asdict

    from scratchsat.training.config import TrainConfig, resumed_config

    older = asdict(TrainConfig(epochs=3))
    del older["epoch_steps"]  # as checkpoints written before the setting hold their config
    path = tmp_path / "checkpoint.pt"
    assert resumed_config({"config": older}, None, None, path).epoch_steps == 1
    newer = asdict(TrainConfig(epochs=3))
    assert resumed_config({"config": newer}, None, None, path).epoch_steps == 16


def test_a_run_saved_before_cutmix_resumes_without_it(tmp_path):
    from dataclasses import asdict

    from scratchsat.training.config import TrainConfig, resumed_config

    older = asdict(TrainConfig(epochs=3))
    del older["cutmix"]  # as checkpoints written before the setting hold their config
    path = tmp_path / "checkpoint.pt"
    assert resumed_config({"config": older}, None, None, path).cutmix == 0.0
    assert resumed_config({"config": asdict(TrainConfig())}, None, None, path).cutmix == 0.5


def test_missing_and_incomplete_tiles_folders(tmp_path, seg_tiles):
    with pytest.raises(DatasetError, match="nowhere does not exist; make one with `scratchsat"):
        read_tiles(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="has no dataset.json, so it is not a tiles folder"):
        read_tiles(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(seg_tiles, broken)
    (broken / "masks.npy").unlink()
    with pytest.raises(DatasetError, match="incomplete: masks.npy is missing"):
        read_tiles(broken)
    shutil.copy(seg_tiles / "masks.npy", broken / "masks.npy")
    np.save(broken / "labels.npy", np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match="labels.npy has 3 rows but dataset.json says"):
        read_tiles(broken)
    (broken / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot be read as JSON"):
        read_tiles(broken)
