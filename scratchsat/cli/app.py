"""The ``scratchsat`` Typer app, its global options and the console-script entry point; each
command group registers its commands on :data:`app` from its own module."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from .._version import __version__
from .config import with_config
from .console import handle_errors, state, warnings_to_stderr

F = TypeVar("F", bound=Callable)

app = typer.Typer(
    name="scratchsat",
    help="Train CNNs from scratch on multi-band satellite imagery; predict to GeoTIFF.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also the libraries' deprecation warnings, where each warning was raised, and "
        "an error's traceback.",
    ),
]
QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet)
VERBOSE = inspect.Parameter(
    "verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Verbose
)


def command(function: F) -> F:
    """Register ``function`` as a command of :data:`app`, with what every command has:
    ``Error:`` lines instead of tracebacks and exit codes for signals (``handle_errors``),
    ``--config``/``--print-config`` (``with_config``), ``--quiet``/``-q`` and
    ``--verbose``/``-v`` (as after ``scratchsat`` itself) and warnings as ``Warning:`` lines
    (``warnings_to_stderr``)."""
    configured = with_config(function)
    signature = inspect.signature(configured)

    @functools.wraps(configured)
    def quietable(*args, quiet: bool = False, verbose: bool = False, **kwargs):
        state["quiet"] = state["quiet"] or quiet
        state["verbose"] = state["verbose"] or verbose
        with warnings_to_stderr():
            return configured(*args, **kwargs)

    quietable.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), QUIET, VERBOSE]
    )
    app.command()(handle_errors(quietable))
    return function


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scratchsat {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train CNNs from scratch on multi-band satellite imagery; predict to GeoTIFF."""
    state["quiet"], state["verbose"] = quiet, verbose


def main() -> None:
    """Console-script entry point."""
    from ..geo.processes import state as workers

    try:
        app(prog_name="scratchsat")
    except SystemExit as done:
        if workers["killed_workers"]:  # see processes.stop: do not wait for a dead pool
            from ..geo.processes import release_semaphores

            release_semaphores()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
