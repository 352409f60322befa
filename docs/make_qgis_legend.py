"""The README picture of QGIS's legend for a class map without its .qml (PyQGIS, offscreen):

    /usr/bin/python3 docs/make_qgis_legend.py PRED.tif docs/qgis_legend.png

(Debian's python3-qgis; remove PRED.qml first so QGIS builds the legend from the .aux.xml.)
"""

import os
import sys

os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import (
    QgsApplication,
    QgsLayerTreeModel,
    QgsLayoutExporter,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsPrintLayout,
    QgsProject,
    QgsRasterLayer,
    QgsUnitTypes,
)

app = QgsApplication([], False)
app.initQgis()
layer = QgsRasterLayer(sys.argv[1], "map.tif (no .qml)")
project = QgsProject.instance()
project.addMapLayer(layer)
node = project.layerTreeRoot().findLayer(layer.id())
model = QgsLayerTreeModel(project.layerTreeRoot())
print([n.data(0) for n in model.layerLegendNodes(node)])
layout = QgsPrintLayout(project)
layout.initializeDefaults()
page = layout.pageCollection().page(0)
page.setPageSize(QgsLayoutSize(290, 110, QgsUnitTypes.LayoutMillimeters))
m = QgsLayoutItemMap(layout)
m.attemptMove(QgsLayoutPoint(5, 5, QgsUnitTypes.LayoutMillimeters))
m.attemptResize(QgsLayoutSize(195, 100, QgsUnitTypes.LayoutMillimeters))
m.setExtent(layer.extent())
layout.addLayoutItem(m)
legend = QgsLayoutItemLegend(layout)
legend.setTitle("QGIS 3.22 legend")
legend.setLinkedMap(m)
legend.attemptMove(QgsLayoutPoint(203, 5, QgsUnitTypes.LayoutMillimeters))
layout.addLayoutItem(legend)
exporter = QgsLayoutExporter(layout)
s = QgsLayoutExporter.ImageExportSettings()
s.dpi = 110
print(exporter.exportToImage(sys.argv[2], s))
app.exitQgis()
