import json

import numpy as np
import pytest
from conftest import write_raster, write_with_alpha

from scratchsat.errors import InputError
from scratchsat.tiles.tiling import TileOptions, tile


@pytest.fixture
def chip_folder(tmp_path):
    """EuroSAT's layout: CLASS/*.tif, 4 bands, 8×8 px; 5 Forest chips and 5 River chips."""
    root = tmp_path / "eurosat"
    for k, name in enumerate(("River", "Forest")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            data = np.full((4, 8, 8), 100 * (k + 1) + i, dtype=np.uint16)
            write_raster(
                root / name / f"{name}_{i}.tif", data, origin=(500_000 + 1000 * i, 5_800_000)
            )
    return root


def test_chip_folder_becomes_classification_store(chip_folder, tmp_path):
    out = tile(
        [chip_folder],
        None,
        tmp_path / "t",
        options=TileOptions(task="classification", val=0.2, test=0.2),
    )
    info = json.loads((out / "dataset.json").read_text())
    assert [(c["id"], c["code"], c["name"], c["patches"]) for c in info["classes"]] == [
        (0, 1, "Forest", 5),
        (1, 2, "River", 5),
    ]
    assert info["patch_size"] == 8 and info["task"] == "classification"
    assert info["splits"] == {"train": 6, "val": 2, "test": 2}  # 1 val + 1 test per class
    images, labels = np.load(out / "images.npy"), np.load(out / "labels.npy")
    assert images.shape == (10, 4, 8, 8)
    # Forest chips (value 200 + i) are listed first, with class id 0.
    np.testing.assert_array_equal(labels, [0] * 5 + [1] * 5)
    assert images[0, 0, 0, 0] == 200 and images[5, 0, 0, 0] == 100
    index = json.loads((out / "index.geojson").read_text())
    lon, lat = index["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 52 < lat < 53  # UTM 33N chips placed in WGS 84


def test_chip_folder_errors(chip_folder, tmp_path):
    with pytest.raises(InputError, match=r"only suits --task classification"):
        tile([chip_folder], None, tmp_path / "t")
    write_raster(chip_folder / "River" / "odd.tif", np.ones((4, 16, 16), np.uint16))
    with pytest.raises(
        InputError,
        match=r"odd\.tif: 16×16 px, 4 bands, uint16, but .* is "
        r"8×8 px",
    ):
        tile([chip_folder], None, tmp_path / "t", options=TileOptions(task="classification"))
    with pytest.raises(InputError, match=r"tile needs --labels"):
        tile([chip_folder / "River" / "odd.tif"], None, tmp_path / "t")


def test_large_chips_feed_the_same_statistics_lattice_as_tile(tmp_path):
    root = tmp_path / "chips"
    rng = np.random.default_rng(1)
    chips = []
    for k, name in enumerate(("Crop", "Town")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            data = rng.integers(1, 4000, (2, 130, 130), dtype=np.uint16)  # step 3 for 130 px
            chips.append(data)
            write_raster(
                root / name / f"{name}_{i}.tif",
                data,
                origin=(500_000 + 2000 * i, 5_800_000 + 5000 * k),
            )
    out = tile(
        [root], None, tmp_path / "t", options=TileOptions(task="classification", val=0.0, test=0.0)
    )
    info = json.loads((out / "dataset.json").read_text())
    assert info["statistics_step"] == 3
    lattice = np.concatenate([c[:, ::3, ::3].reshape(2, -1) for c in chips], axis=1)
    for band, row in zip(lattice.astype(float), info["bands"], strict=True):
        assert row["mean"] == pytest.approx(band.mean(), rel=1e-12)
        assert row["p98"] == pytest.approx(np.percentile(band, 98))


def test_an_alpha_band_masks_chip_pixels(chip_folder, tmp_path):
    data = np.full((3, 8, 8), 500, np.uint16)
    data[:, :, :3] = 7  # what the file holds where alpha is 0
    valid = np.ones((8, 8), bool)
    valid[:, :3] = False
    for i in range(5):  # the Forest chips get an alpha band and lose their 4th data band
        write_with_alpha(
            chip_folder / "Forest" / f"Forest_{i}.tif",
            data + i,
            valid,
            origin=(500_000 + 1000 * i, 5_800_000),
        )
    for i in range(5):
        write_raster(
            chip_folder / "River" / f"River_{i}.tif",
            np.full((3, 8, 8), 100 + i, np.uint16),
            origin=(500_000 + 1000 * i, 5_800_000),
        )
    out = tile(
        [chip_folder],
        None,
        tmp_path / "t",
        options=TileOptions(task="classification", val=0.0, test=0.0),
    )
    images = np.load(out / "images.npy")
    assert images.shape == (10, 3, 8, 8)  # alpha is not a band
    assert (images[0][:, :, :3] == 500).all() and (images[0][:, :, 3:] == 500).all()
    info = json.loads((out / "dataset.json").read_text())
    valid_values = [500 + i for i in range(5) for _ in range(8 * 5)]
    valid_values += [100 + i for i in range(5) for _ in range(64)]
    assert info["bands"][0]["mean"] == pytest.approx(np.mean(valid_values))
