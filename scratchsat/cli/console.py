"""What the command line shows: ``Error:`` and ``Warning:`` lines, progress bars, messages;
how Ctrl-C and SIGTERM end a command. Tables of results are in :mod:`.views`."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..errors import ScratchsatError, Terminated

stderr = Console(stderr=True, emoji=False)  # ":x:" in a path is text, not an emoji
F = TypeVar("F", bound=Callable)
state = {"quiet": False, "verbose": False}  # --quiet (or a torchrun rank but 0); --verbose


def results(stderr: bool = False) -> Console:
    """The console a command's results (tables, summaries) go to: stdout, or stderr where
    stdout carries JSON. Piped or redirected, it is as wide as a table needs (rich would cut
    to 80 columns); on a terminal, table cells fold rather than cut (:func:`views.table`)."""
    console = Console(soft_wrap=True, stderr=stderr, emoji=False)
    if not console.is_terminal:
        console.width = 10_000  # a table takes the width it needs, no more
    return console


def handle_errors(command: F) -> F:
    """Turn a ScratchsatError into ``Error: …`` and exit 1, without a traceback; Ctrl-C into
    exit 130 and SIGTERM into 143 (temporaries are removed on the way out either way)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with terminate_as_interrupt():
                return command(*args, **kwargs)
        except ScratchsatError as exc:
            message = escape(str(exc))  # brackets in a message are text, not rich markup
            stderr.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
            if state["verbose"]:  # where it was raised, for a bug report
                import traceback

                stderr.print(escape("".join(traceback.format_exc())), highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as stop:
            number = getattr(stop, "signal_number", signal.SIGINT)
            stderr.print(
                f"Interrupted ({signal.Signals(number).name}); no output was left half-written.",
                highlight=False,
            )
            raise typer.Exit(128 + number) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, Slurm, Kubernetes, ``docker stop``) raises :class:`Terminated`,
    so it unwinds like Ctrl-C; only in the main thread, where signal handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(number, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[..., None] | None]:
    """A rich progress bar on stderr, fed by ``callback(done, total, **fields)``; None when quiet.

    Fields (``epoch``, ``loss``, ``rate``) show beside the bar. The bar appears at the first
    callback, so a command refused up front prints only its error.
    """
    if state["quiet"] or not stderr.is_terminal:  # no bars in logs and pipes
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    bar = Progress(*columns, console=stderr, transient=True, refresh_per_second=2)
    task = bar.add_task(description, total=None, status="")

    def callback(done: int, total: int, **fields) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total, status=format_fields(fields))

    try:
        yield callback
    finally:
        if bar.live.is_started:
            bar.stop()


def format_fields(fields: dict) -> str:
    parts = []
    if "epoch" in fields:
        parts.append(f"epoch {fields['epoch']}")
    if "loss" in fields:
        parts.append(f"loss {fields['loss']:.4f}")
    if "rate" in fields:
        parts.append(f"{rate(fields['rate'])} samples/s")
    if "mpx" in fields:
        parts.append(f"{rate(fields['mpx'])} Mpx/s")
    return "  ".join(parts)


def rate(value: float) -> str:
    """A rate to two significant digits at least (0.04, 2.5, 123, 1,234), never 0.0."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}" if value < 10 else f"{value:.1f}"


def say(message: str) -> None:
    if not state["quiet"]:
        stderr.print(message, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Show warnings as ``Warning: …`` lines (not Python's warning format), every time; leave
    out deprecations and future changes announced by the libraries we use (``Use @ matmul``
    from affine inside rasterio): they are for their developers, not for the user. Ours are
    ``ScratchsatWarning``s and always shown. With ``--verbose``, the libraries' deprecations
    too, and each warning with its kind and where it was raised."""
    import warnings

    from ..errors import ScratchsatWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        where = f" ({category.__name__}, {filename}:{lineno})" if state["verbose"] else ""
        text = escape(f"{message}{where}")
        stderr.print(f"[yellow]Warning:[/] {text}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for kind in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            if not state["verbose"]:
                warnings.filterwarnings("ignore", category=kind)
        warnings.simplefilter("always", ScratchsatWarning)  # first: never filtered out
        warnings.showwarning = show
        yield
