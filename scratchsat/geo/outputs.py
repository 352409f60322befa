"""Outputs that are complete or absent.

Every file or folder a command writes goes through :func:`atomic_output`: it is written under
a temporary sibling name and renamed into place only once it is complete and checked. While a
command writes an output it holds an exclusive lock on it (:func:`output_lock`), so a second
command writing the same output is refused instead of silently replacing the first one's work.
Write failures (a full disk, a read-only folder) become an :class:`OutputWriteError` that names
the folder and how much room was needed; temporaries are removed on every way out, and those
left by an earlier process that was killed are removed by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import OutputExistsError, OutputLockedError, OutputWriteError, ScratchsatError

UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it)
os.umask(UMASK)


class IncompleteWrite(OSError):
    """A check of a finished temporary found it incomplete (see ``atomic_output``'s check)."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)
LOW_SPACE = 4 << 20  # bytes free under which a failed write is taken for a full disk
_held: dict[Path, int] = {}  # outputs this process holds a lock on → nesting depth


def check_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an existing output (a dangling symlink counts) unless ``overwrite``."""
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists already; pass --overwrite to replace it")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on output ``path`` (a ``.NAME.lock`` file beside it, with the
    holder's PID) until the block ends; refuse with :class:`OutputLockedError` while another
    process holds it. The lock is the kernel's (``flock``): it dies with its process, so a lock
    file left by a killed process is stale by construction and taken over. Re-entrant within
    one process."""
    path = Path(os.path.abspath(path))
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    lock = lock_path(path)
    with writing(path.parent, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, path)
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _acquire(lock: Path, path: Path) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"{path} is being written by another scratchsat process (PID {holder}); wait "
                "for it to finish, stop it, or choose another output"
            ) from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def temporary_name(path: Path, kind: str = "part") -> Path:
    """A hidden sibling of ``path`` that names this process: ``.NAME.PID-RANDOM.part``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by processes that no longer run (killed while
    writing); those of live processes are theirs."""
    name = re.escape(path.name)
    pattern = re.compile(rf"^\.{name}\.(?:(\d+)-)?[0-9a-f]{{8}}\.(?:part|old)(?:\.cog)?$")
    with contextlib.suppress(OSError):
        for sibling in path.parent.iterdir():
            match = pattern.match(sibling.name)
            if match and not (match.group(1) and _alive(int(match.group(1)))):
                remove_path(sibling)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    lock: bool = True,
    check: Callable[[Path], None] | None = None,
    size_hint: int | None = None,
) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into, renamed to ``path`` on success.

    Works for files and folders. ``check(tmp)`` runs on the finished temporary before the
    rename (a written raster is re-opened and its blocks checked, say). On any exception the
    temporary is removed, so an interrupted or failed command never leaves an output that
    looks finished; an existing ``path`` is only replaced once the new one is complete. With
    ``lock``, the output is locked against other processes while it is written. OS errors of
    the writing (full disk, read-only folder) become an :class:`OutputWriteError`;
    ``size_hint`` (bytes) is how much room the output needs, for that message.
    """
    path = Path(path)
    check_output(path, overwrite)
    with output_lock(path) if lock else contextlib.nullcontext():
        check_output(path, overwrite)  # finished by another process while we waited
        with writing(path.parent, path):
            path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = temporary_name(path)
        try:
            with writing(path.parent, path, size_hint, tmp):
                yield tmp
                if check is not None:
                    check(tmp)
                _put_in_place(tmp, path)
        except BaseException:
            remove_path(tmp)
            raise


def _put_in_place(tmp: Path, path: Path) -> None:
    if tmp.is_file():
        os.chmod(tmp, 0o666 & ~UMASK)  # some writers (safetensors) create files owner-only
        os.replace(tmp, path)  # atomic: there is never a moment without the file
    elif os.path.lexists(path) and not path.is_symlink():  # a folder: old one aside, then swap
        old = temporary_name(path, "old")
        path.rename(old)
        tmp.rename(path)
        remove_path(old)
    else:
        if path.is_symlink():  # replace the link itself, never what it points to
            path.unlink()
        tmp.rename(path)


@contextlib.contextmanager
def writing(
    folder: Path, path: Path, size_hint: int | None = None, tmp: Path | None = None
) -> Iterator[None]:
    """Turn OS errors raised while writing ``path`` (errors of ours pass through) into an
    :class:`OutputWriteError` that says why and how to fix it."""
    try:
        yield
    except ScratchsatError:
        raise
    except Exception as exc:
        failure = as_os_error(exc)
        if failure is None:
            raise
        raise write_error(folder, path, failure, size_hint, tmp) from None


def as_os_error(exc: BaseException) -> OSError | None:
    """``exc`` as the OSError it stands for when it is a failed write: an OSError itself, or an
    error GDAL reported through fiona or rasterio while writing (a GeoPackage whose sqlite
    ``database or disk is full``, a Shapefile's ``Failure writing .shx header``, ``GDAL Error:
    Cannot write feature``), which carries no errno; None for anything else (a bug keeps its
    traceback)."""
    if isinstance(exc, OSError):
        return exc
    gdal_errors: list[type] = []
    for module in ("fiona._err", "rasterio._err"):  # only libraries already imported can raise
        if module in sys.modules:
            gdal_errors.append(sys.modules[module].CPLE_BaseError)
    if "fiona.errors" in sys.modules:
        gdal_errors.append(sys.modules["fiona.errors"].DriverError)
    gdal_said = isinstance(exc, RuntimeError) and str(exc).startswith("GDAL Error")
    if gdal_said or (gdal_errors and isinstance(exc, tuple(gdal_errors))):
        text = str(exc.args[0] if exc.args else exc)
        if text.startswith("b'") or text.startswith('b"'):
            text = text[2:-1]
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return OSError(None, first[:200] + ("…" if len(first) > 200 else ""))
    return None


@contextlib.contextmanager
def scratch_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden working folder beside output ``path`` (``.NAME.PID-RANDOM.part``), for
    outputs made in steps or by drivers that want their own file names; removed on every way
    out. Its creation and everything written in the block go through :func:`writing`, so a
    full disk, a read-only folder or a GDAL driver's failure is an :class:`OutputWriteError`.
    Whatever is to be kept is put in place from it with :func:`atomic_output`."""
    path = Path(path)
    folder = temporary_name(path)
    try:
        with writing(path.parent, path, None, folder):
            if path.parent.is_dir():
                remove_stale_temporaries(path)
            folder.mkdir(parents=True)
            yield folder
    finally:
        remove_path(folder)


def write_error(
    folder: Path, path: Path, exc: OSError, size_hint: int | None, tmp: Path | None
) -> OutputWriteError:
    """The message for a failed write of ``path``: no space (with the room needed), not
    allowed, or the error as the system gave it."""
    where = _existing(folder)
    free = _free(where)
    if exc.errno in NO_SPACE or (exc.errno is None and free is not None and free < LOW_SPACE):
        written = _size(tmp) if tmp is not None else 0
        needed = max(size_hint or 0, written)
        if size_hint:
            about = f"needed about {_mb(needed)}"
        elif needed >= 100_000:
            about = f"needed more than {_mb(needed)}"
        else:
            about = "needed more"
        return OutputWriteError(
            f"no space left on {where} to write {path.name} ({about}, {_mb(free or 0)} free); "
            "free some space or write to another folder"
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and not where.is_dir():
        return OutputWriteError(
            f"cannot write {path}: {where} is a file, not a folder; choose an output in a folder"
        )
    if exc.errno in NOT_ALLOWED:
        return OutputWriteError(
            f"cannot write {path}: {where} is read-only or not writable for this user "
            f"({exc.strerror or exc}); choose an output in a folder you can write to"
        )
    reason = (exc.strerror if exc.errno is None and exc.strerror else str(exc)).strip()
    reason = reason or type(exc).__name__
    return OutputWriteError(
        f"writing {path} failed ({reason}); check the disk and the folder, then run again"
    )


def _existing(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def write_atomically(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then put it in place; for
    files rewritten as work goes on inside a folder the command already holds (weights,
    checkpoints, metrics, pictures), so no lock of their own."""
    with atomic_output(path, overwrite=True, lock=False) as tmp:
        write(tmp)


def write_json(
    path: str | os.PathLike, data: dict, *, overwrite: bool = True, lock: bool = False
) -> None:
    """JSON written atomically; ``lock`` for a user-facing output (``--json``), not needed for
    files inside a folder the command already holds (dataset.json, report.json)."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with atomic_output(path, overwrite, lock=lock) as tmp:
        tmp.write_text(text)


def write_text(path: str | os.PathLike, text: str, overwrite: bool) -> None:
    """A user-facing text output (a sidecar, a report): locked, refused if it exists."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text)


def remove_path(path: Path) -> None:
    """Remove a file, a folder tree or a link (the link itself, never what it points to)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()
