import numpy as np
import rasterio

from scratchsat.extras.synth import CLASSES, NODATA, synth_arrays, write_scene


def test_synth_is_seeded_and_has_a_nodata_border():
    a, la, va = synth_arrays(96, 80, count=6, seed=5)
    b, lb, _ = synth_arrays(96, 80, count=6, seed=5)
    c, _, _ = synth_arrays(96, 80, count=6, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.shape == (6, 80, 96) and a.dtype == np.uint16
    assert (a[:, ~va] == NODATA).all() and (a[:, va] != NODATA).all()
    assert 0 < (~va).mean() < 0.2 and (~va[:, 0]).all()
    assert set(np.unique(la)) == {code for code, _, _ in CLASSES}


def test_classes_differ_spectrally_and_built_up_by_texture():
    image, labels, valid = synth_arrays(256, 256, count=13, seed=0)
    means = {code: image[:, (labels == code) & valid].mean(axis=1) for code, _, _ in CLASSES}
    nir, red = 7, 3  # B08, B04
    assert means[2][nir] > 3 * means[2][red]  # vegetation's red edge
    assert means[1][nir] < means[1][1]  # water falls off in the near-infrared
    # Built-up and bare soil: close means, very different local variance.
    assert abs(means[4][nir] - means[3][nir]) / means[3][nir] < 0.1

    def local_var(code):
        rows, cols = np.nonzero((labels == code) & valid)
        inner = (rows < 255) & (cols < 255)
        r, c = rows[inner], cols[inner]
        return np.mean((image[nir, r, c].astype(float) - image[nir, r, c + 1]) ** 2)

    assert local_var(4) > 10 * local_var(3)


def test_write_scene_is_georeferenced(tmp_path):
    scene = write_scene(tmp_path / "s.tif", tmp_path / "l.tif", width=64, height=48, count=4)
    with rasterio.open(scene.path) as src:
        assert src.crs.to_epsg() == 32633 and src.res == (10.0, 10.0)
        assert src.nodata == NODATA and src.count == 4 and src.shape == (48, 64)
        assert src.descriptions == ("B1", "B2", "B3", "B4")
    with rasterio.open(scene.labels_path) as src:
        assert src.dtypes == ("uint8",) and src.transform == rasterio.open(scene.path).transform
