"""Every command line the README shows runs, in the README's order, on a small synthetic scene
named as the README names its files, so the README cannot rot. Training commands are made
short (one epoch of a narrow U-Net, put before the README's own options, which win)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import rasterio.features
import rasterio.shutil

from scratchsat.extras.synth import write_scene

README = Path(__file__).parent.parent / "README.md"
FASTER = {  # put right after the command's name: the README's own options come later and win
    "train": "--epochs 1 --width 8 --batch-size 16",
    "demo": "--epochs 1",
    "bench": "--only tile",
}


def readme_commands() -> list[str]:
    """``scratchsat …`` lines of the README's bash blocks and of its tables' examples."""
    text = README.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        found += [line for line in block.splitlines() if line.startswith("scratchsat ")]
    found += re.findall(r"\| `(scratchsat [^`]+)` \|", text)
    return found


def make_inputs(folder: Path) -> None:
    """B02/B03/B04/B08 as JPEG 2000 band files and land-use polygons with ``fclass``."""
    scene = write_scene(
        folder / "synth.tif", folder / "labels.tif", width=1024, height=1024, count=4, seed=3
    )
    with rasterio.open(scene.path) as src:
        profile = {**src.profile, "count": 1}
        for band, name in enumerate(("B02", "B03", "B04", "B08"), start=1):
            single = folder / f"{name}.tif"
            with rasterio.open(single, "w", **profile) as dst:
                dst.write(src.read(band), 1)
            rasterio.shutil.copy(single, folder / f"{name}.jp2", driver="JP2OpenJPEG")
            single.unlink()
    with rasterio.open(scene.labels_path) as src:
        labels, crs, transform = src.read(1), src.crs, src.transform
    names = dict(scene.classes)
    schema = {"geometry": "Polygon", "properties": {"fclass": "str"}}
    with fiona.open(
        folder / "landuse.gpkg", "w", driver="GPKG", crs=crs.to_wkt(), schema=schema
    ) as dst:
        for geometry, code in rasterio.features.shapes(labels, labels > 0, transform=transform):
            dst.write({"geometry": geometry, "properties": {"fclass": names[int(code)]}})
    (folder / "synth.tif").unlink()
    (folder / "labels.tif").unlink()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    make_inputs(folder)
    return folder


def test_the_readme_shows_the_main_commands():
    shown = {line.split()[1] for line in readme_commands()}
    assert shown >= {
        "stack",
        "tile",
        "train",
        "predict",
        "vectorize",
        "suggest",
        "export",
        "evaluate",
        "info",
        "demo",
        "bench",
    }


def test_every_command_the_readme_shows_runs(workdir):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in readme_commands():
        name = line.split()[1]
        command = line.replace(f"scratchsat {name}", f"scratchsat {name} {FASTER.get(name, '')}", 1)
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command}"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, line
    # what the README says the commands leave behind
    assert (workdir / "runs/scene/train.toml").exists() and (workdir / "train.toml").exists()
    assert json.loads((workdir / "runs/seed1/model.json").read_text())["training"]["seed"] == 1
    with (
        rasterio.open(workdir / "scene_classes.tif") as classes,
        rasterio.open(workdir / "scene.tif") as scene,
    ):
        assert (classes.width, classes.height, classes.transform) == (
            scene.width,
            scene.height,
            scene.transform,
        )
        codes = [
            c["code"]
            for c in json.loads((workdir / "runs/scene/model.json").read_text())["classes"]
        ]
        assert np.isin(np.unique(classes.read(1)), [*codes, classes.nodata]).all()
    for path in (
        "unsure.tif",
        "classes.gpkg",
        "to_label.gpkg",
        "scene.onnx",
        "scores.json",
        "stac_classes.stac.json",
        "my-demo",
        "scratchsat-demo",
    ):
        assert (workdir / path).exists(), path


def docs_commands() -> list[tuple[str, str]]:
    """(file, line) of every ``scratchsat …`` command in docs/*.md: in code blocks (lines
    continued with a backslash joined) and in inline code."""
    found = []
    for path in sorted((README.parent / "docs").glob("*.md")):
        text = path.read_text()
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.removeprefix("$ ").strip()
                if line.startswith("scratchsat "):
                    found.append((path.name, line))
        outside = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(path.name, span) for span in re.findall(r"`(scratchsat [^`]+)`", outside)]
    return found


def test_every_command_in_the_docs_names_real_options():
    """The docs' longer command lines (real scenes, GPUs, clusters) cannot all run here; each
    names a real command and only options that command has."""
    import typer.main

    from scratchsat.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    shown = docs_commands()
    assert len(shown) > 20
    wrong = []
    for where, line in shown:
        words = line.split("#")[0].split()
        if words[1] == "COMMAND" or words[1].startswith("-"):
            continue  # `scratchsat COMMAND --help`, `scratchsat --install-completion`
        command = commands.get(words[1])
        if command is None:
            wrong.append(f"{where}: {line} (no command {words[1]})")
            continue
        names = {n for p in command.params for n in (*p.opts, *p.secondary_opts)}
        wrong += [
            f"{where}: {line} ({word})"
            for word in words[2:]
            if word.startswith("--") and word.split("=")[0] not in names | {"--help"}
        ]
    assert wrong == []
