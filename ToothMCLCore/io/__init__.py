"""Reading volumes and writing label maps and Slicer segmentations, geometry kept in RAS.

Importing this package is cheap: SimpleITK and pynrrd are imported by the functions that use
them.
"""

from .segnrrd import read_seg_nrrd, write_seg_nrrd
from .volume import read_volume, write_labelmap, write_volume

__all__ = ["read_seg_nrrd", "read_volume", "write_labelmap", "write_seg_nrrd", "write_volume"]
