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


class OutputLockedError(ScratchsatError, BlockingIOError):
    """Another running process is writing the same output."""


class OutputWriteError(ScratchsatError, OSError):
    """An output could not be written completely (full disk, read-only folder, I/O error)."""


class WorkerError(ScratchsatError, ChildProcessError):
    """A worker process died without finishing its share (killed by the system, say)."""


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by ``timeout``, Slurm, Kubernetes, ``docker stop``), handled like Ctrl-C:
    temporaries are removed on the way out and the CLI exits 143."""

    signal_number = 15


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training. Not a ScratchsatError: an interrupt is not a mistake
    in the input; the CLI exits 130 (143 for SIGTERM). ``saved`` is True when a resumable
    checkpoint of exactly ``step`` finished steps of ``epoch`` was written on the way out;
    ``resumable`` whether any checkpoint is on disk to continue from."""

    def __init__(
        self,
        folder: Path,
        epoch: int,
        step: int,
        *,
        saved: bool = True,
        resumable: bool = True,
        signal_number: int = 2,
    ) -> None:
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.folder, self.epoch, self.step = folder, epoch, step
        self.saved, self.resumable, self.signal_number = saved, resumable, signal_number


class ScratchsatWarning(UserWarning):
    """Something the user should know, that does not stop the command; the CLI prints it as
    a ``Warning:`` line. Every warning of scratchsat is one of these."""


class SplitWarning(ScratchsatWarning):
    """``tile`` left a split asked for without patches (too few split blocks)."""


class InitWarning(ScratchsatWarning):
    """Part of a model given with --init-from starts from random weights."""


class PrecisionWarning(ScratchsatWarning):
    """Autocast asked for where it makes the run slower, not faster."""


class DriftWarning(ScratchsatWarning):
    """A scene's dtype or band statistics differ from the training data's."""


class BandOrderWarning(ScratchsatWarning):
    """A scene's bands were taken in file order because they, or the model's, have no names."""


class ShortfallWarning(ScratchsatWarning):
    """A command delivered less than it was asked for (fewer windows to label), and why."""
