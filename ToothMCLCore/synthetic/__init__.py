"""Synthetic dental phantoms: paired CBCT volumes, label maps and intraoral scans.

Deterministic for a seed, built from one shared anatomical layout (:class:`DentalLayout`), so
the CBCT teeth and the IOS crowns of a seed coincide in RAS. Used by tests, ``toothmcl demo``
and CPU training of small demo models. scikit-image is needed for the intraoral scans only.

Example::

    from ToothMCLCore.synthetic import make_phantom
    case = make_phantom(0, spacing=0.8)   # ~2 s: CBCT 0.3 s, two 0.4 mm scans ~1 s each
    case.image.array.shape, case.labels.array.shape, case.ios_upper.n_vertices
"""

from .cbct import INTENSITY, make_cbct_phantom, orientation_matrix, phantom_grid
from .geometry import TOOTH_DIMENSIONS, DentalLayout, PlacedTooth, make_layout
from .ios import make_ios_phantom
from .phantom import Phantom, make_phantom

__all__ = [
    "INTENSITY",
    "TOOTH_DIMENSIONS",
    "DentalLayout",
    "Phantom",
    "PlacedTooth",
    "make_cbct_phantom",
    "make_ios_phantom",
    "make_layout",
    "make_phantom",
    "orientation_matrix",
    "phantom_grid",
]
