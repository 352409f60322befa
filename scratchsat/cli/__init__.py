"""The ``scratchsat`` command line: parses options and calls the library, nothing more.

``app`` (the Typer app and its entry point) · ``console`` (errors, warnings, progress,
signals) · ``options`` (shared options, options generated from settings records) · ``config``
(``--config``/``--print-config``) · one module per command group: ``data`` (stack, tile),
``train``, ``predict`` (predict, vectorize, suggest, export), ``tools`` (evaluate, demo, info,
bench) · ``views`` (tables of results).

A :class:`ScratchsatError` becomes ``Error: …`` on stderr and exit code 1; any other exception
is a bug and keeps its traceback.
"""

from . import data, predict, tools, train  # noqa: F401 - each registers its commands on app
from .app import app, main
from .train import train as train_command

__all__ = ["app", "main", "train_command"]
