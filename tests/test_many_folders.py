"""Many scenes, many machines: several tiles folders train one model; tile --shard K/N."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import torchrun
from typer.testing import CliRunner

from scratchsat.bundle import load_bundle
from scratchsat.cli import app
from scratchsat.errors import DatasetError, InputError
from scratchsat.extras.synth import write_scene
from scratchsat.tiles.format import read_tiles, union_tiles
from scratchsat.tiles.options import Shard, TileOptions
from scratchsat.tiles.tiling import tile
from scratchsat.training.data import PatchDataset

runner = CliRunner()
SIZE, OPTIONS = 96, TileOptions(patch_size=16, block_size=32, seed=3)


def scenes_in_a_row(folder, count=4, bands=4):
    """``count`` scenes side by side and one label raster over all of them (codes 1–4)."""
    scenes, labels = [], []
    for i in range(count):
        s = write_scene(
            folder / f"scene{i}.tif",
            folder / f"labels{i}.tif",
            width=SIZE,
            height=SIZE,
            count=bands,
            seed=10 + i,
            origin=(399_960.0 + i * SIZE * 10, 5_800_020.0),
        )
        scenes.append(s.path)
        with rasterio.open(s.labels_path) as src:
            labels.append(src.read(1))
            if i == 0:  # the mosaic starts where the first scene does
                profile, tags = src.profile, src.tags()
    profile.update(width=SIZE * count)
    with rasterio.open(folder / "labels.tif", "w", **profile) as dst:
        dst.write(np.concatenate(labels, axis=1), 1)
        dst.update_tags(**tags)
    return scenes, folder / "labels.tif"


def patches(tiles) -> set[tuple]:
    """Every patch of a tiles folder (or union) as (scene file, split, image and mask bytes)."""
    data = PatchDataset(tiles, split=None, raw=True)
    images = data.store.read("images", data.indices)
    masks = data.store.read("masks", data.indices)
    splits = data.store.splits()
    return {
        (split, image.tobytes(), mask.tobytes())
        for split, image, mask in zip(splits, images, masks, strict=True)
    }


@pytest.fixture(scope="module")
def row(tmp_path_factory):
    folder = tmp_path_factory.mktemp("row")
    scenes, labels = scenes_in_a_row(folder)
    # a: one scene, b: two, so the folders' pixel counts differ (a merge must weigh them)
    both = tile(scenes[:3], labels, folder / "both", options=OPTIONS)
    a = tile(scenes[:1], labels, folder / "a", options=OPTIONS)
    b = tile(scenes[1:3], labels, folder / "b", options=OPTIONS)
    return folder, scenes, labels, both, a, b


def test_two_folders_are_the_one_folder_of_both_scenes(row):
    """Statistics merged from what each folder recorded equal those of one run over both
    scenes; so do classes, splits and every patch (with its class ids)."""
    _, _, _, both, a, b = row
    one, union = read_tiles(both), union_tiles([a, b])
    assert [(c["code"], c["name"], c["colour"]) for c in union.classes] == [
        (c["code"], c["name"], c["colour"]) for c in one.classes
    ]
    for merged, single in zip(union.info["bands"], one.info["bands"], strict=True):
        assert merged["count"] == single["count"]
        assert merged["mean"] == pytest.approx(single["mean"], rel=1e-12)
        assert merged["std"] == pytest.approx(single["std"], rel=1e-9)
    assert union.splits == one.splits and union.info["patches"] == one.info["patches"]
    for c_union, c_one in zip(union.classes, one.classes, strict=True):
        assert c_union["pixels_by_split"] == c_one["pixels_by_split"]
    assert patches(union) == patches(one)
    # A folder of one scene keeps its own ids, so patches prove the id mapping only when the
    # folders' class lists differ: checked in the next test.


def test_classes_are_united_by_code_and_ids_follow(tmp_path):
    """Folder a has codes {1, 2} and b {2, 3}: the union has 1, 2, 3, and b's masks (ids 0, 1
    there) become ids 1, 2."""
    folders = []
    for i, codes in enumerate([(1, 2), (2, 3)]):
        s = write_scene(
            tmp_path / f"s{i}.tif", tmp_path / f"l{i}.tif", width=64, height=64, count=3
        )
        with rasterio.open(s.labels_path, "r+") as dst:
            labels = dst.read(1)
            dst.write(
                np.where(np.arange(64)[None, :] < 32, codes[0], codes[1]).astype(labels.dtype)
                * (labels > 0),
                1,
            )
            dst.update_tags(CLASSES="")
        folders.append(tile([s.path], s.labels_path, tmp_path / f"t{i}", options=OPTIONS))
    union = union_tiles(folders)
    assert [c["code"] for c in union.classes] == [1, 2, 3]
    masks_b = np.load(folders[1] / "masks.npy")
    data = PatchDataset(union, split=None, raw=True)
    start = read_tiles(folders[0]).info["patches"]
    united = data.store.read("masks", np.arange(start, start + len(masks_b)))
    assert np.array_equal(united, np.where(masks_b == 255, 255, masks_b + 1))
    assert set(np.unique(data.store.read("masks", np.arange(start)))) <= {0, 1, 255}


def test_training_on_two_folders_records_both(row, tmp_path):
    from scratchsat.training.loop import TrainConfig, train

    _, _, _, both, a, b = row
    train([a, b], tmp_path / "run", TrainConfig.of(epochs=1, batch_size=8, width=8))
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    one = read_tiles(both)
    assert [b_["mean"] for b_ in meta["bands"]] == pytest.approx(
        [b_["mean"] for b_ in one.info["bands"]], rel=1e-12
    )
    assert [c["code"] for c in meta["classes"]] == [c["code"] for c in one.classes]
    folders = meta["data"]["folders"]
    assert [f["path"] for f in folders] == [str(a.resolve()), str(b.resolve())]
    assert all(f["hash"].startswith("blake2b:") for f in folders)
    assert load_bundle(tmp_path / "run").meta.classes
    # suggest keeps away from the patches of every folder the run trained on
    from rasterio.crs import CRS

    from scratchsat.prediction.suggest import labelled_boxes

    boxes = labelled_boxes(meta["data"], CRS.from_epsg(32633), None)
    assert len(boxes) == read_tiles(a).info["patches"] + read_tiles(b).info["patches"]


def test_mismatched_bands_and_conflicting_classes_are_refused(row, tmp_path):
    folder, scenes, labels, _, a, _ = row
    fewer = tile(
        scenes[3:4],
        labels,
        tmp_path / "fewer",
        options=TileOptions(patch_size=16, block_size=32, bands=("B1", "B2", "B3")),
    )
    result = runner.invoke(app, ["train", str(a), str(fewer), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{fewer} does not match {a}: bands B1, B2, B3 there, B1, B2, B3, B4 here" in (
        " ".join(result.output.split())
    )
    assert not (tmp_path / "run").exists()
    # Vector labels: text classes get codes 1..K in name order, so two files with other names
    # give code 1 two meanings.
    folders = []
    for i, names in enumerate([("farm", "water"), ("forest", "water")]):
        path = tmp_path / f"labels{i}.geojson"
        features = [
            {
                "type": "Feature",
                "properties": {"kind": name},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            (x0, 5_800_020.0),
                            (x0 + 480, 5_800_020.0),
                            (x0 + 480, 5_800_020.0 - 960),
                            (x0, 5_800_020.0 - 960),
                            (x0, 5_800_020.0),
                        ]
                    ],
                },
            }
            for name, x0 in zip(
                names, (399_960.0 + i * 960, 399_960.0 + i * 960 + 480), strict=True
            )
        ]
        path.write_text(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                    "features": features,
                }
            )
        )
        folders.append(
            tile(scenes[i : i + 1], path, tmp_path / f"v{i}", label_field="kind", options=OPTIONS)
        )
    with pytest.raises(DatasetError, match=r"class code 1 is 'farm' in .*v0 but 'forest' in .*v1"):
        union_tiles(folders)


def test_info_of_several_folders_shows_the_union(row):
    _, _, _, both, a, b = row
    result = runner.invoke(app, ["info", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    union, one = (
        json.loads(result.output),
        json.loads(runner.invoke(app, ["info", str(both), "--json"]).output),
    )
    assert union["path"] == f"{a} + {b}"
    for key in ("patches", "splits", "classes"):
        assert union[key] == one[key]
    assert [b_["mean"] for b_ in union["bands"]] == pytest.approx(
        [b_["mean"] for b_ in one["bands"]], rel=1e-12
    )
    assert "patches" in runner.invoke(app, ["info", str(a), str(b)]).output  # the table


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_deal_every_scene_once(n):
    scenes = [f"s/scene{i:02d}.tif" for i in range(7)][::-1]  # any order: they are sorted
    dealt = [Shard(k, n).deal(scenes) for k in range(1, n + 1)]
    assert sorted(s for share in dealt for s in share) == sorted(scenes)
    assert max(map(len, dealt)) - min(map(len, dealt)) <= 1


def test_shard_errors():
    with pytest.raises(InputError, match="--shard takes K/N"):
        Shard.parse("2of4")
    with pytest.raises(InputError, match="K must lie in 1..N"):
        Shard.parse("5/4")
    with pytest.raises(InputError, match="shard 4/4 gets no scene: 3 scene"):
        Shard(4, 4).deal(["a", "b", "c"])


def test_shards_cover_the_scenes_of_one_run(row):
    """`tile --shard K/N` for K = 1..3 of 4 scenes: each scene in exactly one shard, and the
    shards' patches (with their splits) are the single run's."""
    folder, scenes, labels, *_ = row
    single = tile(scenes, labels, folder / "single", options=OPTIONS)
    for k in (1, 2, 3):
        result = runner.invoke(
            app,
            [
                "tile",
                *map(str, scenes),
                "--labels",
                str(labels),
                "--out",
                str(folder / "sharded"),
                "--patch-size",
                "16",
                "--block-size",
                "32",
                "--seed",
                "3",
                "--shard",
                f"{k}/3",
            ],
        )
        assert result.exit_code == 0, result.output
    shards = sorted((folder / "sharded").iterdir())
    assert [p.name for p in shards] == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    sources = [s["path"] for p in shards for s in read_tiles(p).info["sources"]]
    assert sorted(sources) == sorted(map(str, scenes))
    assert patches(union_tiles(shards)) == patches(read_tiles(single))


def test_torchrun_tiles_in_two_shards(row, tmp_path):
    """Two CPU ranks under torchrun: each tiles two of the four scenes into its own folder;
    together they hold the single-process store's patches."""
    folder, scenes, labels, *_ = row
    code, output = torchrun(
        "tile", *map(str, scenes), "--labels", str(labels), "--out", str(tmp_path / "ranks"),
        "--patch-size", "16", "--block-size", "32", "--seed", "3",
        timeout=300,
    )  # fmt: skip
    assert code == 0, output[-3000:]
    shards = sorted((tmp_path / "ranks").iterdir())
    assert [p.name for p in shards] == ["shard-1-of-2", "shard-2-of-2"]
    assert [len(read_tiles(p).info["sources"]) for p in shards] == [2, 2]
    single = tile(scenes, labels, tmp_path / "single", options=OPTIONS)
    assert patches(union_tiles(shards)) == patches(read_tiles(single))


def test_the_scale_benchmark_runs_every_step_for_every_count(tmp_path):
    """benchmarks/scale.py end to end at toy sizes: every step for every scene count, with
    times, per-scene figures, slopes and peak memory (figures judged in the README, not here)."""
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "scale.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--counts", "1,3", "--size", "96"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    steps = ["tile, 1 worker", "tile, N workers", "tile, N shards", "train, 1 epoch", "predict"]
    assert [(r["step"], r["scenes"]) for r in rows] == [(s, n) for n in (1, 3) for s in steps]
    for r in rows:
        assert r["seconds"] > 0 and r["peak_mb"] > 50
        assert r["seconds_per_scene"] == pytest.approx(r["seconds"] / r["scenes"])
    assert [r["seconds_per_added_scene"] is None for r in rows] == [True] * 5 + [False] * 5
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the scenes are cleaned up


def test_the_cluster_benchmark_runs_every_step(tmp_path):
    """benchmarks/cluster.py end to end at toy sizes: the same scenes through --workers and
    --dask local:N, the large scene through predict and the xarray path, one JSON."""
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "cluster.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--scenes", "2", "--size", "96"]
        + ["--large", "160"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "cluster.json").read_text())
    steps = [r["step"] for r in result["rows"]]
    assert (
        "scenes: predict --dask local:2" in steps and "large scene: xarray, 2 Dask workers" in steps
    )
    assert all(r["seconds"] > 0 and r["peak_mb"] > 0 for r in result["rows"])
    assert "| scenes: predict --workers 2 |" in proc.stdout
