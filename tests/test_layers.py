"""The package's rooms depend one way, in the order data flows, with no import cycles.

Layers, lowest first; a module may import its own room and lower layers only:
errors, settings, ranks, runfolder (no torch) → geo (raster I/O, outputs, labels; no torch) →
tiles (stack, tile, the tiles-folder format; no torch) → device, metrics, models → bundle →
training, prediction → evaluation, xarray → extras (demo, info, pictures, synthetic scenes) →
bench → cli (the app, its commands, config files and tables).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "scratchsat"
LAYERS = {
    "_version": 0,
    "errors": 0,
    "settings": 0,
    "ranks": 0,
    "runfolder": 0,
    "htmlpage": 0,
    "geo": 1,
    "tiles": 2,
    "device": 3,
    "metrics": 3,
    "models": 3,
    "bundle": 4,
    "training": 5,
    "prediction": 5,
    "evaluation": 6,
    "xarray": 6,
    "extras": 7,
    "bench": 8,
    "cli": 9,
    "__main__": 9,
    "": 9,  # "": the package root, which re-exports the API
}
NO_TORCH = ("errors", "_version", "settings", "ranks", "runfolder", "geo", "tiles")
ONLY_IN = {
    "albumentations": "training.augment",
    "typer": "cli",
    "xarray": "xarray",
    "rioxarray": "xarray",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(scratchsat modules, outside top-level packages) that ``path`` imports, anywhere in it
    (imports inside functions count too; those under ``if TYPE_CHECKING:`` do not)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    ours, theirs = set(), set()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports name types for mypy; nothing runs them
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scratchsat."):
                    ours.add(resolve(alias.name.removeprefix("scratchsat.")))
                else:
                    theirs.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").startswith("scratchsat"):
                    base = node.module.removeprefix("scratchsat").lstrip(".")
                else:
                    theirs.add((node.module or "").split(".")[0])
                    continue
            else:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                ours.add(resolve(candidate) if is_module(candidate) else resolve(base))
    return ours, theirs


def is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def resolve(name: str) -> str:
    return name


def room(name: str) -> str:
    return name.split(".")[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up the layers, or sideways into another room."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            a, b = LAYERS[room(source)], LAYERS[room(target)]
            if b > a or (b == a and a not in (0, 9) and room(source) != room(target)):
                found.append(f"{source or 'scratchsat'} (layer {a}) imports {target} (layer {b})")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        ours, _ = imports(path)
        name = module_name(path)
        found[name] = {t for t in ours if t != name and not name.startswith(t + ".")}
    return found


def test_every_module_belongs_to_a_layer(graph):
    assert [m for m in graph if room(m) not in LAYERS] == []


def test_imports_point_down_the_layers(graph):
    assert violations(graph) == []


def test_there_are_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_checks_catch_what_they_are_for():
    assert violations({"geo.raster": {"training.loop"}}) == [
        "geo.raster (layer 1) imports training.loop (layer 5)"
    ]
    assert violations({"training.loop": {"prediction.engine"}})  # sideways, same layer
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


def test_raster_and_tiles_layers_do_not_import_torch():
    for path in PACKAGE.rglob("*.py"):
        if room(module_name(path)) in NO_TORCH:
            _, theirs = imports(path)
            assert not theirs & {"torch", "torchvision"}, path


def test_heavy_libraries_are_imported_in_one_place_each():
    for path in PACKAGE.rglob("*.py"):
        _, theirs = imports(path)
        for library, owner in ONLY_IN.items():
            if library in theirs:
                name = module_name(path)
                assert name == owner or name.startswith(owner + "."), f"{path} imports {library}"


def test_every_import_of_ours_names_a_module_or_package(graph):
    """A relative import that points at nothing (``from .bench`` inside ``cli/``) fails only
    when that line runs; here it fails at once."""
    missing = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if target and not is_module(target)
    )
    assert missing == []


def _tiles_file_names(path: Path) -> list[str]:
    """String constants in ``path`` that name a tiles folder's files: ``dataset.json`` or an
    array's ``.npy`` (whole strings, or the tail of an f-string)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text == "dataset.json" or text.endswith(".npy"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {text!r}")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "load"
            and getattr(node.func.value, "id", None) in ("np", "numpy")
        ):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} np.load")
    return found


def test_only_tiles_opens_a_tiles_folders_files():
    """Outside ``tiles/``, a tiles folder is read through its accessors (``read_dataset_json``,
    ``read_array``, ``is_tiles_folder``, ``folder_files``): no module names its files."""
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if room(module_name(path)) != "tiles"
        for hit in _tiles_file_names(path)
    ]
    assert found == []


def test_the_tiles_check_sees_a_module_that_opens_an_array(tmp_path):
    """The check above, on a module that reads ``splits.npy`` itself, finds it."""
    offender = PACKAGE / "_offender_for_test.py"
    try:
        offender.write_text('import numpy as np\nnp.load(folder / "splits.npy")\n')
        assert len(_tiles_file_names(offender)) == 2
    finally:
        offender.unlink()


def test_the_command_line_starts_without_torch():
    """``scratchsat --help`` and every option are built from torch-free settings records."""
    import subprocess
    import sys

    code = (
        "import sys, scratchsat.cli\n"
        "print(sorted(m for m in ('torch', 'albumentations') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_every_warning_is_a_scratchsat_warning_from_errors():
    """Warnings live in ``errors`` beside the errors, each a ``ScratchsatWarning``; a
    ``warnings.warn`` without one of them as its category is found here."""
    from scratchsat import errors

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_class = isinstance(node, ast.ClassDef) and node.name.endswith("Warning")
            if is_class and path.name != "errors.py":
                found.append(f"{path.name}: class {node.name}")
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn"):
                continue
            category = node.args[1] if len(node.args) > 1 else None
            category = next((k.value for k in node.keywords if k.arg == "category"), category)
            name = getattr(category, "id", None)
            if not (name and issubclass(getattr(errors, name, type), errors.ScratchsatWarning)):
                found.append(f"{path.name}:{node.lineno} warns {name}")
    assert found == []


def test_the_optimizer_step_is_written_once():
    """``training.optim.optimizer_step`` is the one backward pass and update: the epochs,
    the time budget's timing and ``bench`` call it (``bench``'s tutorial-loop baseline, which
    is meant to differ, aside)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        allowed = {
            n
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.name in ("optimizer_step", "classic_loop")
            for n in ast.walk(f)
        }
        found += [
            f"{path.relative_to(PACKAGE)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "backward"
            and node not in allowed
        ]
    assert found == []


def test_functions_and_cli_modules_stay_short():
    """No function of the package over 80 lines, no command function over 60, no ``cli``
    module over 400: a longer one is split by concern before it lands."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        in_cli = room(module_name(path)) == "cli"
        if in_cli and len(text.splitlines()) > 400:
            long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if size > (60 if in_cli else 80):
                    long.append(f"{path.relative_to(PACKAGE)}: {node.name} {size} lines")
    assert long == []
