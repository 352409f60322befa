"""Maps worth making: test-time augmentation, ensembles, training to a time budget, and the
quality benchmark that judges the defaults against a per-pixel forest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from typer.testing import CliRunner

from scratchsat.cli import app
from scratchsat.errors import BandError
from scratchsat.prediction import PredictOptions, Predictor, predict, predict_scene
from scratchsat.prediction.writers import Outputs
from scratchsat.training.data import epoch_length

runner = CliRunner()


def meta(bands: int, patch: int = 16) -> dict:
    return {
        "task": "segmentation",
        "patch_size": patch,
        "dtype": "float32",
        "bands": [{"name": f"B{i}", "mean": 0.0, "std": 1.0} for i in range(1, bands + 1)],
        "classes": [
            {"id": i, "code": i + 1, "name": f"c{i}", "colour": "#102030"} for i in range(bands)
        ],
    }


def probabilities(tmp_path, model, tta: bool, name: str) -> np.ndarray:
    predictor = Predictor(model, meta(3), torch.device("cpu"), tta=tta)
    options = PredictOptions(float_probabilities=True, overlap=0.5)
    outputs = Outputs(tmp_path / f"{name}.tif", tmp_path / f"{name}_p.tif")
    with pytest.warns(UserWarning):  # bands in file order (no descriptions)
        predict_scene(predictor, tmp_path / "scene.tif", outputs, options)
    with rasterio.open(tmp_path / f"{name}_p.tif") as src:
        return src.read()


def test_tta_of_an_equivariant_model_is_exact_and_of_another_is_not(tmp_path):
    data = np.random.default_rng(0).normal(0, 2, (3, 45, 37)).astype(np.float32)
    write_raster(tmp_path / "scene.tif", data)
    identity = torch.nn.Identity()
    plain = probabilities(tmp_path, identity, False, "plain")
    turned = probabilities(tmp_path, identity, True, "tta")
    np.testing.assert_allclose(turned, plain, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    skewed = torch.nn.Conv2d(3, 3, 3, padding=1)  # a random kernel: not D4-equivariant
    assert not np.allclose(
        probabilities(tmp_path, skewed, True, "a"),
        probabilities(tmp_path, skewed, False, "b"),
        atol=1e-3,
    )


def test_an_ensemble_of_two_copies_of_a_bundle_equals_that_bundle(small_run, seg_tiles, tmp_path):
    scene, copy = seg_tiles.parent / "scene.tif", tmp_path / "copy"
    shutil.copytree(small_run, copy)
    predict(
        small_run,
        [scene],
        tmp_path / "one.tif",
        probabilities=tmp_path / "one_p.tif",
        options=PredictOptions(float_probabilities=True),
    )
    result = runner.invoke(
        app,
        [
            "predict",
            str(small_run),
            str(scene),
            "--out",
            str(tmp_path / "two.tif"),
            "--probabilities",
            str(tmp_path / "two_p.tif"),
            "--float",
            "--ensemble",
            str(copy),
        ],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "two.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(tmp_path / "one_p.tif") as a, rasterio.open(tmp_path / "two_p.tif") as b:
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-6)


def test_an_ensemble_refuses_bundles_with_other_classes_or_bands(small_run, seg_tiles, tmp_path):
    scene = seg_tiles.parent / "scene.tif"
    for what, edit in (
        ("classes", lambda m: m["classes"][0].update(name="other")),
        ("bands", lambda m: m["bands"].reverse()),
    ):
        other = tmp_path / what
        shutil.copytree(small_run, other)
        described = json.loads((other / "model.json").read_text())
        edit(described)
        (other / "model.json").write_text(json.dumps(described))
        options = PredictOptions(ensemble=(str(other),))
        with pytest.raises(BandError, match=f"cannot be averaged with .*: its {what} differ"):
            predict(small_run, [scene], tmp_path / f"{what}.tif", options=options)
        assert not (tmp_path / f"{what}.tif").exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("3m", 180.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
    ],
)
def test_durations(text, seconds):
    from scratchsat.settings import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3 minutes", "m3", "0s", "-5", ""])
def test_bad_durations_are_refused(text):
    from scratchsat.errors import InputError
    from scratchsat.settings import parse_duration

    with pytest.raises(InputError, match="--time-budget"):
        parse_duration(text)


def test_epochs_follow_from_measured_costs():
    from scratchsat.training.budget import Costs, epochs_for

    costs = Costs(step_s=0.5, val_batch_s=0.2, steps=10, val_batches=3, test_batches=2)
    assert costs.epoch_s == pytest.approx(5.6) and costs.report_s == pytest.approx(4.0)
    assert epochs_for(60, 10, costs) == 8  # (60 - 10 - 4) / 5.6 = 8.2
    assert epochs_for(12, 10, costs) == 1  # never fewer than one
    fitted = Costs(0.5, 0.2, 10, val_batches=3, test_batches=2, calibrate=True)
    assert fitted.report_s == pytest.approx(4.6)  # validation once more, for the offsets


def test_the_replan_keeps_a_margin_for_slower_epochs():
    from scratchsat.training.budget import Plan, epochs_after

    plan = Plan(budget_s=100, started=0.0, clock=lambda: 0.0, report_s=4.0)
    # 80 s left after 16 s: 8 epochs of 10 s exactly, but only 7 of 10.5 s (5 % slower).
    assert epochs_after(plan, 1, 10.0, now=16.0) == 1 + 7
    assert epochs_after(plan, 1, 10.0, now=99.0) == 1  # none left: the one done


def test_a_plan_grows_only_by_epochs_that_fit_with_room_to_spare():
    from scratchsat.training.budget import Plan, replanned

    plan = Plan(budget_s=100, started=0.0, clock=lambda: 0.0, report_s=4.0)
    # 80 s left after 16 s of which epoch 1 took 10: the first re-plan takes what fits, up or
    # down (7 more of 10.5 s).
    assert replanned(plan, 1, planned=3, epoch_s=10.0, now=16.0) == 8
    assert replanned(plan, 1, planned=12, epoch_s=10.0, now=16.0) == 8
    # Later, at 5 s an epoch: 15 more fit planned 5 % slower, 13 at 15 % slower.
    assert replanned(plan, 5, planned=22, epoch_s=5.0, now=16.0) == 5 + 15  # shortened
    assert replanned(plan, 5, planned=16, epoch_s=5.0, now=16.0) == 5 + 13  # grown by 2
    assert replanned(plan, 5, planned=17, epoch_s=5.0, now=16.0) == 17  # not for one epoch
    assert replanned(plan, 5, planned=20, epoch_s=5.0, now=16.0) == 20  # fits: kept


class Clock:
    """A clock that reads ``times`` in turn, then moves one second each time it is read."""

    def __init__(self, *times: float) -> None:
        self.times, self.now = list(times), -1.0

    def __call__(self) -> float:
        self.now = self.times.pop(0) if self.times else self.now + 1.0
        return self.now


def budget_clock(*durations: float) -> Clock:
    """The clock of a budgeted run whose epochs take ``durations`` (seconds, validation
    included): the measurement reads 0–5, then each epoch reads its start, its end and (the
    re-plan) its end again."""
    times, t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 6.0
    for d in durations:
        times += [t, t + d, t + d]
        t += d
    return Clock(*times)


def budget_costs(tiles: Path, batch: int) -> tuple[float, float]:
    """One epoch and the final report as measured by ``Clock()``: reads at 0 (start), 1 and 2
    (3 steps timed), 3 and 4 (2 validation batches), 5 (time spent so far). The report scores
    validation twice (the decision offsets, then the scores) and test once."""
    info = json.loads((tiles / "dataset.json").read_text())
    steps = epoch_length(info["splits"]["train"], batch, 16) // batch  # full batches (drop_last)
    val = -(-info["splits"]["val"] // batch)
    test = -(-info["splits"]["test"] // batch)
    return steps * (1 / 3) + val * (1 / 2), (2 * val + test) * (1 / 2) + 3.0


def test_a_time_budget_picks_the_epochs_its_measurements_allow(seg_tiles, tmp_path):
    from scratchsat.training.loop import TrainConfig, train

    epoch_s, report_s = budget_costs(seg_tiles, 8)
    budget = 5.0 + report_s + 2.5 * epoch_s  # room for 2 epochs, not 3
    # The first epoch then reads 6 and 6 + 0.8 * epoch_s, the re-plan 7 + 0.8 * epoch_s: a
    # little faster than foreseen, but not enough for a third epoch with the 5 % margin.
    clock = Clock(0, 1, 2, 3, 4, 5, 6, 6 + 0.8 * epoch_s)
    config = TrainConfig(batch_size=8, width=8, time_budget=budget)
    lines = []
    report = train(seg_tiles, tmp_path / "run", config, clock=clock, log=lines.append)
    assert report["epochs_run"] == 2
    assert "time budget" in lines[0] and "2 epochs" in lines[0]
    assert not any("instead of" in line for line in lines)  # no change: nothing said
    saved = json.loads((tmp_path / "run" / "model.json").read_text())["training"]
    assert saved["epochs"] == 2 and saved["time_budget"] == budget


@pytest.mark.parametrize(("planned", "measured"), [(2, 3), (3, 2)])
def test_the_first_epochs_measured_time_plans_the_rest(seg_tiles, tmp_path, planned, measured):
    # Three timed steps misjudge a run (a busy moment); the first real epoch plans it again:
    # epochs, the schedule laid out over them from the step reached, and what is saved.
    from scratchsat.bundle import load_checkpoint
    from scratchsat.training.loop import TrainConfig, train
    from scratchsat.training.optim import lr_factor

    epoch_s, report_s = budget_costs(seg_tiles, 8)
    budget = 5.0 + report_s + (planned + 0.5) * epoch_s
    # Every epoch takes ``real``. After the first (6 to 6 + real), the time left is
    # budget - (6 + real) - report_s = (planned + 0.5) * epoch_s - 1 - real; room for
    # measured - 1 more epochs of ``real`` (planned 5 % slower) and a half when that is
    # (measured - 0.5) * 1.05 * real.
    real = ((planned + 0.5) * epoch_s - 1) / ((measured - 0.5) * 1.05 + 1)
    clock = budget_clock(*[real] * measured)
    config = TrainConfig(batch_size=8, width=8, time_budget=budget)
    lines = []
    report = train(seg_tiles, tmp_path / "run", config, clock=clock, log=lines.append)
    assert f"{planned} epochs" in lines[0]
    said = [line for line in lines if "instead of" in line]
    assert said == [
        f"time budget {budget:.0f} s: epoch 1 took {real:.1f} s, so {measured} epochs in all "
        f"instead of {planned}"
    ]
    assert report["epochs_run"] == measured
    steps = json.loads((seg_tiles / "dataset.json").read_text())["splits"]["train"] // 8
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    new_layout = config.lr * lr_factor("onecycle", steps, measured * steps)
    old_layout = config.lr * lr_factor("onecycle", steps, planned * steps)
    assert float(rows[0]["lr"]) == pytest.approx(new_layout) != pytest.approx(old_layout)
    assert float(rows[-1]["lr"]) == pytest.approx(config.lr * lr_factor("onecycle", 1, 1))
    saved = json.loads((tmp_path / "run" / "model.json").read_text())["training"]
    assert saved["epochs"] == measured  # and a resume keeps them:
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["epochs"] == measured


def test_epochs_that_slow_down_shorten_the_plan(seg_tiles, tmp_path):
    # A shared machine slows down for minutes at a time: the plan made after the first epoch
    # is checked after every later one against the recent pace, and shortened to end in time.
    from scratchsat.training.loop import TrainConfig, train
    from scratchsat.training.optim import lr_factor

    epoch_s, report_s = budget_costs(seg_tiles, 8)
    budget = 5.0 + report_s + 4.5 * epoch_s  # 4 epochs as measured before training
    # Epoch 1 takes the foreseen time (the re-plan keeps 4: 3.5 epochs' time is left, for 3
    # planned 5 % slower); epoch 2 takes three times as long (a pace of 2 epochs, and half an
    # epoch's time left: none more fits).
    clock = budget_clock(epoch_s, 3 * epoch_s)
    config = TrainConfig(batch_size=8, width=8, time_budget=budget)
    lines = []
    report = train(seg_tiles, tmp_path / "run", config, clock=clock, log=lines.append)
    assert "4 epochs" in lines[0]
    said = [line for line in lines if "instead of" in line]
    assert said == [
        f"time budget {budget:.0f} s: epochs 1–2 took {2 * epoch_s:.1f} s on average, so 2 "
        "epochs in all instead of 4"
    ]
    assert report["epochs_run"] == 2
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 2  # and the schedule, laid out over them, ends with the last:
    assert float(rows[-1]["lr"]) == pytest.approx(config.lr * lr_factor("onecycle", 1, 1))


def test_a_slow_spell_that_passes_gives_its_epochs_back(seg_tiles, tmp_path):
    # One slow epoch shortens the plan; once the recent pace is back (faster, here), the time
    # left is planned again and the epochs cut are trained after all, within the budget.
    from scratchsat.training.loop import TrainConfig, train
    from scratchsat.training.optim import lr_factor

    epoch_s, report_s = budget_costs(seg_tiles, 8)
    budget = 5.0 + report_s + 8.5 * epoch_s  # 8 epochs as measured before training
    durations = [epoch_s, 3 * epoch_s] + [epoch_s / 2] * 20
    clock = budget_clock(*durations)
    config = TrainConfig(batch_size=8, width=8, time_budget=budget)
    lines = []
    report = train(seg_tiles, tmp_path / "run", config, clock=clock, log=lines.append)
    said = [line for line in lines if "instead of" in line]
    plans = [int(line.split(" epochs in all")[0].rsplit(" ", 1)[1]) for line in said]
    shortest = plans.index(min(plans))
    assert "epochs 1–2 took" in said[shortest]  # the slow epoch shortened the plan
    assert max(plans[shortest:]) > min(plans)  # the plan grew again after the slow epoch
    epochs = report["epochs_run"]
    assert epochs == plans[-1] > min(plans)
    # The last epoch ends with time left for the report: 6 s of set-up, then the epochs.
    assert 6.0 + sum(durations[:epochs]) + report_s <= budget
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == epochs  # and the schedule, laid out over them, ends with the last:
    assert float(rows[-1]["lr"]) == pytest.approx(config.lr * lr_factor("onecycle", 1, 1))


def test_time_budget_options(seg_tiles, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            str(seg_tiles),
            "--out",
            str(tmp_path / "r"),
            "--time-budget",
            "3m",
            "--epochs",
            "5",
        ],
    )
    assert result.exit_code == 1 and "pass --epochs or --time-budget, not both" in result.output
    result = runner.invoke(
        app, ["train", str(seg_tiles), "--out", str(tmp_path / "r"), "--time-budget", "soon"]
    )
    assert result.exit_code == 1 and "is not a duration" in result.output
    assert not (tmp_path / "r").exists()


def run_quality_benchmark(tmp_path, size: int, *args: str, timeout: int = 600, **scene):
    """Run benchmarks/quality.py on a synthetic scene of ``size`` px with 16 px patches and
    32 px split blocks; returns the finished process and the benchmark's output folder."""
    import subprocess
    import sys

    from scratchsat import write_scene

    pytest.importorskip("sklearn")
    made = write_scene(
        tmp_path / "scene.tif", tmp_path / "labels.tif", width=size, height=size, **scene
    )
    script = Path(__file__).parent.parent / "benchmarks" / "quality.py"
    out = tmp_path / "bench"
    command = [sys.executable, str(script), str(out), "--scene", str(made.path)]
    command += ["--labels", str(made.labels_path), "--patch-size", "16", "--block-size", "32"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)
    return result, out


def test_the_quality_benchmark_runs_and_reports_both_models(tmp_path):
    result, out = run_quality_benchmark(
        tmp_path,
        192,
        "--split-seed",
        "1",
        "--seeds",
        "0,1",
        "--samples",
        "2000",
        "--set",
        "epochs=2",
        "--set",
        "width=8",
        count=4,
        seed=3,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "quality.json").read_text())
    assert [r["seed"] for r in report["rows"]] == [0, 1]
    assert report["settings"] == {"epochs": 2, "width": 8}
    for model in ("cnn", "forest"):
        s = report["summary"][model]["mean_iou"]
        assert 0 < s["mean"] <= 1 and s["spread"] >= 0
    assert report["rows"][0]["pixels"] > 0
    (tiles,) = out.glob("tiles-*")  # tiled with tile's --seed 1
    assert tiles.name == "tiles-16-split1"
    assert json.loads((tiles / "dataset.json").read_text())["seed"] == 1
    assert "cnn − forest" in result.stdout and "forest seed 1" in result.stdout


def test_ema_weights_are_what_is_validated_saved_and_resumed_exactly(seg_tiles, tmp_path):
    import csv

    from scratchsat.errors import TrainingInterrupted
    from scratchsat.training import loop
    from scratchsat.training.loop import TrainConfig, train

    def rows(run):
        with open(run / "metrics.csv") as f:
            return [
                {k: v for k, v in r.items() if k.startswith(("val_", "train_loss"))}
                for r in csv.DictReader(f)
            ]

    config = TrainConfig(epochs=3, batch_size=8, width=8, ema=True)
    train(seg_tiles, tmp_path / "plain", TrainConfig(epochs=3, batch_size=8, width=8, ema=False))
    train(seg_tiles, tmp_path / "straight", config)
    assert rows(tmp_path / "straight") != rows(tmp_path / "plain")  # EMA weights are scored

    def interrupt(done, total, epoch, **fields):
        if epoch == 2 and done == 3:
            raise KeyboardInterrupt

    refresh, loop.REFRESH_STEPS = loop.REFRESH_STEPS, 1
    try:
        with pytest.raises(TrainingInterrupted):
            train(seg_tiles, tmp_path / "stopped", config, progress=interrupt)
    finally:
        loop.REFRESH_STEPS = refresh
    train(seg_tiles, tmp_path / "stopped", resume=True)
    assert rows(tmp_path / "stopped") == rows(tmp_path / "straight")


def test_the_quality_benchmark_refuses_a_test_split_without_patches(tmp_path):
    """Splits drawn from too few blocks can leave the test split empty; the benchmark says so
    before it trains, instead of printing a table of NaN."""
    result, out = run_quality_benchmark(tmp_path, 64, "--set", "epochs=1", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Error: the test split of" in result.stderr and "--block-size" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(out.glob("run-*")) and not (out / "quality.json").exists()


def fake_shared_data(folder: Path, labels_name: str) -> Path:
    """A data folder laid out like ../shared/data, from synthetic scenes: Brandenburg's 13
    band files (GeoTIFFs named .jp2, as the real Virginia ones are) with land-use polygons in
    ``fclass``, and a 3-band NEON-like scene with tree polygons in ``label``."""
    import fiona
    from rasterio.features import shapes

    from scratchsat import write_scene

    def polygons(labels_path, names, path, field):
        with rasterio.open(labels_path) as src:
            codes, transform, crs = src.read(1), src.transform, src.crs
        schema = {"geometry": "Polygon", "properties": {field: "str"}}
        with fiona.open(path, "w", crs=crs.to_wkt(), schema=schema, **DRIVER[path.suffix]) as dst:
            for geometry, code in shapes(codes, mask=codes > 0, transform=transform):
                if int(code) in names:
                    dst.write({"geometry": geometry, "properties": {field: names[int(code)]}})

    DRIVER = {".gpkg": {"driver": "GPKG"}, ".geojson": {"driver": "GeoJSON"}}
    bb = folder / "brandenburg-s2"
    bb.mkdir(parents=True)
    s2 = write_scene(folder / "s2.tif", folder / "s2_labels.tif", width=288, height=192, count=13)
    with rasterio.open(s2.path) as src:
        for i, name in enumerate(src.descriptions, 1):
            profile = src.profile | {"count": 1}
            with rasterio.open(bb / f"T33UUU_20170216T102101_{name}.jp2", "w", **profile) as dst:
                dst.write(src.read(i), 1)
    names = {1: "water", 2: "forest", 3: "farm", 4: "residential"}
    polygons(s2.labels_path, names, bb / labels_name, "fclass")
    neon = folder / "neon-osbs-trees"
    neon.mkdir()
    trees = write_scene(
        neon / "OSBS_029.tif", folder / "neon_labels.tif", width=96, height=96, count=3, seed=4
    )
    polygons(trees.labels_path, {2: "tree"}, neon / "OSBS_029_trees.geojson", "label")
    return folder


def test_the_quality_matrix_runs_every_cell_from_one_command(tmp_path):
    """benchmarks/quality.py --matrix DATA makes each cell's scene and labels from the data
    folder (band subsets, a crop, 30 m Landsat-like bands, one class against the background,
    the tree scene), runs CNN and forest on each and writes one table and one JSON file."""
    import subprocess
    import sys

    pytest.importorskip("sklearn")
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import quality as module

    data = fake_shared_data(tmp_path / "data", module.BRANDENBURG_LABELS)
    out = tmp_path / "matrix"
    cells = "b08,crop,30m,water,trees"
    command = [sys.executable, str(Path(module.__file__)), str(out), "--matrix", str(data)]
    command += ["--cells", cells, "--seeds", "0", "--samples", "2000", "--patch-size", "16"]
    command += ["--set", "epochs=1", "--set", "epoch_steps=4", "--set", "width=8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((out / "matrix.json").read_text())
    assert list(document["cells"]) == cells.split(",")
    for name, cell in document["cells"].items():
        for model in ("cnn", "forest"):
            assert 0 <= cell["summary"][model]["mean_iou"]["mean"] <= 1, name
        assert cell["rows"][0]["pixels"] > 0
    assert document["cells"]["water"]["target"] == "water"
    assert "water" in document["cells"]["water"]["summary"]["cnn"]["class_iou"]
    assert len(document["cells"]["b08"]["summary"]["cnn"]["class_iou"]) == 4
    with rasterio.open(out / "scenes" / "brandenburg-30m.tif") as src:
        assert (src.width, src.height, src.count) == (96, 64, 6) and src.res == (30.0, 30.0)
        assert src.descriptions == module.LANDSAT_LIKE
    with rasterio.open(out / "scenes" / "brandenburg-crop.tif") as src:
        assert src.width == src.height == 96
    table = (out / "matrix.txt").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(cells.split(",")) + 1  # header, cells, mean
    assert "| **mean** |" in table and table in result.stdout
