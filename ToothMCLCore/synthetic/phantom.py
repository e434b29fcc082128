"""One synthetic patient: CBCT, its labels and both intraoral scans from one layout."""

from __future__ import annotations

from dataclasses import dataclass

from ..types import SurfaceMesh, Volume
from .cbct import make_cbct_phantom
from .geometry import DentalLayout, make_layout
from .ios import make_ios_phantom


@dataclass
class Phantom:
    """A paired synthetic case.

    Attributes:
        image: CBCT, (K, J, I) float32 (see :mod:`.cbct` for the intensity model).
        labels: (K, J, I) uint8 FDI label map on the image's geometry (99 = metal).
        ios_upper: intraoral scan of the upper jaw (labels 1x/2x, 0 gingiva), or None.
        ios_lower: intraoral scan of the lower jaw (labels 3x/4x, 0 gingiva), or None.
        layout: the dentition both were drawn from (teeth, poses, arches).
    """

    image: Volume
    labels: Volume
    ios_upper: SurfaceMesh | None
    ios_lower: SurfaceMesh | None
    layout: DentalLayout

    @property
    def fdi_numbers(self) -> tuple[int, ...]:
        return self.layout.fdi_numbers


def make_phantom(seed: int = 0, *, spacing=(0.3, 0.3, 0.3), field_of_view_mm=None,
                 orientation="RAS", offset: float = 0.0, metal=False, noise_std: float = 40.0,
                 blur_mm: float = 0.35, missing=None, impacted=None, third_molars=None,
                 ios: bool = True, ios_resolution_mm: float = 0.4) -> Phantom:
    """A CBCT phantom and the intraoral scans of both jaws of the same synthetic patient.

    The CBCT arguments are those of :func:`~.cbct.make_cbct_phantom`; ``missing``,
    ``impacted`` and ``third_molars`` choose the layout (:func:`~.geometry.make_layout`)
    shared by all three; ``ios=False`` skips the scans (about 1 s each at 0.4 mm);
    ``ios_resolution_mm`` is their meshing step.
    """
    layout = make_layout(seed, missing=missing, impacted=impacted, third_molars=third_molars)
    image, labels = make_cbct_phantom(
        seed, spacing=spacing, field_of_view_mm=field_of_view_mm, orientation=orientation,
        offset=offset, metal=metal, noise_std=noise_std, blur_mm=blur_mm, layout=layout,
    )
    upper = lower = None
    if ios:
        upper = make_ios_phantom(seed, "upper", resolution_mm=ios_resolution_mm, layout=layout)
        lower = make_ios_phantom(seed, "lower", resolution_mm=ios_resolution_mm, layout=layout)
    return Phantom(image, labels, upper, lower, layout)
