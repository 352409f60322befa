"""The training losses (cross-entropy, + soft Dice, + Lovász-softmax) and balanced sampling."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from scratchsat.errors import InputError
from scratchsat.training.config import TrainConfig
from scratchsat.training.data import EpochSampler, PatchDataset, patch_weights
from scratchsat.training.loop import train
from scratchsat.training.losses import (
    DiceCrossEntropy,
    LovaszCrossEntropy,
    build_loss,
    dice_loss,
    lovasz_softmax,
)


def test_dice_matches_a_hand_computation_and_skips_ignored_pixels():
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]], [[0.0] * 2] * 2]])
    target = torch.tensor([[[0, 1], [255, 0]]])  # (1, 2, 2); one pixel ignored; class 2 absent
    probs = torch.softmax(logits, 1)[0].reshape(3, -1).T.numpy()  # (4 pixels, 3 classes)
    keep = [0, 1, 3]
    p, y = probs[keep], np.eye(3)[[0, 1, 0]]
    predicted = set(p.argmax(1))  # classes 0 and 1 (class 2 neither labelled nor predicted)
    assert predicted == {0, 1}
    dice = [2 * (p[:, c] * y[:, c]).sum() / (p[:, c].sum() + y[:, c].sum()) for c in (0, 1)]
    expected = 1 - np.mean(dice)
    assert dice_loss(logits, target, 255).item() == pytest.approx(expected, rel=1e-6)


def test_dice_is_near_zero_for_a_confident_right_answer_and_safe_when_all_is_ignored():
    target = torch.randint(0, 4, (2, 8, 8))
    logits = 50 * nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert dice_loss(logits, target, 255).item() < 1e-6
    wrong = dice_loss(logits, (target + 1) % 4, 255).item()
    assert wrong > 0.99
    empty = torch.full((2, 8, 8), 255)
    logits.requires_grad_(True)
    loss = dice_loss(logits, empty, 255)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def test_lovasz_of_one_hot_probabilities_is_one_minus_the_mean_iou():
    # At one-hot probabilities the Lovász extension is the Jaccard loss itself: 1 − IoU of
    # each class labelled in the batch (ignored pixels count for none), averaged.
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16), generator=generator)
    target[target == 3] = 2  # class 3 is never labelled: it is left out of the mean
    guess = torch.randint(0, 4, (2, 16, 16), generator=generator)
    guess[0, :8] = target[0, :8]
    target[1, :3] = 255
    logits = 100 * nn.functional.one_hot(guess, 4).permute(0, 3, 1, 2).float()
    keep = target != 255
    ious = []
    for c in range(3):
        truth, said = (target == c) & keep, (guess == c) & keep
        ious.append(((truth & said).sum() / (truth | said).sum()).item())
    loss = lovasz_softmax(logits, target, 255).item()
    assert loss == pytest.approx(1 - np.mean(ious), rel=1e-6) and 0.3 < loss < 0.9
    right = 100 * nn.functional.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float()
    assert lovasz_softmax(right, target, 255).item() == pytest.approx(0, abs=1e-6)
    soft = torch.randn(2, 4, 16, 16, requires_grad=True)
    lovasz_softmax(soft, torch.full((2, 16, 16), 255), 255).backward()  # nothing labelled
    assert torch.isfinite(soft.grad).all() and not soft.grad.any()
    both = build_loss("ce+lovasz", None, 255, 0.0)
    assert isinstance(both, LovaszCrossEntropy)
    logits = torch.randn(2, 4, 16, 16)
    expected = nn.functional.cross_entropy(logits, target, ignore_index=255)
    expected += lovasz_softmax(logits, target, 255)
    assert both(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_build_loss_adds_dice_to_the_configured_cross_entropy():
    weight = torch.tensor([1.0, 2.0, 0.5])
    plain = build_loss("ce", weight, 255, 0.1)
    both = build_loss("ce+dice", weight, 255, 0.1)
    assert isinstance(plain, nn.CrossEntropyLoss) and isinstance(both, DiceCrossEntropy)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = 255
    expected = plain(logits, target) + dice_loss(logits, target, 255)
    assert both(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(InputError, match="unknown loss 'dice'; choose one of ce, ce"):
        build_loss("dice", None, 255, 0.0)


def test_balanced_weights_follow_the_rarest_class_of_each_patch(seg_tiles):
    dataset = PatchDataset(seg_tiles, "train")
    masks = np.asarray(dataset.targets()).reshape(len(dataset), -1)
    classes = dataset.tiles.num_classes
    present = np.stack([(masks == c).any(1) for c in range(classes)], axis=1)
    share = present.mean(0)
    weights = patch_weights(dataset)
    for row in range(len(dataset)):
        found = np.flatnonzero(present[row])
        expected = max([np.sqrt(share.max() / share[c]) for c in found], default=1.0)
        assert weights[row] == pytest.approx(expected)
    assert weights.min() >= 1.0


def test_balanced_epochs_draw_rare_patches_more_often_and_replay():
    weights = np.array([1.0] * 90 + [4.0] * 10)  # ten patches hold a rare class
    sampler = EpochSampler(100, seed=3, weights=weights)
    sampler.set_epoch(2)
    drawn = [i for i, _ in sampler]
    assert len(drawn) == 100 and len(sampler) == 100
    rare = sum(i >= 90 for i in drawn)
    assert rare > 20  # about 100 * 40 / 130 = 31 expected; uniform gives about 10
    sampler.set_epoch(2, start=30)
    assert [i for i, _ in sampler] == drawn[30:]
    sampler.set_epoch(3)
    assert [i for i, _ in sampler] != drawn


@pytest.mark.parametrize("loss", ["ce+dice", "ce+lovasz"])
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_dice_lovasz_and_balanced_sampling_train(seg_tiles, cls_tiles, tmp_path, task, loss):
    tiles = seg_tiles if task == "segmentation" else cls_tiles
    config = TrainConfig.of(
        epochs=1, batch_size=8, width=8, loss=loss, sampling="balanced", ema=False
    )
    report = train(tiles, tmp_path / "run", config)
    assert np.isfinite(report["val"]["loss"])


def test_the_cli_defaults_are_the_configs():
    """One source of truth for defaults: every train option the CLI shares with TrainConfig
    defaults to the config's value."""
    from scratchsat.cli import train_command

    defaults = TrainConfig()
    checked = 0
    for name, parameter in inspect.signature(train_command).parameters.items():
        if name in ("time_budget",) or not hasattr(defaults, name):
            continue
        default = parameter.default
        default = getattr(default, "default", default)  # typer.Option in Annotated or not
        assert default == getattr(defaults, name), name
        checked += 1
    assert checked >= 15
