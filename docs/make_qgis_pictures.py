"""The README pictures of the tiles index and of suggest's windows as QGIS draws them, with the
styles scratchsat writes (PyQGIS, offscreen):

    /usr/bin/python3 docs/make_qgis_pictures.py SCENE.tif TILES/index.geojson NEXT.gpkg docs/

(Debian's python3-qgis.) The scene is drawn with its own .qml (true colour from ``stack``), the
index with ``index.qml`` (outlines by split) and the suggestions with the style stored in the
GeoPackage (outlines labelled by rank): nothing is restyled here, so the pictures show what a
user sees on opening the files.
"""

import os
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor, QImage, QPainter  # noqa: E402

scene, index, suggestions, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
app = QgsApplication([], False)
app.initQgis()
raster = QgsRasterLayer(scene, "scene")
patches = QgsVectorLayer(index, "index")
windows = QgsVectorLayer(f"{suggestions}|layername=suggestions", "suggestions")
for layer in (raster, patches, windows):
    assert layer.isValid(), layer.name()


def render(layers, path: Path, width: int = 900) -> None:
    extent = raster.extent()
    height = int(width * extent.height() / extent.width())
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(255, 255, 255))
    image = QImage(QSize(width, height), QImage.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.start()
    job.waitForFinished()
    painter.end()
    image.save(str(path))
    print(f"wrote {path}")


render([patches, raster], out / "qgis-index.png")
render([windows, raster], out / "qgis-suggestions.png")
app.exitQgis()
