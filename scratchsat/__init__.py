"""scratchsat: train CNNs from scratch on multi-band satellite imagery.

The Python API mirrors the CLI: ``stack``, ``tile`` (with ``TileOptions``), ``train`` (with
``TrainConfig``), ``predict`` (with ``PredictOptions``), ``evaluate``, ``build_model``,
``register_model``, ``load_bundle`` and the synthetic scene generator ``write_scene``. The
torch-based names load on first use, so ``import scratchsat`` stays fast.
"""

from ._version import __version__
from .errors import ScratchsatError
from .extras.synth import write_scene
from .tiles.stack import stack
from .tiles.tiling import TileOptions, tile

_LAZY = {
    "train": ("training.loop", "train"),
    "TrainConfig": ("training.setup", "TrainConfig"),
    "build_model": ("models", "build_model"),
    "ModelConfig": ("models", "ModelConfig"),
    "register_model": ("models", "register_model"),
    "predict": ("prediction", "predict"),
    "PredictOptions": ("prediction", "PredictOptions"),
    "evaluate": ("evaluation", "evaluate"),
    "load_bundle": ("bundle", "load_bundle"),
    "PatchDataset": ("training.data", "PatchDataset"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scratchsat' has no attribute {name!r}")


__all__ = ["ScratchsatError", "TileOptions", "__version__", "stack", "tile", "write_scene", *_LAZY]
