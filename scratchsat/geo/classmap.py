"""Class maps GIS tools read with a legend: colour table, class names and sidecar styles.

GeoTIFF has no place for class names, so they go where the tools look: a GDAL PAM sidecar
(``.aux.xml``: category names, a colour table up to the largest code and a raster attribute
table; QGIS 3.22 builds its legend from the first two, QGIS ≥ 3.30 also reads the table), a
QGIS style (``.qml``, loaded by QGIS as the layer's default style) and the file's own
``CLASSES`` metadata tag (JSON), which ``scratchsat evaluate`` reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ..errors import InputError


def class_dtype_and_nodata(codes: Sequence[int]) -> tuple[str, int]:
    """The class map's dtype and a nodata value that is not a class code: uint8 with 255
    (else 0) where the codes fit, else uint16 with 65535 (else 0, else the largest free
    value). Codes outside 0..65535 are refused (``tile`` refuses them first)."""
    used = {int(c) for c in codes}
    if min(used) < 0 or max(used) > 65535:
        raise InputError(
            f"class code {min(used) if min(used) < 0 else max(used)} does not fit a class "
            "map (0..65535); tile the labels again with codes in that range"
        )
    for dtype, top in (("uint8", 255), ("uint16", 65535)):
        if max(used) <= top:
            for nodata in (top, 0):
                if nodata not in used:
                    return dtype, nodata
    free = max(set(range(65535 - len(used), 65536)) - used)  # ≤ 255 codes: one is free
    return "uint16", free


def rgba(colour: str) -> tuple[int, int, int, int]:
    colour = colour.lstrip("#")
    return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16), 255)


def colormap(classes: Sequence[dict]) -> dict[int, tuple[int, int, int, int]]:
    return {int(c["code"]): rgba(c["colour"]) for c in classes}


def classes_tag(classes: Sequence[dict]) -> str:
    return json.dumps(
        [{"code": c["code"], "name": c["name"], "colour": c["colour"]} for c in classes]
    )


def read_classes_tag(tags: dict) -> list[dict] | None:
    text = tags.get("CLASSES")
    return json.loads(text) if text else None


UNUSED = (255, 255, 255, 0)  # colour-table entry of a code no class has: clear (white in legends)
CLASS_BAND = "predicted class"  # QGIS's legend header reads "Band 1: predicted class (Palette)"


def aux_xml(classes: Sequence[dict], nodata: int) -> str:
    """GDAL PAM for band 1: category names (indexed by value), a colour table that ends at the
    largest class code, and a thematic attribute table.

    GeoTIFF stores 2**bits colour entries (256 for uint8), and QGIS lists every entry in its
    legend, so the file's own table (kept for tools that read the file alone) would give 256
    legend lines. GDAL lets this table override it, and QGIS then lists the classes only (and
    any unused code below the largest, transparent)."""
    top = max(int(c["code"]) for c in classes)
    names = {int(c["code"]): c["name"] for c in classes}
    colours = colormap(classes)
    categories = "".join(
        f"        <Category>{escape(names.get(v, ''))}</Category>\n" for v in range(top + 1)
    )
    entries = "".join(
        '        <Entry c1="{}" c2="{}" c3="{}" c4="{}"/>\n'.format(*colours.get(v, UNUSED))
        for v in range(top + 1)
    )
    rows = "".join(
        f'        <Row index="{i}"><F>{c["code"]}</F><F>{escape(c["name"])}</F>'
        f"<F>{r}</F><F>{g}</F><F>{b}</F></Row>\n"
        for i, c in enumerate(classes)
        for r, g, b, _ in [rgba(c["colour"])]
    )
    fields = [("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    columns = "".join(
        f'        <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage>'
        "</FieldDefn>\n"
        for i, (n, t, u) in enumerate(fields)
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <Description>{CLASS_BAND}</Description>\n"
        f"    <NoDataValue>{nodata}</NoDataValue>\n"
        "    <ColorInterp>Palette</ColorInterp>\n"
        f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
        f"    <ColorTable>\n{entries}    </ColorTable>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{columns}{rows}    </GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


def qgis_style(classes: Sequence[dict]) -> str:
    """A QGIS paletted-renderer style with one legend entry per class."""
    entries = "".join(
        f'        <paletteEntry value="{c["code"]}" color="{c["colour"]}" alpha="255" '
        f"label={quoteattr(str(c['name']))}/>\n"
        for c in classes
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def band_style(band: int, low: float, high: float) -> str:
    """A QGIS style drawing one band in grey from ``low`` (black) to ``high`` (white): the
    default look of a many-band file of scores (probabilities, uncertainty), which QGIS would
    otherwise draw as an RGB mix of its first three bands."""
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
        f'    <rasterrenderer type="singlebandgray" grayBand="{band}" gradient="BlackToWhite" '
        'opacity="1" alphaBand="-1">\n'
        "      <contrastEnhancement>\n"
        f"        <minValue>{low}</minValue>\n        <maxValue>{high}</maxValue>\n"
        "        <algorithm>StretchToMinimumMaximum</algorithm>\n"
        "      </contrastEnhancement>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def rgb_style(bands: Sequence[int], stretch: Sequence[tuple[float, float]]) -> str:
    """A QGIS style drawing ``bands`` (red, green, blue; 1-based) in true colour, each
    stretched from its ``(low, high)`` (its 2nd and 98th percentiles)."""
    parts = []
    for colour, (low, high) in zip(("red", "green", "blue"), stretch, strict=True):
        parts.append(
            f"      <{colour}ContrastEnhancement>\n"
            f"        <minValue>{low}</minValue>\n        <maxValue>{high}</maxValue>\n"
            "        <algorithm>StretchToMinimumMaximum</algorithm>\n"
            f"      </{colour}ContrastEnhancement>\n"
        )
    red, green, blue = bands
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
        f'    <rasterrenderer type="multibandcolor" redBand="{red}" greenBand="{green}" '
        f'blueBand="{blue}" opacity="1" alphaBand="-1">\n'
        + "".join(parts)
        + "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def style_path(path: Path) -> Path:
    """Where QGIS looks for the default style of ``path``."""
    return path.with_suffix(".qml")


def sidecars(path: Path) -> dict[str, Path]:
    """Where the sidecars of ``path`` live."""
    return {"aux": path.with_name(path.name + ".aux.xml"), "qml": style_path(path)}


def sidecar_texts(classes: Sequence[dict], nodata: int) -> dict[str, str]:
    """The ``.aux.xml`` and ``.qml`` of a class map, keyed as in :func:`sidecars`."""
    return {"aux": aux_xml(classes, nodata), "qml": qgis_style(classes)}


def field_name(name: str) -> str:
    """A class name as part of an attribute name: letters, digits and underscores only, so GIS
    expressions need no quoting (``bare soil`` → ``bare_soil``)."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_").lower() or "class"


def class_fields(prefix: str, classes: Sequence) -> list[str]:
    """``prefix + field_name(class name)`` per class, made unique with the class code where
    two names reduce to the same field (``bare soil`` and ``bare-soil``)."""
    names = [field_name(c["name"] if isinstance(c, dict) else c.name) for c in classes]
    codes = [c["code"] if isinstance(c, dict) else c.code for c in classes]
    return [
        f"{prefix}{n}" if names.count(n) == 1 else f"{prefix}{n}_{code}"
        for n, code in zip(names, codes, strict=True)
    ]


def codes_lookup(classes: Sequence[dict], dtype: str) -> np.ndarray:
    """Class id → code, as an array indexable by ids."""
    return np.array([int(c["code"]) for c in classes], dtype=dtype)
