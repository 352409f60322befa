"""Per-band statistics over valid pixels, mergeable across strips and worker processes.

The tiler feeds each patch's valid pixels on a regular lattice (:func:`stats_step`): at most
64 × 64 of them, so large patches cost the statistics no more than small ones.

For 8- and 16-bit integer data everything comes from exact per-band histograms. Otherwise mean
and standard deviation are merged with Chan's parallel formula (no catastrophic cancellation)
and percentiles come from a seeded sample of at most ``SAMPLE_PER_PATCH`` values per band and
patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_PER_PATCH = 4096
STATS_SIDE = 64  # a patch feeds at most STATS_SIDE × STATS_SIDE pixels to the statistics


def stats_step(patch_size: int) -> int:
    """Step of the regular lattice of a patch's pixels that feed the band statistics: every
    pixel of patches up to STATS_SIDE, every 2nd row and column up to twice that, and so on."""
    return -(-patch_size // STATS_SIDE)


def histogram_offset(dtype: np.dtype) -> int | None:
    """Offset that maps ``dtype`` onto 0.. for an exact histogram, None where too wide."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        return -int(np.iinfo(dtype).min)
    return None


@dataclass
class BandStats:
    """Running statistics of C bands."""

    count: np.ndarray  # (C,) float64
    mean: np.ndarray  # (C,)
    m2: np.ndarray  # (C,) sum of squared deviations
    hist: np.ndarray | None  # (C, 2**bits) int64, for 8/16-bit integers
    offset: int = 0  # added to values before they index ``hist``
    samples: list[np.ndarray] = field(default_factory=list)  # [(C, k)] otherwise

    @classmethod
    def empty(cls, bands: int, dtype) -> BandStats:
        offset = histogram_offset(dtype)
        bins = 2 ** (8 * np.dtype(dtype).itemsize)
        hist = np.zeros((bands, bins), dtype=np.int64) if offset is not None else None
        zeros = np.zeros(bands)
        return cls(zeros.copy(), zeros.copy(), zeros.copy(), hist, offset or 0)

    def add(self, values: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Add the valid values of C bands: (C, n), or (C, ...) such as a strided (C, h, w)
        view of a patch."""
        if self.hist is not None:
            # Integer data: the histogram is exact; mean and spread come from it in summary().
            for band, row in zip(values, self.hist, strict=True):
                shifted = band.astype(np.intp).ravel()  # one pass, also for strided views
                if self.offset:
                    shifted += self.offset
                counts = np.bincount(shifted)  # only as long as the largest value: cheap
                row[: len(counts)] += counts
            return
        values = values.reshape(len(values), -1)
        n = values.shape[1]
        if n == 0:
            return
        as_float = values.astype(np.float64)
        mean = as_float.mean(axis=1)
        m2 = ((as_float - mean[:, None]) ** 2).sum(axis=1)
        self._merge(np.full(len(mean), float(n)), mean, m2)
        pick = (
            values
            if n <= SAMPLE_PER_PATCH
            else values[
                :,
                np.sort(
                    (rng or np.random.default_rng(0)).choice(n, SAMPLE_PER_PATCH, replace=False)
                ),
            ]
        )
        self.samples.append(pick.astype(np.float64))

    def _merge(self, count, mean, m2) -> None:
        total = self.count + count
        delta = mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean = np.where(total > 0, self.mean + delta * count / total, 0.0)
            self.m2 = self.m2 + m2 + np.where(total > 0, delta**2 * self.count * count / total, 0.0)
        self.count = total

    def update(self, other: BandStats) -> None:
        """Merge another BandStats of the same bands into this one."""
        if self.hist is not None and other.hist is not None:
            self.hist += other.hist
            return
        self._merge(other.count, other.mean, other.m2)
        self.samples.extend(other.samples)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, mean, std) per band."""
        if self.hist is None:
            return self.count, self.mean, np.sqrt(self.m2 / np.maximum(self.count, 1))
        values = np.arange(self.hist.shape[1], dtype=np.float64) - self.offset
        count = self.hist.sum(axis=1).astype(np.float64)
        safe = np.maximum(count, 1)
        mean = (self.hist @ values) / safe
        var = (self.hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / safe
        return count, mean, np.sqrt(var)

    def percentile(self, q: float) -> np.ndarray:
        """Per-band ``q``-th percentile, as numpy's default (linear) method gives it."""
        if self.hist is not None:
            return np.array([_hist_percentile(h, q) for h in self.hist]) - self.offset
        values = np.concatenate(self.samples, axis=1)
        return np.percentile(values, q, axis=1)

    def summary(self) -> dict[str, list[float]]:
        count, mean, std = self.moments()
        p2, p98 = self.percentile(2), self.percentile(98)
        return {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "p2": p2.tolist(),
            "p98": p98.tolist(),
            "count": count.astype(int).tolist(),
        }


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    """numpy's linear-interpolation percentile from a histogram of integer values."""
    n = int(hist.sum())
    if n == 0:
        return float("nan")
    rank = q / 100 * (n - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    cumulative = np.cumsum(hist)
    v_lo = int(np.searchsorted(cumulative, lo, side="right"))
    v_hi = int(np.searchsorted(cumulative, hi, side="right"))
    return v_lo + (v_hi - v_lo) * (rank - lo)
