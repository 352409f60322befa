"""xarray in, Dask out: lazy chunk-wise prediction of a DataArray and ``--dask`` runs, on a real
``dask.distributed.LocalCluster`` of two worker processes (started once for this module)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dask
import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from conftest import gdalinfo
from distributed import Client, LocalCluster
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

import scratchsat.xarray as sx
from scratchsat import write_scene
from scratchsat.cli import app
from scratchsat.errors import BandError, InputError, WorkerError
from scratchsat.prediction import PredictOptions, predict

pytestmark = pytest.mark.filterwarnings("ignore:Port .* is already in use")
runner = CliRunner()
FLOAT = PredictOptions(device="cpu", float_probabilities=True)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, each watched by a nanny that restarts it."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as local,
        Client(local) as client,
    ):
        yield local, client


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    """A scene the model has not seen, of odd size, with a nodata edge."""
    folder = tmp_path_factory.mktemp("unseen")
    return write_scene(
        folder / "unseen.tif", folder / "l.tif", width=203, height=171, count=6, seed=7
    ).path


def file_prediction(run: Path, scene: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    predict(run, [scene], folder / "f.tif", probabilities=folder / "fp.tif", options=FLOAT)
    with rasterio.open(folder / "f.tif") as c, rasterio.open(folder / "fp.tif") as p:
        return c.read(1), p.read()


def loads(client: Client) -> dict:
    """Models each worker process has loaded so far."""
    from scratchsat.prediction import blocks

    return client.run(lambda: blocks.LOADS["count"])


@pytest.mark.parametrize("chunks", [(13, 21), (97, 131)], ids=["smaller-than-window", "odd"])
def test_lazy_prediction_equals_predict_on_the_file(tmp_path, trained, cluster, unseen, chunks):
    run, _ = trained
    _, client = cluster
    codes, probs = file_prediction(run, unseen, tmp_path)
    scene = rioxarray.open_rasterio(unseen, chunks={"band": -1, "y": 64, "x": 64})
    before = sum(loads(client).values())
    result = sx.predict_dataset(run, scene, options=FLOAT, chunks=chunks)
    assert isinstance(result["classes"].data, dask.array.Array)  # lazy: nothing ran yet
    assert sum(loads(client).values()) == before
    assert result["classes"].data.chunksize == chunks
    lazy_codes, lazy_probs = dask.compute(result["classes"].data, result["probabilities"].data)
    assert (lazy_codes == codes).mean() >= 0.9999
    assert np.array_equal(np.isnan(lazy_probs), np.isnan(probs))  # nodata where the file's is
    assert np.nanmax(np.abs(lazy_probs - probs)) < 1e-5
    assert (lazy_codes == 255).sum() == (codes == 255).sum() > 0
    # each worker loaded the model at most once for all the chunks it predicted
    blocks = len(result["classes"].data.to_delayed().ravel())
    assert blocks >= 4 and sum(loads(client).values()) - before <= 2
    # the accessor is the same call, and the grid is the scene's
    again = scene.scratchsat.predict(run, options=FLOAT, chunks=chunks)
    assert again.rio.transform() == scene.rio.transform() and again.rio.crs == scene.rio.crs
    assert again.rio.nodata == 255


def test_written_like_predict_writes_a_scene(tmp_path, trained, cluster, unseen):
    run, _ = trained
    options = PredictOptions(device="cpu", cog=True)
    predict(
        run, [unseen], tmp_path / "file.tif", probabilities=tmp_path / "fp.tif", options=options
    )
    scene = rioxarray.open_rasterio(unseen, chunks={"y": 50, "x": 70})
    result = sx.predict_dataset(run, scene, options=options, chunks=(45, 77))
    path = sx.write_prediction(
        result, tmp_path / "lazy.tif", probabilities=tmp_path / "lp.tif", options=options
    )
    assert path == tmp_path / "lazy.tif" and cog_validate(path)[0]
    with rasterio.open(path) as lazy, rasterio.open(tmp_path / "file.tif") as file:
        assert (lazy.read(1) == file.read(1)).mean() >= 0.9999
        assert lazy.profile == file.profile and lazy.colormap(1) == file.colormap(1)
        assert lazy.tags()["CLASSES"] == file.tags()["CLASSES"]
    info, file_info = gdalinfo(path), gdalinfo(tmp_path / "file.tif")
    assert info["bands"][0]["categories"] == file_info["bands"][0]["categories"]
    for sidecar in ("lazy.qml", "lazy.tif.aux.xml", "lp.qml"):
        assert (tmp_path / sidecar).exists()
    with rasterio.open(tmp_path / "lp.tif") as lazy, rasterio.open(tmp_path / "fp.tif") as file:
        assert np.abs(lazy.read().astype(int) - file.read()).max() <= 1  # whole percent
    # rioxarray's own writer takes the class map as it is
    result["classes"].rio.to_raster(tmp_path / "rio.tif")
    with rasterio.open(tmp_path / "rio.tif") as rio, rasterio.open(path) as lazy:
        assert np.array_equal(rio.read(1), lazy.read(1))
        assert rio.transform == lazy.transform and rio.nodata == 255


def scheduler_tasks(client: Client, wait: float = 0) -> int:
    """Tasks the scheduler holds now, after waiting up to ``wait`` s for it to hold none
    (finished keys are released a moment after their results are collected)."""
    deadline = time.monotonic() + wait
    while True:
        held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def test_bands_are_matched_by_name_and_a_mismatch_is_refused_before_any_task(
    trained, cluster, unseen
):
    run, _ = trained
    _, client = cluster
    scene = rioxarray.open_rasterio(unseen, chunks={"y": 64, "x": 64})
    names = list(scene.attrs["long_name"])
    named = scene.assign_coords(band=names)
    reordered = named.isel(band=[5, 4, 3, 2, 1, 0])
    a = sx.predict_dataarray(run, named, options=FLOAT, chunks=(64, 64))
    b = sx.predict_dataarray(run, reordered, options=FLOAT, chunks=(64, 64))
    np.testing.assert_array_equal(a.values, b.values)  # the names put the bands in order
    del a, b
    assert scheduler_tasks(client, wait=20) == 0
    with pytest.raises(BandError, match="the model's band B3 is missing"):
        sx.predict_dataarray(run, named.assign_coords(band=[*names[:2], "X", *names[3:]]))
    with pytest.raises(BandError, match="has 5 bands but the model was trained on 6"):
        sx.predict_dataarray(run, scene.isel(band=slice(0, 5)))  # long_name: 6, so no names
    with pytest.raises(InputError, match=r"has dims \('time', 'band', 'y', 'x'\)"):
        sx.predict_dataarray(run, named.expand_dims(time=2))
    with pytest.raises(InputError, match="has no CRS"):
        sx.predict_dataarray(run, named.drop_vars("spatial_ref"))
    assert scheduler_tasks(client) == 0  # nothing reached the cluster


def many_scenes(folder: Path, count: int, height: int = 640) -> list[Path]:
    return [
        write_scene(
            folder / f"s{i}.tif", folder / f"l{i}.tif", width=256, height=height, count=6, seed=i
        ).path
        for i in range(count)
    ]


def kill_a_busy_worker(client: Client, out: Path, killed: dict) -> None:
    """Once a worker is writing a scene (its temporary exists), SIGKILL that worker."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if busy and any(p.name.endswith(".part") for p in out.glob(".*")):
            worker, keys = next(iter(busy.items()))
            pid = client.run(os.getpid, workers=[worker])[worker]
            killed.update(pid=pid, keys=list(keys))
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def test_a_worker_killed_mid_run_is_retried_and_every_output_is_complete(
    tmp_path, trained, cluster
):
    run, _ = trained
    local, client = cluster
    scenes = many_scenes(tmp_path, 4)
    expected = predict(run, scenes, tmp_path / "here", options=FLOAT)
    out, killed, rows = tmp_path / "dask", {}, []
    killer = threading.Thread(target=kill_a_busy_worker, args=(client, out, killed))
    killer.start()
    paths = predict(
        run, scenes, out, options=FLOAT, dask=local.scheduler_address, summary=rows.extend
    )
    killer.join()
    assert killed, "no worker was busy while the scenes were predicted"
    assert [r.scene for r in rows] == [str(s) for s in scenes] and not any(r.error for r in rows)
    assert all(not r.worker.endswith(f":{killed['pid']}") for r in rows)  # its scene moved on
    for a, b in zip(paths, expected, strict=True):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            np.testing.assert_array_equal(x.read(), y.read())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_a_scene_that_fails_for_good_leaves_nothing_under_its_name(tmp_path, trained):
    """With no failures allowed, the killed worker's scene fails: it is absent, the others are
    written, the command fails naming it."""
    run, _ = trained
    scenes = many_scenes(tmp_path, 3)
    out, killed = tmp_path / "dask", {}
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
        ) as local,
        Client(local) as client,
    ):
        killer = threading.Thread(target=kill_a_busy_worker, args=(client, out, killed))
        killer.start()
        with pytest.raises(WorkerError, match="scenes failed on the Dask cluster") as failure:
            predict(run, scenes, out, options=FLOAT, dask=local.scheduler_address)
        killer.join()
    failed = [s for s in scenes if str(s) in str(failure.value)]
    assert (
        [f"scene-{scenes.index(s)}-" for s in failed]
        == [  # the killed worker's scenes
            key.split("scratchsat-")[1][: len("scene-0-")] for key in sorted(killed["keys"])
        ]
    )
    assert 1 <= len(failed) < len(scenes)
    assert not (out / failed[0].name).exists() and not (out / f"{failed[0].stem}.qml").exists()
    for scene in scenes:
        if scene not in failed:
            with rasterio.open(out / scene.name) as written:
                assert written.read(1).shape == (640, 256)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_predict_and_tile_through_the_cli_with_a_local_cluster(tmp_path, trained, seg_tiles):
    run, _ = trained
    scenes = many_scenes(tmp_path, 2, height=100)
    result = runner.invoke(
        app, ["predict", str(run), *map(str, scenes), "--out", str(tmp_path / "p"),
              "--dask", "local:2", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scenes on the Dask cluster" in result.output and result.output.count("written") == 2
    for scene in scenes:
        assert (tmp_path / "p" / scene.name).exists()
    folder = seg_tiles.parent
    args = ["tile", str(folder / "scene.tif"), "--labels", str(folder / "labels.tif")]
    args += ["--patch-size", "32", "--block-size", "64"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "t"), "--dask", "local:2"])
    assert result.exit_code == 0, result.output
    for name in ("images", "masks", "windows", "splits"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "t" / f"{name}.npy"), np.load(seg_tiles / f"{name}.npy")
        )


MEMORY = """
import logging, resource, sys
import rioxarray
from distributed import Client, LocalCluster
import scratchsat.xarray as sx
from scratchsat.prediction import PredictOptions

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if __name__ == "__main__":
    run, *paths = sys.argv[1:]
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as local, Client(local) as client:
        for path in paths:
            scene = rioxarray.open_rasterio(path, chunks={"y": 512, "x": -1})
            result = sx.predict_dataset(run, scene, options=PredictOptions(device="cpu",
                                                                           batch_size=8))
            sx.write_prediction(result, path + ".pred.tif")
            print(max(client.run(peak).values()), peak())
"""


def test_memory_per_worker_stays_bounded_as_the_scene_grows(tmp_path, trained):
    """A 10× taller scene raises the workers' (and the writer's) peak memory by far less
    than its extra size: a worker holds a chunk and its halo, the writer two bands of rows."""
    run, _ = trained
    paths = []
    for rows in (2048, 20480):
        data = np.random.default_rng(0).integers(1, 3000, (6, rows, 128), dtype=np.uint16)
        profile = {"driver": "GTiff", "width": 128, "height": rows, "count": 6, "dtype": "uint16"}
        profile.update(crs="EPSG:32633", transform=rasterio.transform.from_origin(0, 0, 10, 10))
        profile.update(nodata=0, tiled=True, blockxsize=128, blockysize=128, compress="deflate")
        with rasterio.open(tmp_path / f"s{rows}.tif", "w", **profile) as dst:
            dst.write(data)
        paths.append(str(tmp_path / f"s{rows}.tif"))
    script = tmp_path / "memory.py"
    script.write_text(textwrap.dedent(MEMORY))
    proc = subprocess.run(
        [sys.executable, str(script), str(run), *paths],
        capture_output=True,
        text=True,
        env={**os.environ, "GDAL_CACHEMAX": "4"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (small_worker, small_writer), (large_worker, large_writer) = (
        map(float, line.split()) for line in proc.stdout.split("\n") if line.strip()
    )
    extra = 6 * 4 * 128 * (20480 - 2048) / 2**20  # the large scene's extra pixels as float32
    assert large_worker - small_worker < 0.25 * extra, (small_worker, large_worker)
    assert large_writer - small_writer < 0.25 * extra, (small_writer, large_writer)


def test_chunks_and_inputs_that_are_refused(trained, unseen):
    run, _ = trained
    scene = rioxarray.open_rasterio(unseen)
    with pytest.raises(InputError, match="chunks must be at least 1 pixel"):
        sx.predict_dataarray(run, scene, chunks=0)
    with pytest.raises(InputError, match="is a Dataset, not an xarray DataArray"):
        sx.predict_dataarray(run, xr.Dataset({"b": scene}))
    with pytest.raises(InputError, match=r"--overlap must be a fraction"):
        sx.predict_dataarray(run, scene, options=PredictOptions(overlap=1.5))


def test_a_classification_model_is_sent_to_predict(trained, unseen, monkeypatch):
    """One cell per window is predict's; the chunked path blends segmentation windows."""
    import dataclasses

    from scratchsat.prediction import engine

    run, _ = trained
    model, meta, path = engine.load_model(run, "cpu")
    patch = dataclasses.replace(meta, task="classification")
    monkeypatch.setattr(sx, "load_model", lambda *args: (model, patch, path))
    with pytest.raises(InputError, match="is a classification model; the xarray path predicts"):
        sx.predict_dataarray(run, rioxarray.open_rasterio(unseen))


def test_a_dask_workers_allocator_thresholds_are_put_back(monkeypatch):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which halves torch on
    the CPU (benchmarks/cluster.py); the first model a process loads puts glibc's thresholds
    back there, and leaves a process without the variable alone."""
    from scratchsat import device

    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    device.undo_malloc_trim()
    assert calls == []
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    device.undo_malloc_trim()
    assert calls == [(-1, 256 << 20), (-3, 64 << 20)]  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
