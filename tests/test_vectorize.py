"""vectorize: polygons checked against the raster they came from, merged across strips,
small regions, attributes, styles, formats, errors and bounded memory."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import fiona
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from conftest import peak_memory_mb, run_pyqgis, write_raster
from shapely.geometry import shape
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import InputError, OutputExistsError
from scratchsat.geo.vectorize import vectorize

runner = CliRunner()
CLASSES = [
    {"code": 1, "name": "farm", "colour": "#fdbf6f"},
    {"code": 4, "name": "water", "colour": "#1f78b4"},
    {"code": 9, "name": "town", "colour": "#e31a1c"},
]


def class_map(path, height=90, width=77, seed=0, nodata=255, res=10.0, crs="EPSG:32633"):
    """Blocky classes with speckle (single pixels), a few nodata pixels, named by a CLASSES tag."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([1, 4, 9], (height // 6 + 1, width // 6 + 1))
    codes = blocks.repeat(6, 0).repeat(6, 1)[:height, :width].astype(np.uint8)
    speckle = rng.random((height, width)) < 0.03
    codes[speckle] = rng.choice([1, 4, 9], speckle.sum())
    codes[rng.random((height, width)) < 0.01] = nodata
    write_raster(path, codes, nodata=nodata, res=res, crs=crs)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(CLASSES=json.dumps(CLASSES))
    return codes


def features(path, layer="classes"):
    with fiona.open(path, layer=layer) as src:
        return [(shape(f.geometry), dict(f.properties)) for f in src], src.crs


def test_areas_match_pixel_counts_and_polygons_are_valid(tmp_path):
    codes = class_map(tmp_path / "map.tif")
    report = vectorize(tmp_path / "map.tif", tmp_path / "map.gpkg", strip_rows=7)
    found, crs = features(tmp_path / "map.gpkg")
    assert crs.to_epsg() == 32633 and len(found) == report.features
    for code in (1, 4, 9):
        polygons = [g for g, p in found if p["class_code"] == code]
        assert sum(g.area for g in polygons) == pytest.approx((codes == code).sum() * 100.0)
        assert (
            sum(p["pixels"] for _, p in found if p["class_code"] == code) == (codes == code).sum()
        )
    assert all(g.is_valid and g.geom_type == "Polygon" for g, _ in found)
    assert {p["class_name"] for _, p in found} == {"farm", "water", "town"}
    assert all(p["area_ha"] == pytest.approx(p["area"] / 10_000) for _, p in found)
    union = shapely.union_all([g for g, _ in found])
    assert union.area == pytest.approx((codes != 255).sum() * 100.0)  # no overlaps
    # every polygon covers exactly the pixels of its class it claims: burn them back
    with rasterio.open(tmp_path / "map.tif") as src:
        burnt = rasterio.features.rasterize(
            ((g, p["class_code"]) for g, p in found),
            out_shape=codes.shape,
            transform=src.transform,
            fill=255,
            dtype="uint8",
        )
    np.testing.assert_array_equal(burnt, codes)


@pytest.mark.parametrize("rows", [1, 5, 6, 13])
def test_strips_give_the_regions_of_the_whole_map(tmp_path, rows):
    """Regions cut by strip edges are merged: the same regions as polygonising in one go."""
    codes = class_map(tmp_path / "map.tif", seed=rows)
    vectorize(tmp_path / "map.tif", tmp_path / "map.gpkg", strip_rows=rows)
    found, _ = features(tmp_path / "map.gpkg")
    whole = [
        (int(v), shape(g))
        for g, v in rasterio.features.shapes(codes, mask=codes != 255, connectivity=4)
    ]
    assert len(found) == len(whole)
    key = lambda items: sorted((c, round(g.area), g.bounds) for c, g in items)  # noqa: E731
    with rasterio.open(tmp_path / "map.tif") as src:
        t = src.transform
    whole_map = [
        (c, shapely.affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f])) for c, g in whole
    ]
    assert key([(p["class_code"], g) for g, p in found]) == key(whole_map)


def test_mean_top_probability_comes_from_the_uncertainty_raster(tmp_path):
    codes = np.array([[1, 1, 4], [1, 4, 4], [9, 9, 9]], np.uint8)
    write_raster(tmp_path / "map.tif", codes, nodata=255)
    top = np.array([[0.5, 0.7, 0.9], [0.6, 0.8, 1.0], [0.4, 0.4, 0.7]], np.float32)
    unsure = np.stack([top * 0, top * 0, top])
    write_raster(
        tmp_path / "u.tif",
        unsure,
        nodata=float("nan"),
        descriptions=["margin", "entropy", "top_probability"],
    )
    vectorize(
        tmp_path / "map.tif", tmp_path / "m.gpkg", uncertainty=tmp_path / "u.tif", strip_rows=1
    )
    found = {
        p["class_code"]: p["mean_top_probability"] for _, p in features(tmp_path / "m.gpkg")[0]
    }
    assert found == pytest.approx({1: 0.6, 4: 0.9, 9: 0.5})


def test_min_area_merges_or_drops_small_regions(tmp_path):
    codes = class_map(tmp_path / "map.tif", seed=3)
    valid = (codes != 255).sum()
    vectorize(tmp_path / "map.tif", tmp_path / "merged.gpkg", min_area=500.0, strip_rows=9)
    merged, _ = features(tmp_path / "merged.gpkg")
    assert sum(p["pixels"] for _, p in merged) == valid  # pixels change class, none vanish
    small = [p for _, p in merged if p["pixels"] < 5]
    assert len(small) <= len(merged) // 20  # only regions with no valid neighbour stay small
    before, _ = features(vectorize(tmp_path / "map.tif", tmp_path / "all.gpkg").path)
    vectorize(tmp_path / "map.tif", tmp_path / "dropped.gpkg", min_area=500.0, drop_small=True)
    dropped, _ = features(tmp_path / "dropped.gpkg")
    assert all(p["pixels"] >= 5 for _, p in dropped)
    assert len(dropped) == sum(p["pixels"] >= 5 for _, p in before)
    assert len(merged) < len(before)


def test_simplify_keeps_polygons_valid_and_classes_filters(tmp_path):
    class_map(tmp_path / "map.tif", seed=4)
    vectorize(tmp_path / "map.tif", tmp_path / "plain.gpkg")
    vectorize(tmp_path / "map.tif", tmp_path / "simple.gpkg", simplify=15.0, keep=["water", "9"])
    plain, _ = features(tmp_path / "plain.gpkg")
    simple, _ = features(tmp_path / "simple.gpkg")
    assert {p["class_code"] for _, p in simple} == {4, 9}
    assert all(g.is_valid for g, _ in simple)
    vertices = lambda items: sum(len(g.exterior.coords) for g, p in items if p["class_code"] != 1)  # noqa: E731
    assert vertices(simple) < vertices(plain)


def test_styles_for_qgis_in_the_geopackage_and_beside_a_shapefile(tmp_path):
    class_map(tmp_path / "map.tif")
    vectorize(tmp_path / "map.tif", tmp_path / "map.gpkg")
    with sqlite3.connect(tmp_path / "map.gpkg") as db:
        table, qml, default = db.execute(
            "select f_table_name, styleQML, useAsDefault from layer_styles"
        ).fetchone()
    assert table == "classes" and default == 1
    assert 'attr="class_code"' in qml and 'label="water"' in qml and "31,120,180,255" in qml
    assert not (tmp_path / "map.qml").exists()  # the class map's own style's name
    vectorize(tmp_path / "map.tif", tmp_path / "shp" / "map.shp")
    assert (tmp_path / "shp" / "map.qml").read_text() == qml
    names = sorted(p.name for p in (tmp_path / "shp").iterdir())
    assert {"map.shp", "map.shx", "map.dbf", "map.prj", "map.qml"} <= set(names)
    assert not [n for n in names if n.startswith(".")]
    info = subprocess.run(
        ["ogrinfo", "-so", "-al", str(tmp_path / "shp" / "map.shp")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Geometry: Polygon" in info and "class_code: Integer" in info


def test_bad_input_is_refused_and_leaves_nothing(tmp_path):
    class_map(tmp_path / "map.tif")
    class_map(tmp_path / "other.tif", height=40)
    with pytest.raises(InputError, match="cannot tell the vector format of .*map.xyz"):
        vectorize(tmp_path / "map.tif", tmp_path / "map.xyz")
    with pytest.raises(InputError, match="--min-area and --simplify must not be negative"):
        vectorize(tmp_path / "map.tif", tmp_path / "m.gpkg", min_area=-1)
    write_raster(
        tmp_path / "u.tif",
        np.zeros((3, 40, 77), np.float32),
        descriptions=["margin", "entropy", "top_probability"],
    )
    with pytest.raises(InputError, match="u.tif is not on the class map's grid"):
        vectorize(tmp_path / "map.tif", tmp_path / "m.gpkg", uncertainty=tmp_path / "u.tif")
    with pytest.raises(InputError, match="has no such class; it has farm"):
        vectorize(tmp_path / "map.tif", tmp_path / "m.gpkg", keep=["wheat"])
    write_raster(tmp_path / "two.tif", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(InputError, match="has 2 bands; vectorize takes a class map"):
        vectorize(tmp_path / "two.tif", tmp_path / "m.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "map.tif",
        "other.tif",
        "two.tif",
        "u.tif",
    ]
    vectorize(tmp_path / "map.tif", tmp_path / "m.gpkg")
    with pytest.raises(OutputExistsError):
        vectorize(tmp_path / "map.tif", tmp_path / "m.gpkg")
    result = runner.invoke(
        app, ["vectorize", str(tmp_path / "map.tif"), "--out", str(tmp_path / "m.txt")]
    )
    assert result.exit_code == 1 and result.output.startswith(
        "Error: cannot tell the vector format"
    )


def test_the_cli_and_predict_vector(tmp_path, small_run, seg_tiles):
    info = json.loads((seg_tiles / "dataset.json").read_text())
    scene = info["sources"][0]["path"]
    out = tmp_path / "pred.tif"
    args = ["predict", str(small_run), scene, "--out", str(out)]
    more = ["--uncertainty", str(tmp_path / "u.tif"), "--vector", str(tmp_path / "pred.gpkg")]
    result = runner.invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    found, _ = features(tmp_path / "pred.gpkg")
    with rasterio.open(out) as src:
        codes, nodata = src.read(1), src.nodata
    assert sum(p["pixels"] for _, p in found) == (codes != nodata).sum()
    assert all(0 < p["mean_top_probability"] <= 1 for _, p in found)
    clash = ["--out", str(tmp_path / "b.tif"), "--vector", str(tmp_path / "b.shp")]
    result = runner.invoke(app, ["predict", str(small_run), scene, *clash])
    assert result.exit_code == 1 and "which the class map writes too" in result.output
    assert not (tmp_path / "b.tif").exists()
    result = runner.invoke(
        app, ["vectorize", str(out), "--out", str(tmp_path / "v.geojson"), "--min-area", "1000"]
    )
    assert result.exit_code == 0 and "polygons to" in result.output
    with fiona.open(tmp_path / "v.geojson") as src:
        assert len(src) > 0 and "area_ha" in src.schema["properties"]


def test_memory_stays_bounded_as_the_map_grows(tmp_path):
    """A class map 10× taller raises peak memory by far less than its own size."""
    paths = []
    for rows in (1000, 10000):
        codes = np.random.default_rng(0).integers(0, 3, (rows // 4, 500 // 4)).astype(np.uint8)
        codes = codes.repeat(4, 0).repeat(4, 1)
        paths.append(
            write_raster(
                tmp_path / f"m{rows}.tif", codes, tiled=True, blockxsize=256, blockysize=256
            )
        )
    small, large = peak_memory_mb(
        "from scratchsat.geo.vectorize import vectorize",
        "vectorize(path, path + '.gpkg', strip_rows=256)",
        paths,
    )
    # what vectorising the whole large map at once holds: its polygons as shapely objects,
    # about 25 bytes a pixel here (measured: strip_rows=100000 grows by 128 MB, strips of
    # 256 rows by 11 MB, SQLite's page cache)
    extra = 9000 * 500 * 25 / 2**20
    assert large - small < 0.25 * extra, (small, large)


QGIS_CHECK = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
for source in sys.argv[1:]:
    layer = QgsVectorLayer(source, "classes", "ogr")
    renderer = layer.renderer()
    print(layer.isValid(), renderer.type(), renderer.classAttribute(),
          ";".join(f"{c.value()}={c.label()}={c.symbol().color().name()}"
                   for c in renderer.categories()))
app.exitQgis()
"""


def test_qgis_opens_the_polygons_in_the_class_colours(tmp_path):
    """A real QGIS (Debian's python3-qgis) loads the GeoPackage's stored style and the
    Shapefile's .qml as the layers' default styles; skipped where QGIS is not installed."""
    class_map(tmp_path / "map.tif")
    vectorize(tmp_path / "map.tif", tmp_path / "map.gpkg")
    vectorize(tmp_path / "map.tif", tmp_path / "shp" / "map.shp")
    out = run_pyqgis(
        QGIS_CHECK, f"{tmp_path / 'map.gpkg'}|layername=classes", tmp_path / "shp" / "map.shp"
    )
    lines = [line for line in out.splitlines() if line.startswith("True")]
    expected = "1=farm=#fdbf6f;4=water=#1f78b4;9=town=#e31a1c"
    assert lines == [f"True categorizedSymbol class_code {expected}"] * 2, out
