"""Geo-safe augmentation: the only module that imports albumentations.

Patches are (C, H, W) with any number of bands and any dtype; masks are (H, W) uint8 with 255 =
ignore. albumentations works on (H, W, C), so :class:`Augment` moves the band axis in and out.
Nothing here assumes 3 bands, 8 bits or values in [0, 1] (see DEVELOPERS.md for the
albumentations transforms that do, and so are never used).

Presets:
- ``none``: no augmentation;
- ``d4``: the 8 exact flips and 90° rotations, no resampling;
- ``d4crop`` (default): ``d4``, then half the time a crop of 50–100 % of the patch side mirrored
  back out to full size (:class:`CropReflect`; segmentation only), no resampling either;
- ``geo``: ``d4`` plus a small rotation (linear for the image, nearest for the mask, reflected
  border), per-band gain/offset jitter and per-band noise, both scaled by each band's spread.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeAlias

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import InputError  # noqa: E402

MASK_FILL = 255  # = IGNORE_INDEX: pixels a transform invents in the mask are ignored
CROP_P, CROP_MIN = 0.5, 0.5  # d4crop: how often a patch is cropped, and the smallest crop side


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` (float) back in ``dtype``: rounded and clipped to its range for integers."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def band_spread(image: np.ndarray) -> np.ndarray:
    """Per-band standard deviation of an (H, W, C) image, as float32 (C,)."""
    return image.reshape(-1, image.shape[-1]).std(axis=0, dtype=np.float64).astype(np.float32)


class BandJitter(A.ImageOnlyTransform):
    """Scale and shift each band on its own: ``x * (1 + g) + o * std(x)``, with g drawn from
    U(-scale, scale) and o from U(-shift, shift) per band. Works for any band count and dtype."""

    def __init__(self, scale: float = 0.05, shift: float = 0.05, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.scale, self.shift = scale, shift

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        bands = params["shape"][2] if len(params["shape"]) > 2 else 1
        draw = self.random_generator.uniform
        return {
            "gain": 1 + draw(-self.scale, self.scale, bands).astype(np.float32),
            "offset": draw(-self.shift, self.shift, bands).astype(np.float32),
        }

    def apply(self, img: np.ndarray, gain: np.ndarray, offset: np.ndarray, **params) -> np.ndarray:
        values = img.astype(np.float32) * gain + offset * band_spread(img)
        return cast_like(values, img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "shift")


class BandNoise(A.ImageOnlyTransform):
    """Add Gaussian noise whose standard deviation is ``std`` times each band's own spread.
    Unlike ``GaussNoise`` it neither clips floats to [0, 1] nor refuses 16-bit data."""

    def __init__(self, std: float = 0.03, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.std = std

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        shape = params["shape"] if len(params["shape"]) > 2 else (*params["shape"], 1)
        return {"noise": self.random_generator.standard_normal(shape, dtype=np.float32)}

    def apply(self, img: np.ndarray, noise: np.ndarray, **params) -> np.ndarray:
        noise = noise.reshape(img.shape)
        values = img.astype(np.float32) + noise * (self.std * band_spread(img))
        return cast_like(values, img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("std",)


def reflect_index(size: int, start: int, side: int, before: int) -> np.ndarray:
    """Where each of ``size`` output positions reads from: the span ``start … start + side - 1``
    placed ``before`` positions in and mirrored beyond its ends, the edge pixel repeated (numpy's
    ``symmetric`` padding). Pure indexing, so values are moved, never resampled."""
    j = np.mod(np.arange(size) - before, 2 * side)
    return start + np.where(j < side, j, 2 * side - 1 - j)


def crop_reflect_maps(
    rng: np.random.Generator, height: int, width: int, min_fraction: float = CROP_MIN
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column maps of one crop-and-reflect: a square of ``min_fraction``–1 of the
    shorter side at a random place, put back at a random place and mirrored out to the full
    size. ``array[..., rows[:, None], cols[None, :]]`` applies it to (…, H, W)."""
    short = min(height, width)
    side = int(rng.integers(max(1, round(short * min_fraction)), short + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    down, right = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return reflect_index(height, top, side, down), reflect_index(width, left, side, right)


class CropReflect(A.DualTransform):
    """Crop a random square of ``min_fraction``–1 of the patch side and mirror it back out to
    the patch's size, image and mask alike (see :func:`crop_reflect_maps`). Nothing is
    resampled, so textures keep their scale (a zoom would change it), yet a crop inside an
    object larger than a patch fills the whole window, as its interior does at prediction.
    Patches without a mask (classification) are left whole: a crop could cut away what the
    patch was labelled for."""

    def __init__(self, min_fraction: float = CROP_MIN, p: float = CROP_P) -> None:
        super().__init__(p=p)
        self.min_fraction = min_fraction

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        height, width = params["shape"][:2]
        if "mask" not in data:
            return {"rows": np.arange(height), "cols": np.arange(width)}
        rows, cols = crop_reflect_maps(self.random_generator, height, width, self.min_fraction)
        return {"rows": rows, "cols": cols}

    def apply(self, img: np.ndarray, rows: np.ndarray, cols: np.ndarray, **params) -> np.ndarray:
        return np.ascontiguousarray(img[rows[:, None], cols[None, :]])

    apply_to_mask = apply  # the same lookup: the mask moves exactly as the image

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_fraction",)


def _d4crop() -> A.Compose:
    """d4, then half the time a crop of 50–100 % of the patch side mirrored back out."""
    return A.Compose([A.D4(p=1.0), CropReflect()])


def _d4() -> A.Compose:
    """The 8 exact flips and 90° rotations."""
    return A.Compose([A.D4(p=1.0)])


def _geo() -> A.Compose:
    """d4, a ±15° rotation half the time (reflected border, nearest-neighbour mask), per-band
    gain/offset jitter and per-band noise."""
    rotate = A.Affine(
        rotate=(-15, 15),
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_REFLECT_101,
        fill_mask=MASK_FILL,
        p=0.5,
    )
    return A.Compose([A.D4(p=1.0), rotate, BandJitter(p=0.5), BandNoise(p=0.5)])


# The presets of --aug: name → pipeline builder (None: no augmentation). Adding one here is all
# it takes; training settings are checked against these names before anything is read.
PRESETS: dict[str, Callable[[], A.Compose | None]] = {
    "none": lambda: None,
    "d4": _d4,
    "d4crop": _d4crop,
    "geo": _geo,
}
# The presets that move pixels without resampling them, so raw patches can get them per batch
# (``--batch-augment``): name → (d4 on the device, d4crop's crop on the host as the batch is read).
BATCH_PRESETS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "d4": (True, False),
    "d4crop": (True, True),
}


def build_pipeline(preset: str) -> A.Compose | None:
    """The albumentations pipeline of a preset (None for ``none``)."""
    if preset not in PRESETS:
        raise InputError(f"unknown augmentation {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]()


class Augment:
    """Apply an albumentations transform to a (C, H, W) patch and its optional (H, W) mask.

    ``seed`` makes one call reproducible on its own, whatever ran before and in whichever
    DataLoader worker: the random draws are made from a generator seeded for that call.
    """

    def __init__(self, pipeline: A.BasicTransform | A.BaseCompose) -> None:
        self.pipeline = pipeline

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if seed is not None:
            self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        data = {"image": np.ascontiguousarray(np.moveaxis(image, 0, -1))}  # (H, W, C)
        if mask is not None:
            data["mask"] = mask
        out = self.pipeline(**data)
        result = out["image"]
        result = result[..., None] if result.ndim == 2 else result
        return np.ascontiguousarray(np.moveaxis(result, -1, 0)), out.get("mask")

    def __repr__(self) -> str:
        return f"Augment({self.pipeline!r})"


AugmentSpec: TypeAlias = "str | A.BasicTransform | A.BaseCompose | Callable | None"


def build_augment(spec: AugmentSpec) -> Callable | None:
    """An augmentation callable from a preset name, an albumentations transform or pipeline,
    or any callable ``(image (C, H, W), mask (H, W) | None, seed) -> (image, mask)``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        pipeline = build_pipeline(spec)
        return Augment(pipeline) if pipeline is not None else None
    if isinstance(spec, A.BasicTransform | A.BaseCompose):
        return Augment(spec)
    if callable(spec):
        return spec
    raise InputError(
        f"augmentation must be a preset ({', '.join(PRESETS)}), an albumentations transform or "
        f"a callable, not {type(spec).__name__}"
    )
