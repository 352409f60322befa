"""Prediction: a bundle and scenes in, class maps (and probabilities) on the scenes' grids out.

``options`` (how to predict) → ``writers`` (outputs on a grid) → ``engine`` (windows, blending,
one scene) → ``pool`` (scenes in worker processes) → ``run`` (``scratchsat predict``)."""

from ..errors import BandOrderWarning, DriftWarning
from .engine import Predictor, predict_scene, scene_indexes
from .options import PredictOptions
from .run import predict
from .writers import Outputs

__all__ = [
    "BandOrderWarning",
    "DriftWarning",
    "Outputs",
    "PredictOptions",
    "Predictor",
    "predict",
    "predict_scene",
    "scene_indexes",
]
