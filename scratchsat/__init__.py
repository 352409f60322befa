"""scratchsat: train CNNs from scratch on multi-band satellite imagery.

The Python API mirrors the CLI: ``stack``, ``tile`` (with ``TileOptions``) and the synthetic
scene generator ``write_scene``.
"""

__version__ = "0.1.0"

from .errors import ScratchsatError  # noqa: E402
from .stack import stack  # noqa: E402
from .synth import write_scene  # noqa: E402
from .tiling import TileOptions, tile  # noqa: E402

__all__ = ["ScratchsatError", "TileOptions", "__version__", "stack", "tile", "write_scene"]
