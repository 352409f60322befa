"""Where predictions go: output paths, and class-map and probability GeoTIFFs written in whole
block rows from a writer thread, optionally converted to Cloud-Optimized GeoTIFF."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.transform import Affine
from rasterio.windows import Window

from ..errors import InputError
from ..geo.classmap import (
    CLASS_BAND,
    band_style,
    class_dtype_and_nodata,
    classes_tag,
    colormap,
    sidecar_texts,
    sidecars,
    style_path,
)
from ..geo.outputs import atomic_output, check_output
from ..geo.raster import Grid, check_written, geotiff_profile, to_cog
from ..geo.sources import Source
from .options import PredictOptions
from .stac import stac_path

TIFF_SUFFIXES = (".tif", ".tiff")


def output_path(out: Path, scene: Source, single: bool) -> Path:
    """``out`` itself for one scene and a .tif name, else ``out/<scene name>.tif``."""
    if single and out.suffix.lower() in TIFF_SUFFIXES:
        return out
    if out.suffix.lower() in TIFF_SUFFIXES:
        raise InputError(
            f"--out {out} is a file name but there are several scenes; pass a folder and each "
            "scene gets <scene name>.tif in it"
        )
    return out / f"{scene.stem}.tif"


def outputs_for(
    scenes: Sequence[Source],
    out: Path,
    probabilities: Path | None,
    overwrite: bool,
    uncertainty: Path | None = None,
    stac: bool = False,
) -> list[tuple[Source, Outputs]]:
    """Plan one :class:`Outputs` per scene and refuse clashes and existing files up front."""
    if len({s.stem for s in scenes}) != len(scenes):
        raise InputError(
            "two scenes share a file name; their predictions would overwrite each "
            "other, so predict them into different --out folders"
        )
    plan, single = [], len(scenes) == 1
    for scene in scenes:
        classes = output_path(out, scene, single)
        probs = output_path(probabilities, scene, single) if probabilities else None
        unsure = output_path(uncertainty, scene, single) if uncertainty else None
        outputs = Outputs(classes, probs, unsure, stac_path(classes) if stac else None)
        for path in filter(None, (classes, probs, unsure, *outputs.sidecar_paths())):
            if path.resolve() == scene.resolve():
                raise InputError(f"{path} is the scene itself; choose another output")
            check_output(path, overwrite)
        named = [("the class map", classes), ("--probabilities", probs), ("--uncertainty", unsure)]
        given = [(what, path.resolve()) for what, path in named if path is not None]
        for i, (what, path) in enumerate(given):
            for other, other_path in given[:i]:
                if path == other_path:
                    raise InputError(f"{what} {path} is the same file as {other}")
        if len(set(outputs.sidecar_paths())) < len(outputs.sidecar_paths()):
            raise InputError(
                f"the class map {classes}, --probabilities and --uncertainty would share a "
                "QGIS style (.qml); give them different file names"
            )
        plan.append((scene, outputs))
    return plan


UNCERTAINTY_BANDS = ("margin", "entropy", "top_probability")
PERCENT_NODATA = 255  # uint8 probabilities are whole percent, 0..100


def uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """(K, …) probabilities → (3, …) float32: the margin between the two most probable
    classes (0 = a tie, 1 = sure), the entropy divided by log K (0 = sure, 1 = every class
    equally likely) and the top probability. A one-class model is sure everywhere."""
    p = probs.float()
    k = p.shape[0]
    top = p.topk(min(2, k), dim=0).values
    second = top[1] if k > 1 else torch.zeros_like(top[0])
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(0) / math.log(k) if k > 1 else 0 * top[0]
    return torch.stack([top[0] - second, entropy.clamp(0, 1), top[0]])


class ClassMapSink:
    """Takes blended probabilities row band by row band, writes class codes (and probabilities)
    in whole block rows from one writer thread."""

    def __init__(
        self,
        classes_dst,
        probs_dst,
        codes: np.ndarray,
        nodata: int,
        float_probs: bool,
        unsure_dst=None,
    ) -> None:
        self.classes_dst, self.probs_dst, self.unsure_dst = classes_dst, probs_dst, unsure_dst
        self.codes, self.nodata, self.float_probs = codes, nodata, float_probs
        self.block_rows = classes_dst.block_shapes[0][0]
        self.row, self.pending_rows = 0, 0
        self.buffer: list[tuple] = []  # (codes, probabilities, validity, uncertainty) rows
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.futures: list[Future] = []

    def add(self, probs: torch.Tensor, valid: np.ndarray) -> None:
        """(K, n, W) probabilities on the device and (n, W) validity of the next n rows."""
        ids = probs.argmax(0).to(torch.uint8).cpu().numpy()  # 1 byte a pixel off the device
        codes = self.codes[ids]  # class id → code, in the output dtype
        codes[~valid] = self.nodata
        p = None
        if self.probs_dst is not None:
            scaled = probs if self.float_probs else (probs * 100).round().to(torch.uint8)
            p = scaled.cpu().numpy()
            p[:, ~valid] = np.nan if self.float_probs else PERCENT_NODATA
        u = None
        if self.unsure_dst is not None:
            u = uncertainty(probs).cpu().numpy()
            u[:, ~valid] = np.nan
        self.buffer.append((codes, p, valid, u))
        self.pending_rows += len(codes)
        if self.pending_rows >= self.block_rows:
            self.flush(whole_blocks=True)

    def flush(self, whole_blocks: bool = False) -> None:
        if not self.buffer:
            return
        codes = np.concatenate([b[0] for b in self.buffer])
        probs = None if self.probs_dst is None else np.concatenate([b[1] for b in self.buffer], 1)
        valid = np.concatenate([b[2] for b in self.buffer])
        unsure = None if self.unsure_dst is None else np.concatenate([b[3] for b in self.buffer], 1)
        n = (len(codes) // self.block_rows) * self.block_rows if whole_blocks else len(codes)

        def rows(a, part: slice):
            return None if a is None else a[:, part]

        later, now = slice(n, None), slice(None, n)
        self.buffer = [(codes[later], rows(probs, later), valid[later], rows(unsure, later))]
        self.pending_rows = len(codes) - n
        if n:
            args = (self.row, codes[now], rows(probs, now), valid[now], rows(unsure, now))
            self.futures = [f for f in self.futures if not f.done()]
            while len(self.futures) >= 2:  # bound what waits in memory
                self.futures.pop(0).result()
            self.futures.append(self.pool.submit(self.write, *args))
            self.row += n

    def write(
        self,
        row: int,
        codes: np.ndarray,
        probs: np.ndarray | None,
        valid: np.ndarray,
        unsure: np.ndarray | None,
    ) -> None:
        window = Window(0, row, codes.shape[1], len(codes))
        self.classes_dst.write(codes, 1, window=window)
        if unsure is not None:
            self.unsure_dst.write(unsure, window=window)
        if probs is not None:
            self.probs_dst.write(probs, window=window)

    def close(self) -> None:
        self.flush()
        for future in self.futures:
            future.result()
        self.pool.shutdown()


@dataclass
class Outputs:
    """The class map of one scene, and optionally its probabilities."""

    classes: Path
    probabilities: Path | None = None
    uncertainty: Path | None = None
    stac: Path | None = None  # the STAC item, written once the rasters are in place

    def sidecar_texts(self, classes: Sequence[dict], nodata: int) -> dict[Path, str]:
        """Every sidecar of these outputs and its text: the class map's ``.aux.xml`` and
        ``.qml``, and a one-band style for the probabilities and uncertainty."""
        texts = sidecar_texts(classes, nodata)
        side = {path: texts[key] for key, path in sidecars(self.classes).items()}
        if self.probabilities:
            side[style_path(self.probabilities)] = band_style(1, 0, 1)  # the first class
        if self.uncertainty:
            side[style_path(self.uncertainty)] = band_style(2, 0, 1)  # entropy
        return side

    def sidecar_paths(self) -> list[Path]:
        scores = [style_path(p) for p in (self.probabilities, self.uncertainty) if p]
        return [*sidecars(self.classes).values(), *scores, *([self.stac] if self.stac else [])]

    @contextlib.contextmanager
    def staged(self, classes: Sequence[dict], pixels: int, overwrite: bool) -> Iterator[Outputs]:
        """Lock every file of this output (class map, probabilities, sidecars) and yield
        temporaries for the rasters. On success the rasters are re-opened and checked, the
        sidecars written, and everything renamed into place; on any failure nothing is."""
        _, nodata = class_dtype_and_nodata([c["code"] for c in classes])
        bands = 1 + (len(classes) * 4 if self.probabilities else 0)  # float32 at most
        with contextlib.ExitStack() as stack:
            side = {  # entered first, so renamed after the rasters are checked
                stack.enter_context(atomic_output(path, overwrite)): text
                for path, text in self.sidecar_texts(classes, nodata).items()
            }
            tmp_probs = (
                stack.enter_context(
                    atomic_output(
                        self.probabilities, overwrite, check=check_written, size_hint=pixels * bands
                    )
                )
                if self.probabilities
                else None
            )
            tmp_unsure = (
                stack.enter_context(
                    atomic_output(
                        self.uncertainty, overwrite, check=check_written, size_hint=pixels * 12
                    )
                )
                if self.uncertainty
                else None
            )
            tmp = stack.enter_context(
                atomic_output(self.classes, overwrite, check=check_written, size_hint=pixels * 2)
            )
            yield Outputs(tmp, tmp_probs, tmp_unsure)
            for path, text in side.items():
                path.write_text(text)

    @contextlib.contextmanager
    def open(
        self, classes: Sequence[dict], grid: Grid, cell: int, options: PredictOptions
    ) -> Iterator[ClassMapSink]:
        """Write these (temporary) paths on the scene's grid (scaled by ``cell`` for
        classification); on success finish them (COG)."""
        crs, transform, width, height = grid.crs, grid.transform, grid.width, grid.height
        if cell > 1:
            transform = transform * Affine.scale(cell)
            width, height = math.ceil(width / cell), math.ceil(height / cell)
        dtype, nodata = class_dtype_and_nodata([c["code"] for c in classes])
        tmp, tmp_probs = self.classes, self.probabilities
        profile = {
            **geotiff_profile(
                width=width,
                height=height,
                count=1,
                dtype=dtype,
                crs=crs,
                transform=transform,
                nodata=nodata,
            ),
            "predictor": 1,
        }
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write_colormap(1, {**colormap(classes), nodata: (0, 0, 0, 0)})
            dst.update_tags(CLASSES=classes_tag(classes))
            dst.set_band_description(1, CLASS_BAND)
            probs_dst = (
                open_probabilities(
                    tmp_probs,
                    classes,
                    crs,
                    transform,
                    width,
                    height,
                    options.float_probabilities,
                )
                if tmp_probs
                else None
            )
            unsure_dst = (
                open_uncertainty(self.uncertainty, crs, transform, width, height)
                if self.uncertainty
                else None
            )
            codes = np.array([int(c["code"]) for c in classes], dtype=dtype)
            sink = ClassMapSink(
                dst, probs_dst, codes, nodata, options.float_probabilities, unsure_dst
            )
            try:
                yield sink
            finally:
                sink.close()
                for extra in (probs_dst, unsure_dst):
                    if extra is not None:
                        extra.close()
        if options.cog:
            to_cog(tmp, "nearest")
            for extra in (tmp_probs, self.uncertainty):
                if extra:
                    to_cog(extra, "average")


def open_probabilities(
    path: Path, classes: Sequence[dict], crs, transform, width: int, height: int, floats: bool
):
    """Probabilities as float32 (NaN where invalid) or whole percent in uint8 (255 where
    invalid) with a GDAL scale of 0.01, so GDAL and QGIS read probabilities either way. A
    nodata value rather than a mask: QGIS shows a file's mask as an extra, unnamed band."""
    profile = geotiff_profile(
        width=width,
        height=height,
        count=len(classes),
        dtype="float32" if floats else "uint8",
        crs=crs,
        transform=transform,
        nodata=float("nan") if floats else PERCENT_NODATA,
    )
    # Without this, GDAL calls 3 or 4 uint8 bands RGB(A), and the last class becomes alpha.
    dst = rasterio.open(path, "w", **profile, photometric="MINISBLACK")
    for i, c in enumerate(classes, start=1):
        dst.set_band_description(i, f"probability of {c['name']}")
    if not floats:
        dst.scales = (0.01,) * len(classes)
    dst.update_tags(CLASSES=classes_tag(classes), SCALE="probability" if floats else "percent")
    return dst


def open_uncertainty(path: Path, crs, transform, width: int, height: int):
    profile = geotiff_profile(
        width=width,
        height=height,
        count=len(UNCERTAINTY_BANDS),
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=float("nan"),
    )
    dst = rasterio.open(path, "w", **profile, photometric="MINISBLACK")
    for i, name in enumerate(UNCERTAINTY_BANDS, start=1):
        dst.set_band_description(i, name)
    dst.update_tags(
        UNCERTAINTY="margin: top − second probability; entropy: −Σ p log p / log K; "
        "top_probability: the largest probability"
    )
    return dst
