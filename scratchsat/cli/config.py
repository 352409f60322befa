"""Config files: ``--config FILE.toml`` gives a command's options (and arguments) from a file,
``--print-config`` prints the resolved ones in the same format; :func:`with_config` gives
every command both.

TOML, because Python reads it itself (``tomllib``, 3.11+; the small ``tomli`` before) and
it has no ``class_path``/``init_args`` indirection: keys are the option names (``label-field``
or ``label_field``), values are what you would type. Options on the command line win.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

F = TypeVar("F", bound=Callable)


@dataclass
class Resolved:
    """What :func:`with_config` resolved for this command, in ``ctx.meta[META]``: its settings
    as a config file, and which of them came from ``--config``."""

    toml: str
    from_file: list[str]


META = "scratchsat.config"


def with_config(command: F) -> F:
    """Give ``command`` ``--config FILE`` (TOML: its options and arguments by name, the command
    line winning) and ``--print-config`` (print the resolved settings in that format and
    stop). Required arguments become optional on the command line, as the file may give them;
    one missing from both is an error. A command that takes a ``typer.Context`` finds the
    resolved settings in ``ctx.meta[META]`` (:class:`Resolved`)."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    required, kept, contexts = [], [], []
    for p in signature.parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if annotation is typer.Context:
            contexts.append(p.name)  # typer fills one Context: the wrapper's, passed on
            continue
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
            p = p.replace(default=None)
        kept.append(p.replace(annotation=annotation))
    annotations = {p.name: p.annotation for p in kept}

    @functools.wraps(command)
    def wrapper(
        *,
        config_context: typer.Context,
        config: Path | None = None,
        print_config: bool = False,
        **kwargs,
    ):
        ctx = config_context
        kwargs.update(dict.fromkeys(contexts, ctx))
        from_file = [] if config is None else _from_file(ctx, config, annotations, kwargs)
        missing = [n for n in required if kwargs.get(n) in (None, [], ())]
        if missing:
            names = ", ".join(n.upper() for n in missing)
            raise InputError(
                f"missing {names}: give it on the command line or as "
                f"{missing[0].replace('_', '-')} = … in a --config file"
            )
        shown = {k: v for k, v in kwargs.items() if k not in contexts}
        ctx.meta[META] = Resolved(to_toml(shown, str(ctx.info_name)), from_file)
        if print_config:
            sys.stdout.write(ctx.meta[META].toml)
            return None
        return command(**kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *ADDED])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


ADDED = [
    inspect.Parameter("config_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config", help="TOML file of this command's options; the command line wins."
            ),
        ],
    ),
    inspect.Parameter(
        "print_config",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--print-config", help="Print the resolved settings as TOML; stop.")
        ],
    ),
]


def _from_file(ctx: typer.Context, config: Path, annotations: dict, kwargs: dict) -> list[str]:
    """Put the file's settings into ``kwargs`` where the command line gave none; their keys."""
    params = {p.name: p for p in ctx.command.params if p.name in annotations}  # the command's own
    taken = []
    for key, raw in read_config(config).items():
        if key not in params:
            known = ", ".join(n.replace("_", "-") for n in params)
            raise InputError(
                f"--config {config}: {key.replace('_', '-')} is not a setting of "
                f"`scratchsat {ctx.info_name}`; its settings are: {known}"
            )
        source = ctx.get_parameter_source(key)
        if source is not None and source.name != "DEFAULT":
            continue  # given on the command line: it wins
        kwargs[key] = _config_value(ctx, params[key], raw, annotations.get(key), config)
        taken.append(key)
    return taken


def _config_value(ctx, param, raw, hint, config: Path):
    """A config file's value as the option would have it from the command line."""
    wanted = param.multiple or (param.nargs == -1)
    if wanted and not isinstance(raw, list):
        raw = [raw]
    if not wanted and isinstance(raw, list):
        raise InputError(f"--config {config}: {param.name.replace('_', '-')} takes one value")
    try:
        value = param.process_value(ctx, raw)  # the option's own conversion and checks
    except typer.BadParameter as exc:
        raise InputError(
            f"--config {config}: {param.name.replace('_', '-')} = {raw!r}: {exc.message}"
        ) from None
    if _is_path(hint) and value is not None:  # typer hands Path options over as Path
        value = [Path(v) for v in value] if wanted else Path(value)
    elif wanted:
        value = list(value)
    return value


def _is_path(hint) -> bool:
    """Whether an option's annotation is a Path, optional or repeated."""
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint is Path or any(_is_path(arg) for arg in typing.get_args(hint))


def read_config(path: str | os.PathLike) -> dict:
    """The file's table of settings, keys as Python names (``label-field`` → ``label_field``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--config {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(
            f"--config {path} is a folder; pass a TOML file of settings (write one with "
            "--print-config > FILE.toml)"
        ) from None
    except OSError as exc:
        raise InputError(f"--config {path} cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {path} is not valid TOML ({exc})") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise InputError(
            f"--config {path}: [{nested[0]}] is a table; a command's config file holds its "
            'options as top-level keys (epochs = 30, label-field = "fclass")'
        )
    return {key.replace("-", "_"): value for key, value in data.items()}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def to_toml(settings: dict, command: str) -> str:
    """``settings`` (None values left out: TOML has no null) as a config file for ``command``."""
    lines = [f"# scratchsat {command}: settings; options on the command line override them"]
    for key, value in settings.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        lines.append(f"{key.replace('_', '-')} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
