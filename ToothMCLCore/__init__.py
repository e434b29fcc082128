"""ToothMCLCore: tooth segmentation and FDI numbering for CBCT volumes and intraoral scans.

A plain Python package (numpy/torch in, numpy/torch out) used by the ``toothmcl`` command line,
the 3D Slicer module and the training code. It never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"
