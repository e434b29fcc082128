"""The "Teeth" section of the module panel: table with flags, corrections, undo, Segment Editor.

GUI only (imports Qt): the widget imports this file inside ``setup``. The work is done by the
logic (``applyCorrection``, ``undoCorrection``, ``teethTable``); this class turns selections
into those calls and keeps the table in step with the segmentation, including edits made in
the Segment Editor (refreshed once they settle).
"""

import logging

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from .SegmentDisplay import INPUT_ROLE
from .VertexLabels import FDI_ARRAY_NAME

logger = logging.getLogger(__name__)

FLAG_BACKGROUND = (255, 214, 153)
COLUMNS = (_("FDI"), _("Name"), _("Volume (mm³) / area (mm²)"), _("Flag"))


class TeethPanel(VTKObservationMixin):
    """Drives ``ui.teethTableWidget`` and the correction buttons for the current segmentation.

    Args:
        ui: the module's ``childWidgetVariables``.
        logic: the module logic.
        parameterNode: callable returning the current wrapped parameter node (or None).
    """

    def __init__(self, ui, logic, parameterNode):
        VTKObservationMixin.__init__(self)
        self.ui, self.logic, self._parameterNode = ui, logic, parameterNode
        self._node = None
        self._rows = []
        self._timer = qt.QTimer()  # one refresh after a burst of edits
        self._timer.setSingleShot(True)
        self._timer.setInterval(500)
        self._timer.connect("timeout()", self.refresh)
        table = ui.teethTableWidget
        table.setColumnCount(len(COLUMNS))
        table.setHorizontalHeaderLabels(list(COLUMNS))
        table.horizontalHeader().setStretchLastSection(True)
        table.connect("itemSelectionChanged()", self.onSelection)
        ui.reassignButton.connect("clicked(bool)", self.onReassign)
        ui.swapButton.connect("clicked(bool)", lambda: self._correctPair("swap"))
        ui.mergeButton.connect("clicked(bool)", lambda: self._correctPair("merge"))
        ui.deleteButton.connect("clicked(bool)", self.onDelete)
        ui.shiftDownButton.connect("clicked(bool)", lambda: self._renumber(-1))
        ui.shiftUpButton.connect("clicked(bool)", lambda: self._renumber(+1))
        ui.undoButton.connect("clicked(bool)", self.onUndo)
        ui.segmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)
        ui.regionROISelector.setMRMLScene(slicer.mrmlScene)
        ui.regionROISelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.onSelection())
        ui.relabelRegionButton.connect("clicked(bool)", self.onRelabelRegion)
        ui.toothModelsButton.connect("clicked(bool)", self.onToothModels)
        ui.clickPointsSelector.setMRMLScene(slicer.mrmlScene)
        ui.clickPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.onSelection())
        for text, tool in ((_("Add missed tooth"), "add"), (_("Split two teeth"), "split"),
                           (_("Grow selected tooth"), "refine"), (_("Paint region label"), "brush"),
                           (_("Add missed tooth with SAM (scans)"), "sam")):
            ui.clickToolComboBox.addItem(text, tool)
        ui.clickToolComboBox.connect("currentIndexChanged(int)", lambda index: self.onSelection())
        ui.applyClickToolButton.connect("clicked(bool)", self.onApplyClickTool)

    def cleanup(self):
        self._timer.stop()
        self.removeObservers()

    def subject(self):
        """The segmentation being corrected, else the input scan once it carries FDI labels."""
        p = self._parameterNode()
        if p is None:
            return None
        if p.segmentation is not None:
            return p.segmentation
        scan = p.inputNode
        if scan is not None and scan.IsA("vtkMRMLModelNode") and scan.GetPolyData() is not None \
                and scan.GetPolyData().GetPointData().GetArray(FDI_ARRAY_NAME) is not None:
            return scan
        return None

    def update(self):
        """Buttons that depend on the parameter node; the table when the subject changed."""
        self.ui.undoButton.enabled = self.logic.canUndoCorrection(self.subject())
        self.ui.segmentEditorButton.enabled = self._segmentation() is not None
        if self.subject() is not self._node:
            self.refresh()

    def refresh(self):
        self._timer.stop()
        node = self.subject()
        if node is not self._node:
            for event in (vtk.vtkCommand.ModifiedEvent, slicer.vtkSegmentation.SegmentAdded,
                          slicer.vtkSegmentation.SegmentRemoved, slicer.vtkSegmentation.SegmentModified,
                          slicer.vtkSegmentation.RepresentationModified):
                if self._node is not None:
                    self.removeObserver(self._node, event, self._onNodeModified)
                if node is not None:
                    self.addObserver(node, event, self._onNodeModified)
            self._node = node
        try:
            self._rows = self.logic.teethTable(node) if node is not None else []
        except Exception as exc:  # noqa: BLE001 (an odd segmentation must not break the panel)
            logger.error("ToothMCL teeth table: %s", exc)
            self._rows = []
        table = self.ui.teethTableWidget
        table.setRowCount(len(self._rows))
        for r, row in enumerate(self._rows):
            for c, text in enumerate((str(row.fdi or "?"), row.name, f"{row.size:.0f} {row.unit}", row.flagText)):
                item = qt.QTableWidgetItem(text)
                if row.flags:
                    item.setBackground(qt.QColor(*FLAG_BACKGROUND))
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        self.ui.undoButton.enabled = self.logic.canUndoCorrection(node)
        self.onSelection()

    def _onNodeModified(self, caller=None, event=None):
        self._timer.start()  # restarts while edits keep coming

    def _segmentation(self):
        p = self._parameterNode()
        return p.segmentation if p is not None else None

    def _isScan(self):
        return self._node is not None and self._node.IsA("vtkMRMLModelNode")

    def _selected(self):
        if self._node is None:
            return []
        rows = sorted({index.row() for index in self.ui.teethTableWidget.selectedIndexes()})
        return [self._rows[r] for r in rows if r < len(self._rows)]

    def onSelection(self):
        from ToothMCLCore import fdi

        selected = self._selected()
        one = len(selected) == 1 and selected[0].fdi > 0
        two = len(selected) == 2 and all(row.fdi > 0 for row in selected)
        self.ui.reassignComboBox.clear()
        if one and fdi.is_valid_fdi(selected[0].fdi):
            used = {row.fdi for row in self._rows}
            jaw = fdi.tooth(selected[0].fdi).arch
            for number in fdi.teeth_of_jaw(jaw) + fdi.teeth_of_jaw(jaw, primary=True):
                if number not in used:
                    self.ui.reassignComboBox.addItem(fdi.tooth(number).label, number)
        self.ui.reassignButton.enabled = one and self.ui.reassignComboBox.count > 0
        self.ui.reassignComboBox.enabled = self.ui.reassignButton.enabled
        self.ui.deleteButton.enabled = one
        self.ui.shiftDownButton.enabled = self.ui.shiftUpButton.enabled = one and fdi.is_valid_fdi(selected[0].fdi)
        self.ui.swapButton.enabled = self.ui.mergeButton.enabled = two
        self._updateRegionTools()

    def _updateRegionTools(self):
        """Scans only: the region label choices (gingiva + the jaw's teeth) and the buttons."""
        from ToothMCLCore import fdi

        scan = self._isScan()
        for widget in (self.ui.regionROISelector, self.ui.regionLabelComboBox, self.ui.toothModelsButton):
            widget.enabled = scan
        for widget in (self.ui.clickPointsSelector, self.ui.clickToolComboBox):  # CBCT: split and grow
            widget.enabled = self._node is not None
        if scan and self.ui.regionLabelComboBox.count == 0:
            self.ui.regionLabelComboBox.addItem(_("gingiva"), 0)
            jaw = self._node.GetAttribute("ToothMCL.jaw")
            jaws = [jaw] if jaw in fdi.JAWS else list(fdi.JAWS)
            for number in [n for j in jaws for n in fdi.teeth_of_jaw(j)]:
                self.ui.regionLabelComboBox.addItem(fdi.tooth(number).label, number)
        elif not scan:
            self.ui.regionLabelComboBox.clear()
        self.ui.relabelRegionButton.enabled = scan and self.ui.regionROISelector.currentNode() is not None
        needsTooth = self.ui.clickToolComboBox.currentData == "refine"
        tool = self.ui.clickToolComboBox.currentData
        self.ui.applyClickToolButton.enabled = (self._node is not None and (scan or tool in ("add", "split", "refine"))
                                                and self.ui.clickPointsSelector.currentNode() is not None
                                                and (not needsTooth or len(self._selected()) == 1))

    def _correct(self, op, **kwargs):
        try:
            with slicer.util.tryWithErrorDisplay(_("The correction could not be applied."), waitCursor=True):
                self.logic.applyCorrection(self.subject(), op, **kwargs)
        finally:
            self.refresh()

    def onRelabelRegion(self):
        scan, roi = self.subject(), self.ui.regionROISelector.currentNode()
        try:
            with slicer.util.tryWithErrorDisplay(_("The region could not be relabelled."), waitCursor=True):
                vertices = self.logic.verticesInROI(scan, roi)
                self.logic.relabelVertices(scan, vertices, int(self.ui.regionLabelComboBox.currentData))
        finally:
            self.refresh()

    def onApplyClickTool(self):
        scan, points = self.subject(), self.ui.clickPointsSelector.currentNode()
        tool = self.ui.clickToolComboBox.currentData
        selected = self._selected()
        try:
            with slicer.util.tryWithErrorDisplay(_("The clicks could not be applied."), waitCursor=True):
                self.logic.applyClickTool(scan, tool, points,
                                          tooth=selected[0].fdi if tool == "refine" and selected else None,
                                          value=int(self.ui.regionLabelComboBox.currentData) if tool == "brush" else None)
                points.RemoveAllControlPoints()  # used: the next tool starts from new clicks
        finally:
            self.refresh()

    def onToothModels(self):
        with slicer.util.tryWithErrorDisplay(_("The tooth models could not be made."), waitCursor=True):
            self.logic.createToothModels(self.subject())

    def onReassign(self):
        (row,) = self._selected()
        self._correct("reassign", tooth=row.fdi, target=int(self.ui.reassignComboBox.currentData))

    def _correctPair(self, op):
        first, second = self._selected()
        if op == "merge":  # the smaller segment (a fragment) goes into the larger one
            first, second = sorted((first, second), key=lambda row: row.size)
        self._correct(op, tooth=first.fdi, target=second.fdi)

    def onDelete(self):
        (row,) = self._selected()
        self._correct("delete", tooth=row.fdi)

    def _renumber(self, step):
        (row,) = self._selected()
        self._correct("renumber", quadrant=row.fdi // 10, step=step)

    def onUndo(self):
        try:
            with slicer.util.tryWithErrorDisplay(_("Nothing could be undone."), waitCursor=True):
                self.logic.undoCorrection(self.subject())
        finally:
            self.refresh()

    def onOpenSegmentEditor(self):
        segmentation = self._segmentation()
        source = segmentation.GetNodeReference(INPUT_ROLE)
        with slicer.util.tryWithErrorDisplay(_("The Segment Editor could not be opened.")):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(segmentation)
            if source is not None and source.IsA("vtkMRMLScalarVolumeNode"):
                setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
                setSource(source)
