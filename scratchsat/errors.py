"""The scratchsat error hierarchy.

Every error a user can cause by what they pass in is a :class:`ScratchsatError`; each subclass
is also a fitting builtin, so callers may catch ``ValueError`` or ``OSError`` as they would
elsewhere. Messages say what is wrong, where, what was expected and found, and how to fix it.
The CLI prints them as ``Error: …`` and exits 1; anything else is a bug and keeps its traceback.
"""

from pathlib import Path


class ScratchsatError(Exception):
    """Root of all errors scratchsat raises on purpose."""


class InputError(ScratchsatError, ValueError):
    """An argument or option has a value that cannot work."""


class RasterReadError(ScratchsatError, OSError):
    """A file cannot be opened or read as a raster (missing, corrupt, not a raster)."""


class VectorReadError(ScratchsatError, OSError):
    """A file cannot be opened or read as vector labels."""


class OutputExistsError(ScratchsatError, FileExistsError):
    """An output exists already and ``overwrite`` was not asked for."""


class NoOverlapError(InputError):
    """Two inputs that must cover the same ground do not overlap."""


class BandError(InputError):
    """Bands asked for do not match the bands a file has."""


class LabelError(InputError):
    """Labels are unusable: unknown field, no valid pixel, non-integer codes, too many classes."""


class NoPatchesError(InputError):
    """Tiling found no window worth keeping."""


class DatasetError(ScratchsatError, OSError):
    """A tiles folder is missing, incomplete or inconsistent."""


class BundleError(ScratchsatError, OSError):
    """A model bundle is missing, incomplete or not one of ours."""


class DivergedError(ScratchsatError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; a resumable checkpoint was saved first. Not a ScratchsatError:
    an interrupt is not a mistake in the input, and the CLI exits 130 for it."""

    def __init__(self, folder: Path, epoch: int, step: int) -> None:
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.folder, self.epoch, self.step = folder, epoch, step
