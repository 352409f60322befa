"""scratchsat: train CNNs from scratch on multi-band satellite imagery.

The Python API mirrors the CLI: ``stack``, ``tile`` (with ``TileOptions``), ``train`` (with
``TrainConfig``), ``predict`` (with ``PredictOptions``), ``evaluate``, ``build_model``,
``register_model``, ``load_bundle`` and the synthetic scene generator ``write_scene``. The
torch-based names load on first use, so ``import scratchsat`` stays fast.
"""

__version__ = "0.1.0"

from .errors import ScratchsatError  # noqa: E402
from .stack import stack  # noqa: E402
from .synth import write_scene  # noqa: E402
from .tiling import TileOptions, tile  # noqa: E402

_LAZY = {
    "train": ("training", "train"),
    "TrainConfig": ("run", "TrainConfig"),
    "build_model": ("models", "build_model"),
    "ModelConfig": ("models", "ModelConfig"),
    "register_model": ("models", "register_model"),
    "predict": ("prediction", "predict"),
    "PredictOptions": ("prediction", "PredictOptions"),
    "evaluate": ("evaluation", "evaluate"),
    "load_bundle": ("bundle", "load_bundle"),
    "PatchDataset": ("dataset", "PatchDataset"),
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
