"""Pages to look at: train's report.html, info RUN --open, evaluate --html — self-contained,
with every picture and table they promise."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
from conftest import write_raster
from matplotlib.image import imread
from typer.testing import CliRunner

from scratchsat.cli import app

runner = CliRunner()


class Page(HTMLParser):
    """Headings, images (decoded) and table rows of a page, and every URL it refers to."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings, self.images, self.rows, self.urls = [], [], [], []
        self._heading, self._row, self._cell = None, None, None
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            png = base64.b64decode(src.split(",", 1)[1])
            self.images.append((attrs.get("alt"), imread(io.BytesIO(png), format="png")))
        if tag in ("h1", "h2"):
            self._heading = ""
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = ""
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self.headings.append(self._heading)
            self._heading = None
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell += data


def rows_starting(page: Page, first: str) -> list[list[str]]:
    return [r for r in page.rows if r and r[0] == first]


def test_train_writes_a_report_page_with_everything(small_run, seg_tiles):
    page = Page((small_run / "report.html").read_text())
    assert page.scripts == 0 and all(u.startswith("data:") for u in page.urls)  # offline
    assert page.headings[1:] == [
        "Summary",
        "Settings",
        "Data",
        "Curves",
        "Scores on the test split (best epoch)",
        "Test area: prediction beside labels",
        "Band contract of the bundle (model.json)",
    ]
    assert [alt for alt, _ in page.images] == ["training curves", "confusion matrix", "test area"]
    assert all(image.shape[0] > 100 and image.shape[1] > 100 for _, image in page.images)
    info = json.loads((seg_tiles / "dataset.json").read_text())
    report = json.loads((small_run / "report.json").read_text())
    for c, scored in zip(info["classes"], report["test"]["classes"], strict=True):
        # data: pixels per split; scores: the test split's IoU and support, as report.json has
        data_row = [r for r in rows_starting(page, c["name"]) if len(r) == 6][0]
        assert data_row[1:5] == [
            f"{c['code']}",
            *(f"{c['pixels_by_split'][s]:,}" for s in ("train", "val", "test")),
        ]
        score_row = [r for r in rows_starting(page, c["name"]) if len(r) == 6][1]
        assert score_row[-1] == f"{scored['support']:,}"
        assert score_row[1] == ("–" if scored["iou"] is None else f"{scored['iou']:.3f}")
    for band in info["bands"]:
        assert rows_starting(page, band["name"])
    assert rows_starting(page, "batch_size") == [["batch_size", "8"]]
    assert rows_starting(page, "width") == [["width", "8"]]
    contract = rows_starting(page, "bands, in order")[0][1]
    assert contract == ", ".join(b["name"] for b in info["bands"])
    test_patches = info["splits"]["test"]
    text = (small_run / "report.html").read_text()
    assert f"its {test_patches} test patches" in text


def test_the_report_page_is_filled_and_formats_numbers_alike(small_run, seg_tiles):
    """report.html's test-area panel was two-thirds empty and it mixed 0.00367 beside 0.367;
    its test scores differ from evaluate's without a word why. The panel is cut to the box
    around the test patches, scores have three decimals, settings show as given, and the
    page says why evaluate's figures differ."""
    from scratchsat import htmlpage

    assert htmlpage.cell(0.00367) == "<td>0.004</td>" and htmlpage.cell(0.367) == "<td>0.367</td>"
    page = Page((small_run / "report.html").read_text())
    text = (small_run / "report.html").read_text()
    assert rows_starting(page, "weight_decay") == [["weight_decay", "0.01"]]  # as given
    assert rows_starting(page, "lr") == [["lr", "0.002"]]
    splits, windows = np.load(seg_tiles / "splits.npy"), np.load(seg_tiles / "windows.npy")
    test = windows[splits == 2]
    left, top = max(0, test[:, 1].min() - 32), max(0, test[:, 2].min() - 32)
    assert f"columns {left}–" in text and f"rows {top}–" in text
    assert "evaluate MAP --tiles TILES --split test scores the map" in text


def test_info_open_opens_the_report(small_run, seg_tiles, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    result = runner.invoke(app, ["info", str(small_run), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [(small_run / "report.html").resolve().as_uri()]
    refused = runner.invoke(app, ["info", str(seg_tiles), "--open"])
    assert refused.exit_code == 1 and "--open opens a run's report.html" in refused.output
    assert opened == [(small_run / "report.html").resolve().as_uri()]


PRED = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 2, 2, 255], [1, 1, 1, 1]], np.uint8)
TRUTH = np.array([[1, 1, 2, 2], [1, 2, 2, 2], [0, 2, 2, 2], [1, 1, 2, 0]], np.uint8)


def test_evaluate_writes_a_page(tmp_path):
    write_raster(tmp_path / "pred.tif", PRED, nodata=255)
    write_raster(tmp_path / "truth.tif", TRUTH, nodata=0)
    args = ["evaluate", str(tmp_path / "pred.tif"), "--labels", str(tmp_path / "truth.tif")]
    result = runner.invoke(app, [*args, "--html", str(tmp_path / "scores.html")])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "scores.html").read_text())
    assert page.scripts == 0 and all(u.startswith("data:") for u in page.urls)
    assert page.headings[1:4] == ["Scores", "Confusion matrix", "Area-adjusted estimates (ha)"]
    assert [alt for alt, _ in page.images] == ["confusion"]
    # two overall accuracies (0.846 of the pixels; 0.829 area-weighted), each named, and the
    # caveat the terminal shows is on the page too
    pixels = "overall accuracy (of the labelled pixels)"
    weighted = "overall accuracy, area-weighted (map classes weighted by their mapped area)"
    assert rows_starting(page, pixels)[0] == [pixels, "0.846"]
    assert rows_starting(page, weighted)[0] == [weighted, "0.829"]
    assert not rows_starting(page, "overall accuracy")
    assert "valid for a probability sample only" in (tmp_path / "scores.html").read_text()
    assert rows_starting(page, "1")[0] == ["1", "1", "0.714", "0.833", "0.714", "1.000", "5"]
    # The confusion counts, rows = labels (checked by hand in test_evaluate)
    assert [r[1:] for r in page.rows if r and r[0] in ("1", "2") and len(r) == 3] == [
        ["5", "0"],
        ["2", "6"],
    ]
    again = runner.invoke(app, [*args, "--html", str(tmp_path / "scores.html")])
    assert again.exit_code == 1 and "exists already; pass --overwrite" in again.output
