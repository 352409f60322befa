"""How to predict: :class:`PredictOptions` (declared in ``settings``), shared by the engine,
the writers and the pool."""

from __future__ import annotations

from ..settings import PredictOptions
from ..tiles.options import MAX_PATCH

MAX_WINDOW = MAX_PATCH  # px: a window side beyond this is a typo, not a choice


DEFAULTS = PredictOptions()  # a frozen value: safe as a default argument
