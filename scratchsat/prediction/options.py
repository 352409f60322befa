"""How to predict: :class:`PredictOptions`, shared by the engine, the writers and the pool."""

from __future__ import annotations

from dataclasses import dataclass

from ..tiles.options import MAX_PATCH

MAX_WINDOW = MAX_PATCH  # px: a window side beyond this is a typo, not a choice


@dataclass(frozen=True)
class PredictOptions:
    """How to predict; every field has a default that works."""

    patch_size: int | None = None  # window side; default: the training patch size
    overlap: float = 0.5  # fraction of a window shared with its neighbour (README: measured)
    batch_size: int = 32
    device: str = "auto"
    amp: bool | None = None  # None: bf16 autocast on CUDA
    cog: bool = False  # write Cloud-Optimized GeoTIFFs with overviews
    float_probabilities: bool = False  # float32 probabilities instead of uint8 percent
    min_valid: float = 0.5  # classification: cells whose window is less valid are nodata
    tta: bool = False  # average over the 8 flips and quarter turns of each window
    ensemble: tuple[str, ...] = ()  # more bundles whose probabilities are averaged in


DEFAULTS = PredictOptions()  # a frozen value: safe as a default argument
