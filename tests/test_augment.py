"""Augmentation: any band count and dtype survives, masks move with images, ignore stays ignore."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchsat.errors import InputError
from scratchsat.training.augment import BandJitter, BandNoise, build_augment, reflect_index

BANDS = st.sampled_from([1, 3, 4, 6, 13])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32])
PRESETS = st.sampled_from(["d4", "d4crop", "geo"])


def blocky_image(bands: int, dtype, seed: int, size: int = 24) -> np.ndarray:
    """(C, size, size) image of 4×4-pixel constant blocks spanning most of the dtype's range."""
    rng = np.random.default_rng(seed)
    top = 200 if dtype == np.uint8 else 40_000 if dtype == np.uint16 else 3.0
    blocks = rng.uniform(0.1 * top, 0.9 * top, (bands, size // 4, size // 4))
    return np.kron(blocks, np.ones((4, 4))).astype(dtype)


def threshold_mask(image: np.ndarray) -> np.ndarray:
    """A mask computed from the image: band 0 above its midrange → 1, else 0."""
    band = image[0].astype(np.float64)
    return (band > (band.min() + band.max()) / 2).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(bands=BANDS, dtype=DTYPES, preset=PRESETS, seed=st.integers(0, 2**31 - 1))
def test_shape_dtype_and_bands_are_kept(bands, dtype, preset, seed):
    image = blocky_image(bands, dtype, seed)
    out, mask = build_augment(preset)(image, threshold_mask(image), seed)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert mask.shape == image.shape[1:] and mask.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(bands=BANDS, dtype=DTYPES, seed=st.integers(0, 2**31 - 1))
def test_d4_keeps_the_pixel_multiset_and_the_alignment(bands, dtype, seed):
    image = blocky_image(bands, dtype, seed)
    image[0, 1, 2] = image[0].max()  # break the block symmetry so a rotation is visible
    mask = threshold_mask(image)
    out, out_mask = build_augment("d4")(image, mask, seed)
    for before, after in zip(image, out, strict=True):
        np.testing.assert_array_equal(np.sort(before, axis=None), np.sort(after, axis=None))
    np.testing.assert_array_equal(threshold_mask(out), out_mask)
    # One and the same of the 8 symmetries moved every band and the mask.
    moved_image = {i for i, v in enumerate(d4_variants(image)) if np.array_equal(v, out)}
    moved_mask = {i for i, v in enumerate(d4_variants(mask)) if np.array_equal(v, out_mask)}
    assert moved_image & moved_mask


def d4_variants(array: np.ndarray):
    """The 8 rotations and reflections of the last two axes."""
    for k in range(4):
        rotated = np.rot90(array, k, axes=(-2, -1))
        yield rotated
        yield rotated[..., ::-1]


@settings(max_examples=40, deadline=None)
@given(bands=BANDS, dtype=DTYPES, seed=st.integers(0, 2**31 - 1))
def test_geo_keeps_mask_aligned_with_image(bands, dtype, seed):
    """Rotation interpolates the image but not the mask; away from block edges they agree."""
    image = blocky_image(bands, dtype, seed, size=32)
    out, out_mask = build_augment("geo")(image, threshold_mask(image), seed)
    agreement = (threshold_mask(out) == out_mask).mean()
    assert agreement > 0.85


def test_geo_rotates_sometimes_and_d4_never_interpolates():
    image = blocky_image(13, np.float32, 0, size=32)
    values = set(np.unique(image))
    seen_new_values = False
    for seed in range(20):
        out, _ = build_augment("d4")(image, threshold_mask(image), seed)
        assert set(np.unique(out)) == values
        out, _ = build_augment("geo")(image, threshold_mask(image), seed)
        seen_new_values |= not set(np.unique(out)) <= values
    assert seen_new_values


def test_reflect_index_is_symmetric_padding_of_the_crop():
    values = np.arange(100, 132)
    for start, side in [(0, 32), (5, 16), (16, 16), (3, 1), (10, 7)]:
        for before in range(0, 33 - side):
            want = np.pad(values[start : start + side], (before, 32 - side - before), "symmetric")
            np.testing.assert_array_equal(values[reflect_index(32, start, side, before)], want)


@settings(max_examples=60, deadline=None)
@given(bands=BANDS, dtype=DTYPES, seed=st.integers(0, 2**31 - 1))
def test_d4crop_moves_pixels_with_their_labels_and_never_resamples(bands, dtype, seed):
    image = blocky_image(bands, dtype, seed, size=32)
    image[0] = np.arange(32 * 32).reshape(32, 32) % 200  # every pixel told apart by band 0
    mask = (image[0] % 7).astype(np.uint8)  # a label that follows its pixel
    mask[:3] = 255
    out, out_mask = build_augment("d4crop")(image, mask, seed)
    # Every output pixel (all bands, and its label) is one of the input's, unchanged.
    pixels = {(*image[:, r, c].tolist(), int(mask[r, c])) for r in range(32) for c in range(32)}
    assert all(
        (*out[:, r, c].tolist(), int(out_mask[r, c])) in pixels
        for r in range(32)
        for c in range(32)
    )


def test_d4crop_crops_half_the_patches_and_fills_windows_from_inside_an_object():
    """A patch three quarters lake: cropped views inside the lake show it edge to edge, the view a
    prediction window has inside a lake larger than any patch."""
    image = np.zeros((3, 32, 32), np.uint16)
    image[:, :, :24] = 900  # the lake
    image[1, 5, 28] = 7  # a marked land pixel, so a d4 view is told apart from a crop
    mask = (image[0] == 900).astype(np.uint8)
    aug, cropped, all_lake = build_augment("d4crop"), 0, 0
    for seed in range(300):
        out, out_mask = aug(image, mask, seed)
        np.testing.assert_array_equal(out_mask, (out[0] == 900).astype(np.uint8))
        cropped += not any(np.array_equal(out, v) for v in d4_variants(image))
        all_lake += bool(out_mask.all())
    assert 100 < cropped < 200  # half the time (p = 0.5), less the crops that change nothing
    assert all_lake > 5


def test_d4crop_leaves_classification_patches_whole():
    image = blocky_image(4, np.uint16, 5, size=32)
    image[0, 1, 2] = 1
    aug = build_augment("d4crop")
    for seed in range(40):
        out, _ = aug(image, None, seed)
        assert any(np.array_equal(out, v) for v in d4_variants(image))


def test_ignore_pixels_stay_ignore_under_d4():
    image = blocky_image(4, np.uint16, 1)
    mask = threshold_mask(image)
    mask[:5, :7] = 255
    out, out_mask = build_augment("d4")(image, mask, 3)
    assert (out_mask == 255).sum() == 35
    assert set(np.unique(out_mask)) == set(np.unique(mask))


def test_same_seed_same_result_and_seeds_differ():
    image = blocky_image(6, np.float32, 2)
    aug = build_augment("geo")
    a, _ = aug(image, None, 7)
    b, _ = aug(image, None, 7)
    np.testing.assert_array_equal(a, b)
    outs = {aug(image, None, s)[0].tobytes() for s in range(10)}
    assert len(outs) > 5


def test_band_jitter_and_noise_do_not_clip_or_refuse_16_bit():
    """albumentations' GaussNoise refuses uint16 and clips float32 to [0, 1]; ours do neither."""
    image = np.full((32, 32, 13), 30_000, np.uint16)
    image[:16] = 20_000
    for transform in (BandJitter(p=1), BandNoise(p=1)):
        out = A.Compose([transform], seed=0)(image=image)["image"]
        assert out.dtype == np.uint16 and out.shape == image.shape
        assert not np.array_equal(out, image)
        assert abs(float(out.mean()) - float(image.mean())) < 0.1 * float(image.mean())
    floats = np.random.default_rng(0).normal(5, 2, (16, 16, 3)).astype(np.float32)
    out = A.Compose([BandNoise(p=1)], seed=0)(image=floats)["image"]
    assert out.max() > 1.5 and out.dtype == np.float32


def test_a_user_pipeline_is_accepted():
    pipeline = A.Compose([A.HorizontalFlip(p=1.0)])
    image = blocky_image(5, np.uint16, 3)
    mask = threshold_mask(image)
    out, out_mask = build_augment(pipeline)(image, mask)
    np.testing.assert_array_equal(out, image[:, :, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_none_and_unknown_presets():
    assert build_augment("none") is None and build_augment(None) is None
    with pytest.raises(
        InputError, match="unknown augmentation 'rgbjitter'; choose one of none, d4, d4crop, geo"
    ):
        build_augment("rgbjitter")
    with pytest.raises(InputError, match="not int"):
        build_augment(3)
