"""Helpers of the ToothMCLSegment module, one file per responsibility.

- ``VolumeConversion``: MRML nodes <-> ToothMCLCore ``Volume`` / ``SurfaceMesh``.
- ``Dependencies``: check and (after asking) install torch, MONAI, ...
- ``SegmentDisplay``: FDI label maps <-> segmentation nodes, provenance attributes.
- ``CorrectionCapture``: reassign / swap / merge / delete / renumber, undo, diff entries.
- ``TeethTable``: rows of teeth with flags for suspicious results.
- ``TeethPanel``: the table and correction buttons of the panel (Qt; imported by the widget only).
- ``VertexLabels``: per-vertex ``FDI`` array and colours of intraoral scans.
- ``SegmentationJob``: prediction on a worker thread, polled by the GUI.
- ``SegmentationLogic``: the GUI-free logic that ties them together.

Nothing here imports torch or ToothMCLCore at import time.
"""
