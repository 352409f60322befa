"""Config files: ``--config FILE.toml`` gives a command's options (and arguments) from a file,
``--print-config`` prints the resolved ones in the same format.

TOML, because Python reads it itself (``tomllib``, 3.11+; the small ``tomli`` before) and
it has no ``class_path``/``init_args`` indirection: keys are the option names (``label-field``
or ``label_field``), values are what you would type. Options on the command line win.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
