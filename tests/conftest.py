"""Fixtures: small GeoTIFFs written with rasterio, with known CRS, transform, nodata and labels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ORIGIN = (500_000.0, 5_800_000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs="EPSG:32633",
    res=10.0,
    origin=ORIGIN,
    nodata=None,
    driver="GTiff",
    descriptions=None,
    **extra,
) -> Path:
    """Write (C, H, W) or (H, W) ``data`` to ``path``."""
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1], res, res),
        nodata=nodata,
        **extra,
    ) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def write_with_alpha(path: Path, data: np.ndarray, valid: np.ndarray, **extra) -> Path:
    """3-band ``data`` plus an alpha band (0 where not ``valid``), as ``gdalwarp -dstalpha``
    writes; GDAL reads an 8/16-bit alpha band as the other bands' mask."""
    alpha = np.where(valid, np.iinfo(data.dtype).max, 0).astype(data.dtype)
    return write_raster(
        path, np.concatenate([data, alpha[None]]), photometric="RGB", alpha="YES", **extra
    )


def gdalinfo(path: Path, sidecars: bool = True) -> dict:
    """``gdalinfo -json`` of ``path``: an independent check of what we wrote (without its
    ``.aux.xml`` when ``sidecars`` is false: the file as a tool gets it when it travels alone)."""
    if shutil.which("gdalinfo") is None:
        pytest.skip("GDAL's command-line tools are not installed (apt-get install gdal-bin)")
    pam = [] if sidecars else ["--config", "GDAL_PAM_ENABLED", "NO"]
    out = subprocess.run(
        ["gdalinfo", "-json", "-mm", *pam, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def run_pyqgis(script: str, *args) -> str:
    """Run ``script`` with a real QGIS (Debian's python3-qgis, offscreen) and return what it
    printed; skip where PyQGIS is not installed."""
    qgis_python = "/usr/bin/python3"
    probe = (
        subprocess.run([qgis_python, "-c", "import qgis.core"], capture_output=True, text=True)
        if os.path.exists(qgis_python)
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("PyQGIS is not installed (apt-get install python3-qgis)")
    out = subprocess.run(
        [qgis_python, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    return out.stdout + out.stderr


@pytest.fixture
def tiny_scene(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 2-band 40×40 uint16 scene (nodata 0) and a label raster with codes 3 and 7.

    Patches of 10 px give a 4×4 window grid a person can count:
    - window (row 0, col 0) is all nodata in the scene → skipped as nodata;
    - window (row 3, col 3) is all label nodata (0) → skipped as unlabeled;
    - label code 3 on the left half, 7 on the right half;
    - one pixel at (row 15, col 15) is nodata in band 2 only → ignore (255) in its mask.
    """
    image = np.zeros((2, 40, 40), dtype=np.uint16)
    image[0] = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) % 97 + 1
    image[1] = 1000 + np.arange(40, dtype=np.uint16)[None, :].repeat(40, 0)
    image[:, :10, :10] = 0
    image[1, 15, 15] = 0
    labels = np.full((40, 40), 3, dtype=np.uint8)
    labels[:, 20:] = 7
    labels[30:, 30:] = 0
    scene = write_raster(tmp_path / "scene.tif", image, nodata=0, descriptions=["red", "nir"])
    label_path = write_raster(tmp_path / "labels.tif", labels, nodata=0)
    return scene, label_path, image, labels


def make_tiles(
    folder: Path,
    *,
    size: int = 320,
    count: int = 6,
    patch_size: int = 32,
    task: str = "segmentation",
    seed: int = 0,
) -> Path:
    """Tile a synthetic scene (4 classes, nodata edge) into ``folder`` with 64 px split blocks."""
    from scratchsat import TileOptions, tile, write_scene

    scene = write_scene(
        folder / "scene.tif", folder / "labels.tif", width=size, height=size, count=count, seed=seed
    )
    options = TileOptions(patch_size=patch_size, block_size=64, task=task, seed=seed)
    return tile([scene.path], scene.labels_path, folder / "tiles", options=options)


@pytest.fixture(scope="session")
def seg_tiles(tmp_path_factory) -> Path:
    """Segmentation tiles of a 320×320 6-band synthetic scene, 32 px patches."""
    return make_tiles(tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="session")
def cls_tiles(tmp_path_factory) -> Path:
    """Classification tiles (majority class per 16 px patch) of a synthetic scene."""
    return make_tiles(tmp_path_factory.mktemp("cls"), patch_size=16, task="classification")


@pytest.fixture(scope="session")
def trained(seg_tiles, tmp_path_factory) -> tuple[Path, dict]:
    """A small U-Net trained for 8 epochs on ``seg_tiles`` (good enough to judge: val accuracy
    above 0.85), trained once per test session: (run folder, report)."""
    from scratchsat.training.loop import TrainConfig, train

    run = tmp_path_factory.mktemp("trained") / "run"
    report = train(seg_tiles, run, TrainConfig(epochs=8, batch_size=8, width=8, lr=3e-3))
    return run, report


@pytest.fixture(scope="session")
def small_run(seg_tiles, tmp_path_factory) -> Path:
    """A tiny U-Net trained for one epoch on ``seg_tiles``: a real bundle for tests that need
    one but do not judge its quality (trained once per test session)."""
    from scratchsat.training.loop import TrainConfig, train

    run = tmp_path_factory.mktemp("small") / "run"
    train(seg_tiles, run, TrainConfig.of(epochs=1, batch_size=8, width=8))
    return run


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs folder, to fill up; skipped where mounting is not allowed (needs root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root and mount rights)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


class FileServer:
    """Files of a folder over HTTP on 127.0.0.1, answering range requests as object stores do
    (tests/http_files.py), in a child process: fiona holds Python's GIL while GDAL waits for
    the network, so a server thread in the test's own process would never answer it.
    ``sent`` is the bytes sent so far; ``ranges = False`` makes it ignore Range headers."""

    def __init__(self, root: Path) -> None:
        import multiprocessing

        import http_files

        context = multiprocessing.get_context("spawn")
        self._sent, self._ranges = context.Value("q", 0), context.Value("b", 1)
        port = context.Value("i", 0)
        ready = context.Event()
        self.process = context.Process(
            target=http_files.serve,
            args=(str(root), port, self._sent, self._ranges, ready),
            daemon=True,
        )
        self.process.start()
        if not ready.wait(30):
            raise RuntimeError("the test's HTTP server did not start")
        self.url = f"http://127.0.0.1:{port.value}"

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    @property
    def ranges(self) -> bool:
        return bool(self._ranges.value)

    @ranges.setter
    def ranges(self, value: bool) -> None:
        self._ranges.value = int(value)

    def close(self) -> None:
        self.process.kill()
        self.process.join(10)


@pytest.fixture
def file_server(tmp_path):
    """A :class:`FileServer` of ``tmp_path / "served"``, stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    yield root, server
    server.close()


def peak_memory_mb(setup: str, call: str, inputs, **env: str) -> list[float]:
    """Run ``call`` (Python using ``path``, the input as a string) on each of ``inputs`` in
    one fresh process after ``setup`` (imports); return the process's peak resident memory
    in MB after each. GDAL's block cache is held at 4 MB, so what grows is ours."""
    import subprocess
    import sys
    import textwrap

    script = "\n".join(
        [
            "import resource, sys",
            setup,
            "for path in sys.argv[1:]:",
            textwrap.indent(call, "    "),
            "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, inputs)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GDAL_CACHEMAX": "4", **env},
    )
    return [float(v) for v in out.stdout.split()]


def torchrun(*args: str, timeout: float = 600) -> tuple[int, str]:
    """``scratchsat ARGS`` in two CPU processes under torchrun: exit status, stdout + stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "scratchsat", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr
