import json
import warnings

import numpy as np
import pytest
import rasterio
from conftest import gdalinfo, write_raster, write_with_alpha
from rasterio.warp import transform_geom

from scratchsat.errors import (
    BandError,
    LabelError,
    NoOverlapError,
    NoPatchesError,
    OutputExistsError,
    RasterReadError,
    SplitWarning,
)
from scratchsat.extras.synth import write_scene
from scratchsat.geo.labels import IGNORE_INDEX
from scratchsat.tiles.tiling import TileOptions, tile
from scratchsat.training.data import PatchDataset

ALL_TRAIN = TileOptions(patch_size=10, val=0.0, test=0.0)


def load(folder, name):
    return np.load(folder / f"{name}.npy")


def test_counts_classes_and_statistics_by_hand(tiny_scene, tmp_path):
    scene, labels, image, label_codes = tiny_scene
    out = tile([scene], labels, tmp_path / "tiles", options=ALL_TRAIN)
    info = json.loads((out / "dataset.json").read_text())
    # 16 windows: (0, 0) is nodata, (30, 30) is unlabelled, 14 are kept.
    assert info["windows"] == 16 and info["patches"] == 14
    assert info["skipped"] == {"nodata": 1, "split_border": 0, "unlabeled": 1}
    assert info["splits"] == {"train": 14, "val": 0, "test": 0}
    # The user's codes stay codes; ids are their order.
    assert [(c["id"], c["code"], c["name"]) for c in info["classes"]] == [(0, 3, "3"), (1, 7, "7")]
    # Code 3: 40×20 px minus the nodata window and the one nodata pixel; code 7: 40×20 minus
    # the unlabelled 10×10 corner.
    assert [c["pixels"] for c in info["classes"]] == [40 * 20 - 100 - 1, 40 * 20 - 100]
    assert [b["name"] for b in info["bands"]] == ["red", "nir"]
    assert info["dtype"] == "uint16" and info["nodata"] == 0
    # Statistics over the valid pixels of the kept patches, computed independently.
    kept = np.ones((40, 40), bool)
    kept[:10, :10] = kept[30:, 30:] = False
    kept[15, 15] = False
    for band, row in zip(image, info["bands"], strict=True):
        values = band[kept].astype(float)
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std())
        assert row["p2"] == pytest.approx(np.percentile(values, 2))
        assert row["p98"] == pytest.approx(np.percentile(values, 98))


def test_patches_hold_scene_pixels_and_ignore_invalid(tiny_scene, tmp_path):
    scene, labels, image, label_codes = tiny_scene
    out = tile([scene], labels, tmp_path / "tiles", options=ALL_TRAIN)
    images, masks, windows = load(out, "images"), load(out, "masks"), load(out, "windows")
    assert images.shape == (14, 2, 10, 10) and images.dtype == np.uint16
    assert masks.shape == (14, 10, 10) and masks.dtype == np.uint8
    code_to_id = {3: 0, 7: 1, 0: IGNORE_INDEX}
    for patch, mask, (scene_index, col, row) in zip(images, masks, windows, strict=True):
        assert scene_index == 0
        np.testing.assert_array_equal(patch, image[:, row : row + 10, col : col + 10])
        expected = np.vectorize(code_to_id.get)(label_codes[row : row + 10, col : col + 10])
        if (row, col) == (10, 10):
            expected[5, 5] = IGNORE_INDEX  # band 2 is nodata at scene pixel (15, 15)
        np.testing.assert_array_equal(mask, expected)
    assert np.load(out / "images.npy", mmap_mode="r").shape == (14, 2, 10, 10)


def test_classification_gives_majority_class_per_patch(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        options=TileOptions(patch_size=20, val=0, test=0, task="classification"),
    )
    assert not (out / "masks.npy").exists()
    # Windows at (0,0), (0,20), (20,0), (20,20): left ones are code 3 (id 0), right ones 7.
    windows, classes = load(out, "windows"), load(out, "labels")
    assert {(int(c), int(r)): int(k) for (_, c, r), k in zip(windows, classes, strict=True)} == {
        (0, 0): 0,
        (20, 0): 1,
        (0, 20): 0,
        (20, 20): 1,
    }


def test_min_valid_and_band_subset(tiny_scene, tmp_path):
    scene, labels, image, _ = tiny_scene
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        options=TileOptions(patch_size=20, val=0, test=0, min_valid=0.8, bands=("nir",)),
    )
    info = json.loads((out / "dataset.json").read_text())
    # The top-left 20 px window is 25% nodata: below 0.8 valid.
    assert info["skipped"]["nodata"] == 1 and info["patches"] == 3
    assert [b["name"] for b in info["bands"]] == ["nir"] and info["bands"][0]["index"] == 2
    assert load(out, "images").shape == (3, 1, 20, 20)
    out2 = tile(
        [scene],
        labels,
        tmp_path / "t2",
        options=TileOptions(patch_size=20, val=0, test=0, bands=("2", "1")),
    )
    info2 = json.loads((out2 / "dataset.json").read_text())
    assert [b["name"] for b in info2["bands"]] == ["nir", "red"]


def test_label_raster_in_slightly_different_crs_on_identical_grid(tiny_scene, tmp_path):
    scene, _, _, label_codes = tiny_scene
    # ETRS89 / UTM 33N instead of WGS 84 / UTM 33N: another datum realisation, same grid.
    etrs = write_raster(tmp_path / "etrs.tif", label_codes, crs="EPSG:25833", nodata=0)
    a = tile([scene], tmp_path / "labels.tif", tmp_path / "a", options=ALL_TRAIN)
    b = tile([scene], etrs, tmp_path / "b", options=ALL_TRAIN)
    np.testing.assert_array_equal(load(a, "masks"), load(b, "masks"))


def test_label_raster_on_coarser_grid_uses_nearest(tiny_scene, tmp_path):
    scene, *_ = tiny_scene
    coarse = np.arange(400, dtype=np.int32).reshape(20, 20) % 5 + 1  # 20 m, codes 1..5
    path = write_raster(tmp_path / "coarse.tif", coarse, res=20.0)
    out = tile([scene], path, tmp_path / "t", options=ALL_TRAIN)
    info = json.loads((out / "dataset.json").read_text())
    assert [c["code"] for c in info["classes"]] == [1, 2, 3, 4, 5]
    masks, windows = load(out, "masks"), load(out, "windows")
    fine = np.repeat(np.repeat(coarse, 2, 0), 2, 1) - 1  # codes 1..5 → ids 0..4
    for mask, (_, col, row) in zip(masks, windows, strict=True):
        expected = fine[row : row + 10, col : col + 10].copy()
        if (row, col) == (10, 10):
            expected[5, 5] = IGNORE_INDEX
        np.testing.assert_array_equal(mask, expected)


def polygon(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def write_geojson(path, features, crs="EPSG:4326", src_crs="EPSG:32633"):
    items = [
        {"type": "Feature", "properties": props, "geometry": transform_geom(src_crs, crs, geom)}
        for geom, props in features
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def test_vector_labels_with_string_field_partial_cover_and_overlap(tiny_scene, tmp_path):
    scene, *_ = tiny_scene
    x0, y0 = 500_000, 5_800_000  # scene's top-left; 10 m pixels, 40×40
    forest = polygon(x0 + 100, y0 - 300, x0 + 300, y0 - 100)  # cols 10–29, rows 10–29
    pond = polygon(x0 + 150, y0 - 250, x0 + 250, y0 - 150)  # cols 15–24, rows 15–24
    labels = write_geojson(
        tmp_path / "labels.geojson",
        [(pond, {"kind": "water", "osm": 1}), (forest, {"kind": "forest", "osm": 2})],
    )
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        label_field="kind",
        options=TileOptions(patch_size=10, stride=5, val=0, test=0),
    )
    info = json.loads((out / "dataset.json").read_text())
    assert [(c["id"], c["code"], c["name"]) for c in info["classes"]] == [
        (0, 1, "forest"),
        (1, 2, "water"),
    ]
    masks, windows = load(out, "masks"), load(out, "windows")
    scene_ids = np.full((40, 40), -1)
    for mask, (_, col, row) in zip(masks, windows, strict=True):
        scene_ids[row : row + 10, col : col + 10] = mask
    # The smaller polygon wins where they overlap, whatever the file order.
    assert (scene_ids[16:24, 16:24] == 1).all()
    assert scene_ids[12, 12] == 0 and scene_ids[27, 20] == 0
    # Outside every polygon: ignored; windows with no labelled pixel are skipped.
    assert scene_ids[5, 35] in (-1, IGNORE_INDEX)
    assert info["skipped"]["unlabeled"] > 0
    assert info["classes"][1]["pixels"] > 0


def test_vector_labels_background_class(tiny_scene, tmp_path):
    scene, *_ = tiny_scene
    x0, y0 = 500_000, 5_800_000
    labels = write_geojson(
        tmp_path / "l.geojson",
        [(polygon(x0 + 100, y0 - 300, x0 + 300, y0 - 100), {"kind": "forest"})],
    )
    out = tile(
        [scene], labels, tmp_path / "t", label_field="kind", background="other", options=ALL_TRAIN
    )
    info = json.loads((out / "dataset.json").read_text())
    assert [(c["code"], c["name"]) for c in info["classes"]] == [(0, "other"), (1, "forest")]
    assert info["patches"] == 15  # only the nodata window is skipped


def test_vector_labels_errors(tiny_scene, tmp_path):
    scene, *_ = tiny_scene
    x0, y0 = 500_000, 5_800_000
    labels = write_geojson(
        tmp_path / "l.geojson",
        [(polygon(x0 + 100, y0 - 300, x0 + 300, y0 - 100), {"kind": "forest", "code": 4})],
    )
    with pytest.raises(
        LabelError,
        match=r"l\.geojson has no field 'knd'; its fields are: "
        r"kind, code",
    ):
        tile([scene], labels, tmp_path / "t", label_field="knd")
    with pytest.raises(LabelError, match=r"needs --label-field; its fields are: kind, code"):
        tile([scene], labels, tmp_path / "t")
    far = write_geojson(
        tmp_path / "far.geojson",
        [(polygon(x0 + 9000, y0 - 9000, x0 + 9500, y0 - 8500), {"kind": "forest"})],
    )
    with pytest.raises(NoOverlapError, match=r"far\.geojson does not overlap the scene"):
        tile([scene], far, tmp_path / "t", label_field="kind")
    assert not (tmp_path / "t").exists()


def test_integer_vector_field_keeps_codes(tiny_scene, tmp_path):
    scene, *_ = tiny_scene
    x0, y0 = 500_000, 5_800_000
    labels = write_geojson(
        tmp_path / "l.gpkg.geojson",
        [
            (polygon(x0, y0 - 400, x0 + 200, y0), {"code": 11}),
            (polygon(x0 + 200, y0 - 400, x0 + 400, y0), {"code": 42}),
        ],
    )
    out = tile([scene], labels, tmp_path / "t", label_field="code", options=ALL_TRAIN)
    info = json.loads((out / "dataset.json").read_text())
    assert [(c["code"], c["name"]) for c in info["classes"]] == [(11, "11"), (42, "42")]


def test_label_raster_errors(tiny_scene, tmp_path):
    scene, labels, _, label_codes = tiny_scene
    far = write_raster(tmp_path / "far.tif", label_codes, origin=(900_000, 1_000_000))
    with pytest.raises(NoOverlapError, match=r"far\.tif does not overlap the scene"):
        tile([scene], far, tmp_path / "t")
    empty = write_raster(tmp_path / "empty.tif", np.zeros((40, 40), np.uint8), nodata=0)
    with pytest.raises(LabelError, match=r"empty\.tif: no labelled pixel over the scene"):
        tile([scene], empty, tmp_path / "t")
    fractional = write_raster(tmp_path / "frac.tif", np.full((40, 40), 1.5, np.float32))
    with pytest.raises(LabelError, match=r"non-integer values such as 1\.5"):
        tile([scene], fractional, tmp_path / "t")


def test_scene_errors(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    with pytest.raises(
        BandError,
        match=r"band 'swir' is not in the scene, which has 2 bands "
        r"\(red, nir\)",
    ):
        tile([scene], labels, tmp_path / "t", options=TileOptions(bands=("swir",)))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(scene.read_bytes()[:300])
    with pytest.raises(RasterReadError, match=r"corrupt\.tif"):
        tile([corrupt], labels, tmp_path / "t")
    blank = write_raster(tmp_path / "blank.tif", np.zeros((2, 40, 40), np.uint16), nodata=0)
    with pytest.raises(
        NoPatchesError,
        match=r"all 16 windows of 10×10 px were skipped "
        r"\(16 nodata\)",
    ):
        tile([blank], labels, tmp_path / "t", options=ALL_TRAIN)
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_output_not_overwritten_without_flag(tiny_scene, tmp_path):
    scene, labels, *_ = tiny_scene
    out = tmp_path / "t"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with pytest.raises(OutputExistsError, match=r"t exists already; pass --overwrite"):
        tile([scene], labels, out, options=ALL_TRAIN)
    assert (out / "mine.txt").exists()
    tile([scene], labels, out, options=ALL_TRAIN, overwrite=True)
    assert (out / "dataset.json").exists() and not (out / "mine.txt").exists()


@pytest.fixture
def synth_scene(tmp_path):
    return write_scene(
        tmp_path / "s.tif", tmp_path / "s_labels.tif", width=200, height=180, count=4, seed=3
    )


def test_spatial_split_never_overlaps_across_splits(synth_scene, tmp_path):
    options = TileOptions(patch_size=16, stride=8, block_size=48, val=0.25, test=0.25, seed=1)
    out = tile([synth_scene.path], synth_scene.labels_path, tmp_path / "t", options=options)
    splits, windows = load(out, "splits"), load(out, "windows")
    info = json.loads((out / "dataset.json").read_text())
    assert all(info["splits"][k] > 0 for k in ("train", "val", "test"))
    assert info["skipped"]["split_border"] > 0
    xs, ys = windows[:, 1], windows[:, 2]
    for i in range(len(splits)):
        overlap = (np.abs(xs - xs[i]) < 16) & (np.abs(ys - ys[i]) < 16)
        assert (splits[overlap] == splits[i]).all()
    # Arrays stay aligned after the border windows are dropped.
    assert len(load(out, "images")) == len(load(out, "masks")) == len(splits) == info["patches"]
    again = tile([synth_scene.path], synth_scene.labels_path, tmp_path / "t2", options=options)
    np.testing.assert_array_equal(load(again, "splits"), splits)


def test_workers_give_the_same_store(synth_scene, tmp_path):
    options = TileOptions(patch_size=32, val=0.2, test=0.1)
    one = tile([synth_scene.path], synth_scene.labels_path, tmp_path / "one", options=options)
    two = tile(
        [synth_scene.path],
        synth_scene.labels_path,
        tmp_path / "two",
        options=TileOptions(patch_size=32, val=0.2, test=0.1, workers=2),
    )
    for name in ("images", "masks", "splits", "windows", "labels"):
        np.testing.assert_array_equal(load(one, name), load(two, name))
    assert (one / "dataset.json").read_text() == (two / "dataset.json").read_text()


def test_index_geojson_footprints_lie_inside_the_scene(synth_scene, tmp_path):
    out = tile(
        [synth_scene.path],
        synth_scene.labels_path,
        tmp_path / "t",
        options=TileOptions(patch_size=32),
    )
    index = json.loads((out / "index.geojson").read_text())
    assert index["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    with rasterio.open(synth_scene.path) as src:
        west, south, east, north = src.bounds
    splits = load(out, "splits")
    assert len(index["features"]) == len(splits)
    for feature, split in zip(index["features"], splits, strict=True):
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert (ring[:, 0] >= west).all() and (ring[:, 0] <= east).all()
        assert (ring[:, 1] >= south).all() and (ring[:, 1] <= north).all()
        assert np.ptp(ring[:, 0]) == np.ptp(ring[:, 1]) == 320  # 32 px of 10 m
        assert feature["properties"]["split"] == ("train", "val", "test")[split]
        fields = [k for k in feature["properties"] if k.startswith("px_")]
        assert all(k.replace("_", "").isalnum() for k in fields), fields  # no quoting in QGIS
    names = {c["name"] for c in json.loads((out / "dataset.json").read_text())["classes"]}
    assert "bare soil" in names and "px_bare_soil" in index["features"][0]["properties"]


def test_chips_are_georeferenced(tiny_scene, tmp_path):
    scene, labels, image, _ = tiny_scene
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        options=TileOptions(patch_size=10, val=0, test=0, chips=True),
    )
    windows = load(out, "windows")
    _, col, row = windows[3]
    info = gdalinfo(out / "chips" / "000003.tif")
    assert info["size"] == [10, 10]
    assert info["geoTransform"] == [500_000 + 10 * col, 10.0, 0.0, 5_800_000 - 10 * row, 0.0, -10.0]
    assert [b["description"] for b in info["bands"]] == ["red", "nir"]
    with rasterio.open(out / "chips" / "000003.tif") as src:
        np.testing.assert_array_equal(src.read(), image[:, row : row + 10, col : col + 10])
    assert gdalinfo(out / "chips" / "000003_labels.tif")["bands"][0]["noDataValue"] == 255


def test_real_like_scene_across_two_scenes(tmp_path):
    a = write_scene(
        tmp_path / "a.tif", tmp_path / "a_l.tif", width=128, height=128, count=13, seed=1
    )
    b = write_scene(
        tmp_path / "b.tif", tmp_path / "b_l.tif", width=128, height=128, count=13, seed=2
    )
    out = tile(
        [a.path, b.path],
        a.labels_path,
        tmp_path / "t",
        options=TileOptions(patch_size=32, val=0, test=0),
    )
    windows = load(out, "windows")
    info = json.loads((out / "dataset.json").read_text())
    assert set(windows[:, 0].tolist()) == {0, 1}
    assert [s["path"] for s in info["sources"]] == [str(a.path), str(b.path)]
    assert [b["name"] for b in info["bands"]][:3] == ["B01", "B02", "B03"]


@pytest.mark.parametrize("driver, suffix", [("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_geopackage_and_shapefile_labels_match_geojson(tiny_scene, tmp_path, driver, suffix):
    import fiona

    scene, *_ = tiny_scene
    x0, y0 = 500_000, 5_800_000
    shapes = [
        (polygon(x0 + 100, y0 - 300, x0 + 300, y0 - 100), {"kind": "forest"}),
        (polygon(x0 + 150, y0 - 250, x0 + 250, y0 - 150), {"kind": "water"}),
    ]
    reference = tile(
        [scene],
        write_geojson(tmp_path / "l.geojson", shapes),
        tmp_path / "a",
        label_field="kind",
        options=ALL_TRAIN,
    )
    schema = {"geometry": "Polygon", "properties": {"kind": "str"}}
    path = tmp_path / f"labels{suffix}"
    with fiona.open(path, "w", driver=driver, crs="EPSG:32633", schema=schema) as dst:
        for geometry, properties in shapes:
            dst.write({"geometry": geometry, "properties": properties})
    other = tile([scene], path, tmp_path / "b", label_field="kind", options=ALL_TRAIN)
    np.testing.assert_array_equal(load(reference, "masks"), load(other, "masks"))
    assert (load(other, "masks") == 1).sum() > 0


def test_patches_of_many_strips_hold_their_own_pixels(tmp_path):
    # 16-px blocks and patches: one strip per window row, each cut into the one reused buffer
    # while the next strip is read ahead; every patch must still hold its own pixels.
    rng = np.random.default_rng(5)
    image = rng.integers(1, 60_000, (3, 80, 48), dtype=np.uint16)
    scene = write_raster(
        tmp_path / "scene.tif", image, tiled=True, blockxsize=16, blockysize=16, compress="deflate"
    )
    labels = write_raster(tmp_path / "labels.tif", rng.integers(1, 4, (80, 48), dtype=np.uint8))
    out = tile(
        [scene], labels, tmp_path / "t", options=TileOptions(patch_size=16, val=0.0, test=0.0)
    )
    images, windows = load(out, "images"), load(out, "windows")
    assert len(images) == 15
    for patch, (_, x, y) in zip(images, windows, strict=True):
        np.testing.assert_array_equal(patch, image[:, y : y + 16, x : x + 16])


def test_statistics_of_large_patches_come_from_a_lattice(tmp_path):
    # 256 px patches feed every 4th row and column of their valid pixels to the statistics;
    # patches up to 64 px feed every pixel (see the test above). One patch has a nodata pixel.
    rng = np.random.default_rng(2)
    image = rng.integers(1, 5000, (2, 512, 512), dtype=np.uint16)
    image[:, 100, 100] = 7  # on the lattice: counted
    image[:, 101, 101] = 60_000  # off the lattice: not counted
    image[:, 300, 300] = 0  # nodata on the lattice: not counted
    scene = write_raster(tmp_path / "scene.tif", image, nodata=0)
    labels = write_raster(tmp_path / "labels.tif", np.ones((512, 512), np.uint8))
    out = tile(
        [scene], labels, tmp_path / "t", options=TileOptions(patch_size=256, val=0.0, test=0.0)
    )
    info = json.loads((out / "dataset.json").read_text())
    assert info["statistics_step"] == 4 and info["patches"] == 4
    lattice = image[:, ::4, ::4].reshape(2, -1)
    lattice = lattice[:, lattice[0] != 0].astype(float)
    assert lattice.shape[1] == 128 * 128 - 1
    for band, row in zip(lattice, info["bands"], strict=True):
        assert row["mean"] == pytest.approx(band.mean(), rel=1e-12)
        assert row["std"] == pytest.approx(band.std(), rel=1e-12)
        assert row["p2"] == pytest.approx(np.percentile(band, 2))
        assert row["p98"] == pytest.approx(np.percentile(band, 98))


@pytest.mark.parametrize(
    ("dtype", "codes"),
    [("uint16", (1000, 40_000)), ("int16", (5, 12_000)), ("float32", (2.0, 9.0))],
)
def test_label_codes_of_every_dtype_map_to_ids(tiny_scene, tmp_path, dtype, codes):
    scene, _, _, label_codes = tiny_scene
    values = np.where(label_codes == 3, codes[0], codes[1]).astype(dtype)
    values[30:, 30:] = 99  # a nodata corner, as in the fixture
    labels = write_raster(tmp_path / "labels.tif", values, nodata=99)
    out = tile([scene], labels, tmp_path / "t", options=ALL_TRAIN)
    info = json.loads((out / "dataset.json").read_text())
    assert [c["code"] for c in info["classes"]] == list(codes)
    ids = np.where(label_codes == 3, 0, 1)
    ids[30:, 30:] = ids[:10, :10] = ids[15, 15] = IGNORE_INDEX  # label nodata, scene nodata
    masks, windows = load(out, "masks"), load(out, "windows")
    assert len(masks) == 14
    for mask, (_, x, y) in zip(masks, windows, strict=True):
        np.testing.assert_array_equal(mask, ids[y : y + 10, x : x + 10])


def test_unreadable_block_in_a_later_strip_leaves_nothing(tmp_path):
    image = np.random.default_rng(0).integers(1, 60_000, (2, 64, 64), dtype=np.uint16)
    scene = write_raster(
        tmp_path / "scene.tif", image, tiled=True, blockxsize=16, blockysize=16, compress="deflate"
    )
    with rasterio.open(scene) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=2))
    raw = bytearray(scene.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    scene.write_bytes(bytes(raw))
    labels = write_raster(tmp_path / "labels.tif", np.ones((64, 64), np.uint8))
    with pytest.raises(RasterReadError, match=r"scene\.tif: reading .* failed .* corrupt"):
        tile([scene], labels, tmp_path / "t", options=TileOptions(patch_size=16))
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def write_masked(path, data, **extra):
    """``data`` with a GDAL mask: an alpha band (RGB + alpha, as ``gdalwarp -dstalpha`` writes)
    when ``alpha``, else an internal per-dataset mask; masked where ``mask`` is False."""
    mask, alpha = extra.pop("mask"), extra.pop("alpha", False)
    if alpha:
        return write_with_alpha(path, data, mask, **extra)
    write_raster(path, data, **extra)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return path


def test_alpha_band_is_a_mask_and_masked_pixels_normalise_to_zero(tmp_path):
    rng = np.random.default_rng(8)
    data = rng.integers(100, 3000, (3, 40, 40), dtype=np.uint16)
    mask = np.ones((40, 40), bool)
    mask[:, :7] = False  # the ragged edge gdalwarp leaves outside the source
    data[:, ~mask] = 0  # what the file holds there
    scene = write_masked(tmp_path / "rgba.tif", data, mask=mask, alpha=True)
    labels = write_raster(tmp_path / "labels.tif", np.ones((40, 40), np.uint8))
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        options=TileOptions(patch_size=20, val=0.0, test=0.0, min_valid=0.1),
    )
    info = json.loads((out / "dataset.json").read_text())
    assert [b["name"] for b in info["bands"]] == ["B1", "B2", "B3"]  # alpha is not a band
    images, masks, windows = load(out, "images"), load(out, "masks"), load(out, "windows")
    means = data[:, mask].mean(axis=1)
    for band, row in zip(data, info["bands"], strict=True):  # statistics: valid pixels only
        assert row["mean"] == pytest.approx(band[mask].mean())
    for image, patch_mask, (_, x, y) in zip(images, masks, windows, strict=True):
        masked = ~mask[y : y + 20, x : x + 20]
        assert (patch_mask[masked] == IGNORE_INDEX).all()
        # Masked pixels hold each band's (rounded) mean, not the file's zeros.
        fill = np.round(means)[:, None].repeat(masked.sum(), 1)
        np.testing.assert_array_equal(image[:, masked], fill)
        kept = data[:, y : y + 20, x : x + 20][:, ~masked]
        np.testing.assert_array_equal(image[:, ~masked], kept)
    dataset = PatchDataset(out, "train")
    edge_patches = 0
    for i, row in enumerate(dataset.indices):
        _, x, y = windows[row]
        masked = ~mask[y : y + 20, x : x + 20]
        edge_patches += masked.any()
        assert np.abs(dataset[i][0].numpy()[:, masked]).max(initial=0) < 0.01  # about 0
    assert edge_patches == 2


@pytest.mark.parametrize(
    ("dtype", "nodata", "stored"), [("int16", -1, -1), ("float32", None, "nan")]
)
def test_internal_mask_stores_nodata_or_nan(tmp_path, dtype, nodata, stored):
    data = np.arange(2 * 30 * 30).reshape(2, 30, 30).astype(dtype) % 500 + 1
    mask = np.ones((30, 30), bool)
    mask[25:, :] = False
    scene = write_masked(tmp_path / "scene.tif", data, mask=mask, nodata=nodata)
    labels = write_raster(tmp_path / "labels.tif", np.ones((30, 30), np.uint8))
    out = tile(
        [scene],
        labels,
        tmp_path / "t",
        options=TileOptions(patch_size=10, val=0.0, test=0.0, min_valid=0.1),
    )
    images, windows = load(out, "images"), load(out, "windows")
    bottom = images[windows[:, 2] == 20][:, :, 5:, :]  # rows 25..29 are masked
    assert len(bottom) == 3
    if stored == "nan":
        assert np.isnan(bottom).all()
    else:
        assert (bottom == stored).all()
    dataset = PatchDataset(out, "train")
    row = int(np.flatnonzero(windows[dataset.indices, 2] == 20)[0])
    assert (dataset[row][0].numpy()[:, 5:, :] == 0).all()  # normalised: exactly 0


def test_masked_fill_reads_the_centre_or_else_the_whole_scene(tmp_path):
    from scratchsat.geo.raster import masked_fill

    data = np.full((2, 40, 40), 10, np.uint16)
    data[:, :, 20:] = 30  # the right half is brighter
    mask = np.ones((40, 40), bool)
    mask[:, 20:] = False
    scene = write_masked(tmp_path / "half.tif", data, mask=mask, alpha=False)
    with rasterio.open(scene) as src:
        assert masked_fill(src, [1, 2], side=8) == (10.0, 10.0)  # centre: 4 valid columns of 8
    mask[:] = True
    mask[16:24, 16:24] = False  # the central 8 × 8 all masked: a shrunk read of all
    data[:, :, :] = 10
    data[:, 30:, :] = 40
    scene = write_masked(tmp_path / "hole.tif", data, mask=mask, alpha=False)
    with rasterio.open(scene) as src:
        want = round(data[0][mask].mean())
        assert masked_fill(src, [1, 2], side=8) == (float(want),) * 2
        assert masked_fill(src, [1, 2], side=64) == (float(want),) * 2
    plain = write_raster(tmp_path / "plain.tif", data)
    with rasterio.open(plain) as src:
        assert masked_fill(src, [1, 2]) is None  # no mask band: nothing to fill


def test_memory_does_not_grow_with_the_number_of_patches(tmp_path):
    """A scene cut into 4× as many patches (16,384 of 8 px against 4,096) grows what tile
    allocates at its peak by little: patches stream into the store and index.geojson is
    written feature by feature (built in memory, it held about 2 KB a patch). Measured with
    tracemalloc (Python and numpy allocations): the process's peak RSS is set by importing
    torch, far above tile's own."""
    import tracemalloc

    peaks = []
    for height in (256, 1024):
        scene = write_scene(
            tmp_path / f"s{height}.tif",
            tmp_path / f"l{height}.tif",
            width=1024,
            height=height,
            count=2,
            seed=1,
        )
        tracemalloc.start()
        tile(
            [scene.path],
            scene.labels_path,
            tmp_path / f"t{height}",
            options=TileOptions(patch_size=8, block_size=64),
        )
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    patches = [len(np.load(tmp_path / f"t{h}" / "splits.npy")) for h in (256, 1024)]
    extra = (patches[1] - patches[0]) * 2048 / 2**20  # index features of the extra patches
    assert patches[1] > 3.5 * patches[0]
    assert peaks[1] - peaks[0] < 0.25 * extra, (peaks, extra)


def test_a_split_asked_for_but_left_empty_is_warned_about(synth_scene, tmp_path):
    """Splits are drawn by blocks: with too few blocks a split asked for can get none; tile
    says so, through the CLI too, and writes the folder (a shard may legitimately lack one)."""
    from typer.testing import CliRunner

    from scratchsat.cli import app

    with pytest.warns(UserWarning, match=r"test split got no patches .*--test 0.1.*--block-size"):
        out = tile(
            [synth_scene.path],
            synth_scene.labels_path,
            tmp_path / "few",
            options=TileOptions(patch_size=32, block_size=256, val=0.25, test=0.1),
        )
    assert json.loads((out / "dataset.json").read_text())["splits"]["test"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tile(
            [synth_scene.path],
            synth_scene.labels_path,
            tmp_path / "many",
            options=TileOptions(patch_size=32, block_size=32, val=0.25, test=0.1),
        )
        tile(
            [synth_scene.path],
            synth_scene.labels_path,
            tmp_path / "none-asked",
            options=TileOptions(patch_size=32, block_size=32, val=0.25, test=0.0),
        )
    args = [str(synth_scene.path), "--labels", str(synth_scene.labels_path), "--patch-size", "32"]
    result = CliRunner().invoke(
        app, ["tile", *args, "--block-size", "256", "--val", "0.25", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "Warning: the test split" in result.output and "Traceback" not in result.output


def rare_class_scene(tmp_path, spots):
    """A 480 × 448 px scene labelled 1 everywhere, 2 on 8 × 8 px squares at ``spots`` (pixel
    offsets of their corners) and 3 on one square: a small scene of 210 patches of 32 px."""
    rng = np.random.default_rng(0)
    image = rng.integers(100, 3000, (3, 448, 480)).astype(np.uint16)
    labels = np.ones((448, 480), np.uint8)
    for y, x in spots:
        labels[y : y + 8, x : x + 8] = 2
    labels[200:208, 200:208] = 3
    scene = write_raster(tmp_path / "rare.tif", image)
    tags = {"CLASSES": json.dumps([{"code": c, "name": n} for c, n in enumerate("ABC", 1)])}
    write_raster(tmp_path / "rare_labels.tif", labels, nodata=0)
    with rasterio.open(tmp_path / "rare_labels.tif", "r+") as dst:
        dst.update_tags(**tags)
    return scene, tmp_path / "rare_labels.tif"


def class_pixels_by_split(folder):
    masks, splits = load(folder, "masks"), load(folder, "splits")
    return [np.bincount(masks[splits == k].ravel(), minlength=256)[:3] for k in range(3)]


def test_a_small_scene_gets_blocks_enough_for_validation_and_test(tmp_path):
    """Default blocks are sized by the scene: 480 × 448 px of 32 px patches is 4 blocks of 8
    patches (one for validation, none for test); it gets 2-patch blocks, 56 of them."""
    scene, labels = rare_class_scene(tmp_path, [(10, 10)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "the (val|test) split got no patches")
        out = tile([scene], labels, tmp_path / "t", options=TileOptions(patch_size=32))
    info = json.loads((out / "dataset.json").read_text())
    assert info["block_size"] is None and info["sources"][0]["block_size"] == 64
    assert info["splits"]["val"] >= 30 and info["splits"]["test"] >= 15, info["splits"]
    given = tile([scene], labels, tmp_path / "g", options=TileOptions(patch_size=32, block_size=96))
    assert json.loads((given / "dataset.json").read_text())["sources"][0]["block_size"] == 96


def test_every_class_in_enough_blocks_reaches_validation_and_test(tmp_path):
    """Blocks are assigned stratified: a class in six of the 56 blocks is in train, val and
    test whatever the seed (at random it misses validation about one seed in four); a class in
    one block cannot be, and tile says which and why."""
    spots = [(40, 40), (40, 300), (170, 120), (300, 40), (300, 400), (400, 250)]
    scene, labels = rare_class_scene(tmp_path, spots)
    for seed in range(6):
        with pytest.warns(SplitWarning) as caught:
            out = tile(
                [scene],
                labels,
                tmp_path / f"s{seed}",
                options=TileOptions(patch_size=32, seed=seed),
            )
        for split, pixels in zip(("train", "val", "test"), class_pixels_by_split(out), strict=True):
            assert pixels[1] > 0, (seed, split, pixels)  # class 2 is id 1
        messages = [str(w.message) for w in caught]
        assert any("holds no pixel of C (64 px)" in m for m in messages), messages
        assert not any("of B" in m for m in messages), messages


def test_the_index_opens_in_qgis_as_outlines_by_split(synth_scene, tmp_path):
    """index.geojson opened with one random single symbol (opaque squares hiding the imagery,
    splits not told apart): index.qml beside it draws outlines only, a colour per split."""
    out = tile(
        [synth_scene.path],
        synth_scene.labels_path,
        tmp_path / "t",
        options=TileOptions(patch_size=32),
    )
    style = (out / "index.qml").read_text()
    assert 'type="categorizedSymbol" attr="split"' in style
    values = [part.split('"')[0] for part in style.split('<category render="true" symbol="')[1:]]
    assert len(values) == 3
    for split in ("train", "val", "test"):
        assert f'value="{split}" label="{split}"' in style
    assert style.count('name="style" type="QString" value="no"') == 3  # no fill: outlines
    splits = {
        f["properties"]["split"]
        for f in json.loads((out / "index.geojson").read_text())["features"]
    }
    assert splits <= {"train", "val", "test"}
