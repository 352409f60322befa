"""Options shared by several commands, declared once (as rasterio's ``rio/options.py`` does),
and :func:`with_fields`, which turns the fields of a settings record into a command's options.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ..settings import DEVICE_HELP, from_options, options_of

F = TypeVar("F", bound=Callable)

Device = Annotated[str, typer.Option(help=DEVICE_HELP)]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Deal the work out as tasks of a Dask cluster: a scheduler's address "
        "(tcp://host:8786), or local:N for N worker processes here. Paths must be readable "
        "(and outputs writable) from every worker. Needs the xarray extra.",
    ),
]
Overwrite = Annotated[
    bool, typer.Option(help="Replace existing outputs (without it, they are kept).")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Read and check everything, write nothing; a summary.")
]
LABELS = typer.Option(
    "--labels", "-l", help="Label raster, or vector file (GeoJSON, GeoPackage, Shapefile)."
)
Labels = Annotated[str, LABELS]
OptionalLabels = Annotated[str | None, LABELS]
LabelField = Annotated[
    str | None, typer.Option(help="Attribute of vector labels holding the class (text or integer).")
]
Background = Annotated[
    str | None,
    typer.Option(help="Name a class for pixels no polygon covers (default: they are ignored)."),
]
RunFolderArgument = Annotated[
    Path, typer.Argument(help="Run folder (or its model.json) from `train`.")
]
ClassMap = Annotated[str, typer.Argument(help="Class map written by `scratchsat predict`.")]


def out_option(help: str):  # noqa: A002 - the CLI's word
    """``--out``/``-o``: every command names its main output so; the help says what it is."""
    return typer.Option("--out", "-o", help=help)


STDOUT = Path("-")  # `--json -`: standard output, as rio's commands take it


def json_option(what: str):
    """``--json FILE``: also write ``what`` as JSON to FILE, or ``-`` for standard output."""
    return typer.Option("--json", help=f"Also write {what} as JSON to this file (-: stdout).")


def emit_json(path: Path, result: dict, overwrite: bool) -> Path | None:
    """``--json``'s output: printed to standard output for ``-`` (None returned), else written
    as a file, whose path is returned."""
    if path == STDOUT:
        import json

        typer.echo(json.dumps(result, indent=2))
        return None
    from ..geo.outputs import write_json

    write_json(path, result, overwrite=overwrite, lock=True)
    return path


def given_options(ctx: typer.Context) -> list[str]:
    """The options of this command that were set on the command line (not defaults)."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return [name for name, source in sources.items() if source and source.name != "DEFAULT"]


def with_fields(*records: type) -> Callable[[F], F]:
    """Give ``command`` one option per option field (``settings.setting``) of each record,
    passed in its ``**fields``: a field added to a record is an option of the command at once,
    with the field's default, help, names and command-line type. :func:`fields_of` turns what
    the command receives back into each record's values."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        kept = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.kind != p.VAR_KEYWORD
        ]
        added = []
        for record in records:
            hints = typing.get_type_hints(record)  # once a record: it evaluates every field's
            added += [_parameter(f, hints[f.name]) for f in options_of(record)]
        command.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        return command

    return decorate


def _parameter(f: dataclasses.Field, hint) -> inspect.Parameter:
    """The option of field ``f`` (``hint``: the field's type)."""
    kind = f.metadata["type"] or hint
    # A command-line type of its own starts at None (not given): the field's default then
    default = f.default if f.metadata["type"] is None else None
    option = typer.Option(*f.metadata["flags"], help=f.metadata["help"])
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def fields_of(values: dict, *records: type) -> dict:
    """The values of the ``records``' options among a command's ``values``, as the records'
    fields (parsed where the field says how)."""
    return {k: v for record in records for k, v in from_options(record, values).items()}
