"""Predict a scene to a class-map GeoTIFF on its exact grid (``scratchsat predict``).

Segmentation: windows of ``patch_size`` slide over the scene with ``overlap``; edge windows
shift inward so every pixel is covered. Each window's class probabilities are weighted by a
smooth bump (:func:`windows.blend_weight`) and summed on the device into a band of rows as high
as one window; rows no later window can touch are divided by their summed weight, turned into
class codes and handed to a writer. Memory is therefore one band of rows, whatever the
scene's height. A reader thread fetches the next band of rows while the model runs, and a
writer thread compresses and writes finished rows, so reading, inference and writing overlap.

Classification: one output cell per window; cells are ``stride`` pixels wide and each window is
centred on its cell, so the cell grid is the scene's grid scaled by the stride.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from ..bundle import BundleMeta, load_bundle
from ..device import autocast, autocast_dtype, check_memory, forward_bytes
from ..errors import BandError, BandOrderWarning, DriftWarning
from ..geo.raster import (
    Grid,
    data_bands,
    open_raster,
    read_valid,
    reads_mask_band,
)
from ..geo.sources import Source, as_source
from ..geo.windows import blend_stride, blend_weight, cover_offsets, window_stride
from ..models.inputs import d4, d4_inverse, standardise
from .options import DEFAULTS, PredictOptions
from .writers import ClassMapSink, Outputs

Progress = Callable[..., None]


@dataclass
class Member:
    """One network of a prediction, with its own normalisation (its tiles' statistics)."""

    model: torch.nn.Module
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)


class Predictor:
    """Loaded models with their band contract: normalise on the device and return class
    probabilities per window. Several models (an ensemble: ``extra`` members, checked to share
    bands and classes) and test-time augmentation over the D4 group (``tta``) average their
    softmax probabilities."""

    def __init__(
        self,
        model: torch.nn.Module,
        meta: BundleMeta | dict,
        device: torch.device,
        amp: bool | None = None,
        *,
        tta: bool = False,
        extra: Sequence[tuple[torch.nn.Module, BundleMeta | dict]] = (),
    ) -> None:
        self.meta = record = BundleMeta.from_dict(meta)
        self.device, self.tta = device, tta
        self.task = record.task
        self.classes = list(record.classes)
        self.amp_dtype = autocast_dtype(device, amp)
        self.channels_last = device.type == "cuda"
        self.members = [self.member(model, record)]
        for other_model, other_meta in extra:
            self.members.append(self.member(other_model, BundleMeta.from_dict(other_meta)))
        self.model = self.members[0].model
        first = self.members[0]
        self.shared = all(  # one normalisation serves every member
            torch.equal(m.mean, first.mean) and torch.equal(m.std, first.std) for m in self.members
        )

    def member(self, model: torch.nn.Module, meta: BundleMeta) -> Member:
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        mean = torch.tensor([b["mean"] for b in meta.bands], device=self.device)
        std = torch.tensor([max(b["std"], 1e-6) for b in meta.bands], device=self.device)
        return Member(model, mean, std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> torch.Tensor:
        return self.members[0].mean

    @property
    def std(self) -> torch.Tensor:
        return self.members[0].std

    def normalise(self, raw: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """(C, H, W) raw values → float32 ``(x - mean) / std`` on the device, 0 where invalid;
        (M, C, H, W), one per member, for an ensemble whose members normalise differently."""
        x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).to(self.device)
        invalid = ~torch.from_numpy(valid).to(self.device)
        if self.shared:
            return standardise(x, self.mean, self.std, invalid)
        return torch.stack([standardise(x, m.mean, m.std, invalid) for m in self.members])

    @torch.no_grad()
    def probabilities(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, C, P, P) normalised (or (N, M, C, P, P), see :meth:`normalise`) → (N, K, P, P)
        or (N, K) float32 softmax probabilities, averaged over members and symmetries."""
        total = None
        symmetries = range(8) if self.tta else range(1)
        for m, member in enumerate(self.members):
            x = windows if self.shared else windows[:, m]
            for k in symmetries:
                p = self.forward(member.model, d4(x, k) if k else x)
                if k and p.dim() == 4:  # segmentation: back to the window's orientation
                    p = d4_inverse(p, k)
                total = p if total is None else total + p
        assert total is not None
        return total / (len(self.members) * len(symmetries))

    def forward(self, model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            windows = windows.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            logits = model(windows)
        return torch.softmax(logits.float(), dim=1)


def load_predictor(
    bundle: str | os.PathLike, options: PredictOptions, device: torch.device
) -> Predictor:
    """The predictor of ``bundle`` with the ensemble and TTA ``options`` ask for; ensemble
    members must share the band contract (names, order, dtype), the task and the classes."""
    model, meta, path = load_model(bundle, device)
    extra = []
    for other in options.ensemble:
        other_model, other_meta, other_path = load_model(other, device)
        check_same_contract(path, meta, other_path, other_meta)
        extra.append((other_model, other_meta))
    size = options.patch_size or meta.patch_size
    check_memory(
        forward_bytes(model, len(meta.bands), size, options.batch_size, device),
        device,
        f"predicting with {path} in batches of {options.batch_size} windows of {size} px",
        "pass a smaller --batch-size or --patch-size",
    )
    return Predictor(model, meta, device, options.amp, tta=options.tta, extra=extra)


def load_model(
    path: str | os.PathLike, device: torch.device
) -> tuple[torch.nn.Module, BundleMeta, Path]:
    """A run's bundle, or an ONNX file written by ``scratchsat export`` (run by onnxruntime):
    (model, its band contract, the file it came from)."""
    if str(path).lower().endswith(".onnx"):
        from .onnx import load_onnx

        model, meta = load_onnx(path)
        return model, meta, Path(path)
    loaded = load_bundle(path, device)
    return loaded.model, loaded.meta, loaded.path


def check_same_contract(path: Path, meta: BundleMeta, other_path: Path, other: BundleMeta) -> None:
    """Two bundles that may be averaged: same task, bands (names, order, dtype) and classes."""
    pairs = {
        "task": (meta.task, other.task),
        "bands": (meta.band_list, other.band_list),
        "dtype": (meta.dtype, other.dtype),
        "classes": (
            [(c["code"], c["name"]) for c in meta.classes],
            [(c["code"], c["name"]) for c in other.classes],
        ),
    }
    for what, (a, b) in pairs.items():
        if a != b:
            raise BandError(
                f"--ensemble {other_path.parent} cannot be averaged with {path.parent}: its "
                f"{what} differ ({b} vs {a}); ensemble runs trained on the same bands and classes"
            )


def scene_indexes(path: Source, src, meta: BundleMeta | dict, warn: bool = True) -> list[int]:
    """The scene's bands (1-based indexes) in the model's order: :func:`match_bands` on the
    descriptions of its data bands (alpha bands are masks)."""
    usable = data_bands(src)
    described = [src.descriptions[i - 1] for i in usable]
    return match_bands(path, described, usable, src.count, meta, warn)


def match_bands(
    path: object,
    described: Sequence[str | None],
    usable: Sequence[int],
    count: int,
    meta: BundleMeta | dict,
    warn: bool = True,
) -> list[int]:
    """The bands ``usable`` (1-based indexes of a scene's ``count`` bands; their
    ``described`` names, None where a band has none) in the model's order.

    Where every usable band has a name and the model's bands have names, bands are matched by
    name, whatever their order and count (a trained name missing or described twice is a
    BandError that shows both orders). Otherwise the bands are taken in order when the counts
    agree, with a :class:`BandOrderWarning`; a scene whose described bands are the model's
    generic names in another order is refused, as order and names then disagree.
    """
    meta = BundleMeta.from_dict(meta)
    trained = meta.band_list
    usable = list(usable)
    generic = meta.band_names == "numbers" or (  # bundles before the key: by the names
        meta.band_names is None and trained == [f"B{i}" for i in range(1, len(trained) + 1)]
    )
    if all(described) and not generic:
        return _match_names(path, trained, [str(d) for d in described], usable)
    if all(described) and set(described) == set(trained) and list(described) != trained:
        raise BandError(
            f"{path} describes its bands as {', '.join(map(str, described))}, but the model "
            f"was trained on bands without names, taken in file order ({', '.join(trained)}); "
            "write the scene with its bands in the training scene's order and without "
            "descriptions, or retrain on described bands"
        )
    if len(usable) == len(trained):
        if warn:
            why = (
                "the scene's bands have no descriptions"
                if not all(described)
                else ("the model's bands have no names (its training scene had no descriptions)")
            )
            warnings.warn(
                f"{path}: {why}, so its {len(usable)} bands were taken in file order as "
                f"{_shown(trained)}; make sure the order is the training scene's",
                BandOrderWarning,
                stacklevel=3,
            )
        return usable
    alpha = f" (and {count - len(usable)} alpha)" if len(usable) < count else ""
    raise BandError(
        f"{path} has {len(usable)} bands{alpha} but the model was trained on {len(trained)} "
        f"({_shown(trained)}); pass a {len(trained)}-band scene with the same bands in the "
        "same order, or describe the scene's bands with the trained names"
    )


def _match_names(
    path: object, trained: Sequence[str], described: Sequence[str], usable: Sequence[int]
) -> list[int]:
    missing = [n for n in trained if n not in described]
    twice = sorted({n for n in trained if described.count(n) > 1})
    if missing or twice:
        problem = (
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
            if missing
            else f"{', '.join(twice)} {'is' if len(twice) == 1 else 'are'} described twice"
        )
        raise BandError(
            f"{path}: the model's band {problem}. The scene's bands, in file order: "
            f"{', '.join(described)}; the model's: {', '.join(trained)}. Pass a scene that has "
            "each trained band once (by its description), or fix the band descriptions"
        )
    return [usable[described.index(n)] for n in trained]


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}"


class Drift:
    """Running per-band means of the valid pixels, compared with training at the end."""

    def __init__(self, bands: int) -> None:
        self.sums, self.count = np.zeros(bands), 0

    def add(self, raw: np.ndarray, valid: np.ndarray) -> None:
        if valid.any():
            self.sums += raw[:, valid].sum(axis=1, dtype=np.float64)
            self.count += int(valid.sum())

    def check(self, path: Source, meta: BundleMeta) -> None:
        if not self.count:
            return
        means = self.sums / self.count
        off = [
            f"{b['name']} {m:.4g} (trained {b['mean']:.4g} ± {b['std']:.3g})"
            for b, m in zip(meta.bands, means, strict=True)
            if abs(m - b["mean"]) > 3 * max(b["std"], 1e-6)
        ]
        if off:
            warnings.warn(
                f"{path}: band means far from the training data's: {'; '.join(off)}. Check that "
                "the scene is the same product, processing level and scaling as the training "
                "scenes",
                DriftWarning,
                stacklevel=2,
            )


@dataclass
class SceneReader:
    """Reads padded row bands of a scene (out-of-scene pixels invalid), with validity."""

    path: Source
    indexes: list[int]
    nodata: float | None
    uses_mask: bool

    @contextlib.contextmanager
    def open(self) -> Iterator[SceneReader]:
        with open_raster(self.path) as src:
            self.src = src
            yield self

    def read(self, row: int, height: int, col: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(C, height, width) raw values and (height, width) validity; padding is invalid."""
        src = self.src
        r0, r1 = max(row, 0), min(row + height, src.height)
        c0, c1 = max(col, 0), min(col + width, src.width)
        data = np.zeros((len(self.indexes), height, width), dtype=src.dtypes[0])
        valid = np.zeros((height, width), dtype=bool)
        if r1 > r0 and c1 > c0:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            part, part_valid = read_valid(src, self.indexes, window, self.nodata, self.uses_mask)
            data[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
            valid[r0 - row : r1 - row, c0 - col : c1 - col] = part_valid
        return data, valid


class Blender:
    """Weighted sum of window probabilities over a band of rows on the device."""

    def __init__(self, classes: int, size: int, width: int, device: torch.device) -> None:
        self.acc = torch.zeros(classes, size, width, device=device)  # (K, P, W)
        self.weights = torch.zeros(size, width, device=device)  # (P, W)
        self.weight = torch.from_numpy(blend_weight(size)).to(device)  # (P, P)
        self.size, self.top = size, 0

    def add(self, probs: torch.Tensor, row: int, cols: Sequence[int]) -> None:
        """Add (N, K, P, P) window probabilities whose top-left corners are (col, row)."""
        r, p = row - self.top, self.size
        for window, col in zip(probs, cols, strict=True):
            self.acc[:, r : r + p, col : col + p] += window * self.weight
            self.weights[r : r + p, col : col + p] += self.weight

    def finish(self, row: int) -> torch.Tensor:
        """Blended probabilities (K, row - top, W) of the rows above ``row``; they are final."""
        n = row - self.top
        done = self.acc[:, :n] / self.weights[:n].clamp_min(1e-12)
        self.acc = torch.cat([self.acc[:, n:], torch.zeros_like(self.acc[:, :n])], dim=1)
        self.weights = torch.cat([self.weights[n:], torch.zeros_like(self.weights[:n])])
        self.top = row
        return done


def batched(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Job:
    """One scene being predicted: the model, where pixels come from and go, and how."""

    predictor: Predictor
    reader: SceneReader
    sink: ClassMapSink
    options: PredictOptions
    size: int  # window side
    drift: Drift
    tick: Callable[[int], None]  # tick(pixels finished)

    @property
    def stride(self) -> int:
        if self.predictor.task == "segmentation":
            return blend_stride(self.size, self.options.overlap)
        return window_stride(self.size, self.options.overlap)

    def infer(
        self, strip: torch.Tensor, offsets: Sequence[int]
    ) -> Iterator[tuple[Sequence[int], torch.Tensor]]:
        """Probabilities of the windows at column ``offsets`` of a (C, P, W) strip, a batch
        at a time: (offsets of the batch, (n, K, P, P) or (n, K))."""
        for group in batched(offsets, self.options.batch_size):
            windows = torch.stack([strip[..., c : c + self.size] for c in group])
            yield group, self.predictor.probabilities(windows)


def predict_segmentation(job: Job) -> None:
    """Slide, blend and hand finished rows to the sink."""
    height, width, size = job.reader.src.height, job.reader.src.width, job.size
    rows = cover_offsets(height, size, job.stride).tolist()
    cols = cover_offsets(width, size, job.stride).tolist()
    blender = Blender(job.predictor.num_classes, size, max(width, size), job.predictor.device)

    def fetch(r: int):
        raw, valid = job.reader.read(rows[r], size, 0, max(width, size))
        end = rows[r + 1] if r + 1 < len(rows) else height
        job.drift.add(raw[:, : end - rows[r], :width], valid[: end - rows[r], :width])
        return raw, valid

    with ThreadPoolExecutor(1, thread_name_prefix="read") as pool:
        pending = pool.submit(fetch, 0)
        for r, row in enumerate(rows):
            raw, valid = pending.result()
            if r + 1 < len(rows):
                pending = pool.submit(fetch, r + 1)  # read ahead while the model runs
            strip = job.predictor.normalise(raw, valid)  # (C, P, W)
            for group, probs in job.infer(strip, cols):
                blender.add(probs, row, group)
            end = rows[r + 1] if r + 1 < len(rows) else height
            finished = blender.finish(end)[:, :, :width]  # (K, end - row, W)
            job.sink.add(finished, valid[: end - row, :width])
            job.tick((end - row) * width)


def predict_classification(job: Job) -> None:
    """One cell per window; cells of ``stride`` pixels, each window centred on its cell."""
    height, width, size, cell = job.reader.src.height, job.reader.src.width, job.size, job.stride
    n_rows, n_cols = math.ceil(height / cell), math.ceil(width / cell)
    margin = (size - cell) // 2  # window = cell grown by this on the top/left side
    starts = [j * cell for j in range(n_cols)]  # window offsets in the padded strip
    for i in range(n_rows):
        raw, valid = job.reader.read(i * cell - margin, size, -margin, n_cols * cell + size - cell)
        inner = (slice(margin, margin + cell), slice(margin, margin + width))
        job.drift.add(raw[:, inner[0], inner[1]], valid[inner])
        strip = job.predictor.normalise(raw, valid)
        probs = torch.cat([p for _, p in job.infer(strip, starts)])  # (n_cols, K)
        cell_valid = [valid[:, c : c + size].mean() >= job.options.min_valid for c in starts]
        job.sink.add(probs.T[:, None, :], np.array(cell_valid)[None, :])  # (K, 1, n_cols)
        job.tick(min(cell, height - i * cell) * width)


def predict_scene(
    predictor: Predictor,
    scene: str | os.PathLike,
    outputs: Outputs,
    options: PredictOptions = DEFAULTS,
    overwrite: bool = False,
    progress: Progress | None = None,
    staged: bool = True,
) -> Path:
    """Predict one scene with a loaded :class:`Predictor` into ``outputs``: written under
    temporary names and put in place when complete and checked. With ``staged`` False,
    ``outputs`` are already temporaries that the caller puts in place (worker processes)."""
    scene = as_source(scene)
    size = options.patch_size or predictor.meta.patch_size
    with open_raster(scene) as src:
        indexes = scene_indexes(scene, src, predictor.meta)
        if src.dtypes[0] != predictor.meta.dtype:
            warnings.warn(
                f"{scene} is {src.dtypes[0]} but the model was trained on "
                f"{predictor.meta.dtype} data",
                DriftWarning,
                stacklevel=2,
            )
        reader = SceneReader(scene, indexes, src.nodata, reads_mask_band(src, indexes))
        grid = Grid(src.crs, src.transform, src.width, src.height)
    drift = Drift(len(indexes))
    total, done, begin = grid.width * grid.height, 0, time.perf_counter()

    def tick(pixels: int) -> None:
        nonlocal done
        done += pixels
        if progress is not None:
            mpx = done / 1e6 / max(time.perf_counter() - begin, 1e-9)
            progress(done, total, mpx=mpx)

    classification = predictor.task == "classification"
    cell = window_stride(size, options.overlap) if classification else 1
    final = outputs.classes
    with contextlib.ExitStack() as stack:
        if staged:
            outputs = stack.enter_context(outputs.staged(predictor.classes, total, overwrite))
        with reader.open(), outputs.open(predictor.classes, grid, cell, options) as sink:
            run = predict_classification if classification else predict_segmentation
            run(Job(predictor, reader, sink, options, size, drift, tick))
    drift.check(scene, predictor.meta)
    return final
