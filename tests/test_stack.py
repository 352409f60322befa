import numpy as np
import pytest
import rasterio
from conftest import gdalinfo, write_raster, write_with_alpha
from rasterio.enums import ColorInterp

from scratchsat.errors import BandError, NoOverlapError, OutputExistsError, RasterReadError
from scratchsat.tiles.stack import stack


@pytest.fixture
def band_files(tmp_path):
    """A 10 m uint16 band (nodata 0), a 20 m int16 band as JPEG2000 (nodata -9999) and a
    10 m float32 band named .jp2 although it is a GeoTIFF (no nodata)."""
    ten = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 500) + 100
    ten[0, 0] = 0
    twenty = np.full((20, 30), 7, dtype=np.int16)
    twenty[:, 15:] = 9
    twenty[19, 29] = -9999
    floats = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    return (
        [
            write_raster(tmp_path / "T_B02.tif", ten, nodata=0),
            write_raster(
                tmp_path / "T_B05.jp2",
                twenty,
                res=20.0,
                nodata=-9999,
                driver="JP2OpenJPEG",
                QUALITY=100,
                REVERSIBLE="YES",
            ),
            write_raster(tmp_path / "T_NDVI.jp2", floats),
        ],
        ten,
        twenty,
        floats,
    )


def test_stack_resamples_onto_finest_grid_with_lossless_dtype(band_files, tmp_path):
    paths, ten, twenty, floats = band_files
    with rasterio.open(paths[1]) as src:
        assert src.driver == "JP2OpenJPEG"
    out = stack(paths, tmp_path / "scene.tif")
    with rasterio.open(out) as src:
        assert (src.width, src.height, src.count) == (60, 40, 3)
        assert src.dtypes == ("float32",) * 3  # uint16 + int16 + float32 → float32
        assert src.res == (10.0, 10.0)
        assert src.descriptions == ("B02", "B05", "NDVI")
        data = src.read()
        nodata = src.nodata
    assert nodata == 0  # the first declared nodata that float32 holds
    np.testing.assert_array_equal(data[0][ten != 0], ten[ten != 0])
    assert data[0, 0, 0] == nodata
    np.testing.assert_allclose(data[2], floats)
    # Bilinear 20 m → 10 m: flat areas keep their value, the 7|9 edge is blended.
    assert data[1, 10, 5] == 7 and data[1, 10, 50] == 9
    assert 7 < data[1, 10, 30] < 9
    # The -9999 pixel maps to the one output nodata, not into the blend.
    assert (data[1, 38:, 58:] == nodata).all()
    assert not (data[1] == -9999).any()


def test_stack_output_checked_by_gdalinfo(band_files, tmp_path):
    paths, *_ = band_files
    out = stack(paths, tmp_path / "scene.tif", band_names=["blue", "re1", "ndvi"])
    info = gdalinfo(out)
    assert info["size"] == [60, 40]
    assert info["geoTransform"] == [500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0]
    assert info["coordinateSystem"]["wkt"].startswith('PROJCRS["WGS 84 / UTM zone 33N"')
    assert [b["description"] for b in info["bands"]] == ["blue", "re1", "ndvi"]
    assert all(b["block"] == [256, 256] or b["block"][0] == 60 for b in info["bands"])
    assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"


def test_stack_resolution_option(band_files, tmp_path):
    paths, *_ = band_files
    out = stack(paths, tmp_path / "scene.tif", resolution=20)
    with rasterio.open(out) as src:
        assert (src.width, src.height, src.res) == (30, 20, (20.0, 20.0))


def test_stack_reprojects_other_crs_onto_first(tmp_path):
    first = write_raster(tmp_path / "a.tif", np.full((30, 30), 5, np.uint16))
    # The same area in ETRS89 / UTM 32N (EPSG:25832), far enough to need a real warp.
    with rasterio.open(first) as src:
        bounds = rasterio.warp.transform_bounds(src.crs, "EPSG:25832", *src.bounds)
    second = write_raster(
        tmp_path / "b.tif",
        np.full((40, 40), 8, np.uint16),
        crs="EPSG:25832",
        origin=(bounds[0] - 50, bounds[3] + 50),
        res=10.0,
        nodata=0,
    )
    out = stack([first, second], tmp_path / "s.tif")
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633
        data = src.read()
    assert (data[0] == 5).all()
    assert (data[1][data[1] != 0] == 8).all() and (data[1] == 8).mean() > 0.5


def test_stack_refuses_inputs_that_do_not_overlap(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((10, 10), np.uint16))
    b = write_raster(tmp_path / "b.tif", np.ones((10, 10), np.uint16), origin=(600_000, 5e6))
    with pytest.raises(NoOverlapError, match=r"b\.tif does not overlap .*a\.tif"):
        stack([a, b], tmp_path / "s.tif")
    assert not (tmp_path / "s.tif").exists()


def test_stack_refuses_unreadable_file(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((10, 10), np.uint16))
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not really a tiff")
    with pytest.raises(RasterReadError, match=r"broken\.tif: cannot be read as a raster"):
        stack([a, bad], tmp_path / "s.tif")
    with pytest.raises(RasterReadError, match=r"missing\.tif: no such file"):
        stack([a, tmp_path / "missing.tif"], tmp_path / "s.tif")


def test_stack_refuses_wrong_band_name_count(band_files, tmp_path):
    paths, *_ = band_files
    with pytest.raises(BandError, match=r"2 band names given \(a, b\) but the inputs hold 3"):
        stack(paths, tmp_path / "s.tif", band_names=["a", "b"])


def test_stack_does_not_overwrite_without_flag(band_files, tmp_path):
    paths, *_ = band_files
    out = tmp_path / "s.tif"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"s\.tif exists already; pass --overwrite"):
        stack(paths, out)
    assert out.read_text() == "keep me"
    stack(paths, out, overwrite=True)
    with rasterio.open(out) as src:
        assert src.count == 3


def test_alpha_bands_become_nodata_not_bands(tmp_path):
    rgb = np.full((3, 20, 20), 300, np.uint16)
    rgb[:, :, :6] = 5  # what the file holds where alpha is 0
    valid = np.ones((20, 20), bool)
    valid[:, :6] = False
    warped = write_with_alpha(tmp_path / "warped.tif", rgb, valid)  # no nodata declared
    nir = write_raster(tmp_path / "nir.tif", np.full((20, 20), 800, np.uint16))
    out = stack([warped, nir], tmp_path / "stack.tif")
    with rasterio.open(out) as src:
        assert src.count == 4 and src.nodata == 0  # 3 data bands + nir; alpha is gone
        data = src.read()
        assert src.descriptions == ("warped_1", "warped_2", "warped_3", "nir")
    assert (data[:3, :, :6] == 0).all() and (data[:3, :, 6:] == 300).all()
    assert (data[3] == 800).all()  # nir has no mask: untouched


def test_true_colour_where_the_band_names_say_so_and_a_cog_on_request(tmp_path):
    """stack wrote no colour interpretation: QGIS drew Sentinel-2 as B01/B02/B03 false colour;
    and it was not a valid COG, with no --cog. Named red/green/blue bands get their colour
    interpretation and a .qml that QGIS draws in true colour; --cog passes rio-cogeo."""
    from typer.testing import CliRunner

    from scratchsat.cli import app

    rng = np.random.default_rng(0)
    paths = []
    for name in ("B01", "B02", "B03", "B04", "B08"):
        band = rng.integers(500, 3000, (1, 600, 700)).astype("uint16")
        paths.append(str(write_raster(tmp_path / f"T33UUU_20170216T102101_{name}.tif", band)))
    out = tmp_path / "scene.tif"
    result = CliRunner().invoke(app, ["stack", *paths, "--out", str(out), "--cog"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.colorinterp[1:4] == (ColorInterp.blue, ColorInterp.green, ColorInterp.red)
        assert src.overviews(1)  # a COG has overviews
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    style = (tmp_path / "scene.qml").read_text()
    assert 'type="multibandcolor" redBand="4" greenBand="3" blueBand="2"' in style
    low = float(style.split("<minValue>")[1].split("<")[0])
    assert 500 <= low < 700  # a 2 % stretch of the red band, not 0 … 65535
    again = CliRunner().invoke(app, ["stack", *paths, "--out", str(out)])
    assert again.exit_code == 1 and "exists already" in again.output
    plain = stack(paths[:1] + paths[4:], tmp_path / "other.tif")  # B01, B08: no true colour
    assert not (tmp_path / "other.qml").exists()
    with rasterio.open(plain) as src:
        assert ColorInterp.red not in src.colorinterp
