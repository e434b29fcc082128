"""Click tools on a CBCT label map: split two merged teeth, move a tooth's boundary.

The label map is ``(K, J, I)`` FDI values on the volume's grid, clicks are RAS points (Slicer
markups). A tool returns new labels (the input is never changed) and an
:class:`~.common.Interaction` for the saved correction (``unit="voxels"``).

**Split.** Two neighbouring teeth segmented as one are one blob with a waist where they touch.
The blob is divided by a compact marker watershed (scikit-image) seeded at the two clicks, on the
negated distance to the blob's surface (in mm, the voxel spacing honoured). Measured on the
phantom's 29 neighbour pairs with their contact widened (a closing of 3 voxels): a plain
watershed lost 7 pairs (the larger tooth's basin floods the smaller one: Dice down to 0.005);
with ``compactness`` 1 none is lost (the worst pairs 0.87-0.89, the filled gap counted as
error), and with the contact as the phantom has it every pair is at Dice >= 0.9. An intensity
term (the darker contact between crowns) made it worse: the dark pulp inside each tooth draws
the cut, and a random walker on intensity lost 16 pairs. Both halves are then numbered by arch
order among the teeth of their jaw (:func:`~.common.numbers_by_arch`, RAS centres: x towards
the patient's right, y anterior).

**Refine.** A tooth whose boundary is off grows towards positive clicks and gives up what is
around negative ones: the voxels within ``REFINE_BORDER_MM`` of the tooth's border (and within
``radius_mm`` of the clicks) are divided again by a random walker on the CBCT's intensity
(scikit-image, Grady 2006) between the tooth (its voxels deeper inside, the positive clicks) and
its surroundings (the voxels farther out, the negative clicks); a voxel that leaves the tooth
takes the label of the nearest surrounding voxel. Enamel and dentine are much brighter than soft
tissue, so the walk stops at the tooth's surface. Two sides, one linear system: a walk with one
side per neighbouring label took 4-5x longer (5.4 s for a molar at 0.3 mm) and fixed fewer
teeth (phantom seed 5: 90 % of 31 eroded teeth back at Dice >= 0.9 within 3 clicks, now 94 %;
seed 21: 100 % both). Given the loaded model (``model=``; the Slicer module passes the one that
made the segmentation when it holds it), the network's tooth probability on one window around the
tooth is a second channel of the walk beside the intensity (``REFINE_NETWORK_WEIGHT`` 1): on
phantom seed 5, 100 % of the eroded teeth back at Dice >= 0.9 (mean 0.983, worst 0.953) against
94 % (0.962, 0.868) with the intensity alone; seed 21 unchanged (100 %, 0.989); a weight of 3 was
worse (teeth grown by one voxel: 0.981 against 0.994).

**Add.** A tooth the segmentation missed is added where the user clicks: the loaded model runs
on one window of its card's size centred on the click
(:meth:`~ToothMCLCore.inference.cbct.CBCTPredictor.window_probabilities`; the whole volume is not
segmented again), and the new tooth is the connected region under the click (or within
``ADD_SNAP_MM`` of it, for a click on the dark pulp) where the network's tooth probability (all
32 tooth classes together) is above one half, leaving every voxel that already has a label
alone. A tooth-sized window (30 x 24 x 24 mm) was tried first and failed: the demo model, trained
on whole dentitions, found the erased tooth at mean Dice 0.29 and numbered half of them in the
wrong jaw; with its card's window, 0.91 and every number right (phantom seed 21, 31 teeth). When the
model is the one that segmented this very volume (or was handed that segmentation's kept teeth,
as the Slicer module does after a scene reload), the window is read from that segmentation's
probabilities instead of running the network again (:mod:`ToothMCLCore.inference.cbct_cache`:
0.1 s instead of one window, 2.2 s for the paper-size network on 2 cores; the click's record says
which, ``"window": "segmentation"`` or ``"network"``); refine's network channel reads it the same
way. It is brought back onto
the volume's grid as a segmentation is (:func:`~ToothMCLCore.inference.cbct.restore_labels`) and
numbered by arch order among the teeth of its jaw (the jaw the network's own vote for the region
says; :func:`~.common.numbers_by_arch`), or takes the number the user gives.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import fdi
from ..errors import InvalidInputError
from ..types import Volume
from .common import Click, Interaction, numbers_by_arch, record, tooth_boundary_changes

#: skimage's watershed compactness: how much the distance from each click counts beside the depth
#: (see the module docstring)
COMPACTNESS = 1.0


def voxel_at(volume: Volume, ras) -> tuple[int, int, int]:
    """The ``(k, j, i)`` voxel under a RAS click.

    Raises:
        InvalidInputError: not a 3-D point, or outside the image.
    """
    p = np.asarray(ras, np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InvalidInputError(f"a click is a 3-D RAS point (got {ras!r})")
    ijk = (volume.geometry.ras_to_ijk @ np.r_[p, 1.0])[:3]
    i, j, k = (int(np.round(x)) for x in ijk)
    shape = volume.array.shape
    if not (0 <= k < shape[0] and 0 <= j < shape[1] and 0 <= i < shape[2]):
        raise InvalidInputError(f"the click at {np.round(p, 1).tolist()} mm is outside the image; click inside the "
                                "volume")
    return k, j, i


def _labels_on(volume: Volume, labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != volume.array.shape:
        raise InvalidInputError(f"labels have shape {lab.shape} but the volume {volume.array.shape}; use the label map "
                                "of this volume")
    return lab


def split_tooth(volume: Volume, labels, first_ras, second_ras) -> tuple[np.ndarray, Interaction]:
    """Two teeth labelled as one: one click in each (module docstring).

    Args:
        volume: the CBCT (intensities; its geometry places the clicks).
        labels: ``(K, J, I)`` FDI label map on the volume's grid.
        first_ras, second_ras: a point inside each tooth.

    Raises:
        InvalidInputError: labels not on the volume's grid, a click outside the image, on
            background or metal, or the two clicks on different teeth or the same voxel.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    lab = _labels_on(volume, labels)
    a, b = voxel_at(volume, first_ras), voxel_at(volume, second_ras)
    tooth = int(lab[a])
    if tooth == 0 or not fdi.is_valid_fdi(tooth) or int(lab[b]) == 0:
        raise InvalidInputError("both clicks of a split must be inside the tooth to split, not on background or metal")
    if int(lab[b]) != tooth:
        raise InvalidInputError(f"the clicks are in two different teeth ({tooth} and {int(lab[b])}); click twice in the "
                                "one segment that holds two teeth")
    if a == b:
        raise InvalidInputError("the two clicks of a split hit the same voxel; click once in each tooth")
    mask_full = lab == tooth
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(mask_full))
    mask = mask_full[box]
    spacing = np.asarray(volume.geometry.spacing)[::-1]  # (k, j, i) order
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(int(x - s.start) for x, s in zip(a, box))] = 1
    markers[tuple(int(x - s.start) for x, s in zip(b, box))] = 2
    parts = watershed(-depth, markers, mask=mask, compactness=COMPACTNESS)
    jaw = fdi.jaw_of(tooth)
    kept, kept_ras = _tooth_centres(volume, lab, jaw, exclude=tooth)
    offset = np.array([s.start for s in box], np.float64)
    half_kji = [np.asarray(c) + offset for c in ndimage.center_of_mass(mask, parts, [1, 2])]

    numbers = numbers_by_arch(jaw, kept, kept_ras, [_ras(volume, c) for c in half_kji])
    out = lab.copy()
    in_box = out[box]  # a view: the halves are written in place
    for value, number in zip((1, 2), numbers):
        in_box[parts == value] = number
    clicks = [Click("tooth", tuple(map(float, first_ras))), Click("tooth", tuple(map(float, second_ras)))]
    return out, record("split", clicks, numbers[0], numbers, int(np.count_nonzero(out != lab)), {"from": tooth},
                       unit="voxels")


#: the network's tooth probability above which a voxel of the click's window belongs to the added tooth
ADD_THRESHOLD = 0.5
#: a click that lands just off the network's tooth region (pulp, border) is moved this far at most (mm)
ADD_SNAP_MM = 2.0


def add_tooth(volume: Volume, labels, click_ras, model, number: int | None = None) -> tuple[np.ndarray, Interaction]:
    """Add the tooth under a click that the segmentation missed (module docstring).

    Args:
        volume: the CBCT (its geometry places the click).
        labels: ``(K, J, I)`` FDI label map on the volume's grid.
        click_ras: a point inside the missed tooth.
        model: the loaded CBCT predictor (anything with ``window_probabilities(volume, ras)``, and
            optionally ``segmented_window(volume, ras)``, e.g.
            :class:`~ToothMCLCore.inference.cbct.CBCTPredictor`); None is refused.
        number: the tooth's FDI number; None to number it by arch order.

    Raises:
        InvalidInputError: no model, labels not on the volume's grid, a click outside the image or
            on a voxel that already has a label, no tooth there for the network, ``number`` taken.
    """
    from scipy import ndimage

    from ..inference.cbct import resample_under, restore_labels

    if model is None or not hasattr(model, "window_probabilities"):
        raise InvalidInputError("adding a tooth runs the segmentation model around the click, and none is loaded: "
                                "segment the volume with a model first (or load one)")
    lab = _labels_on(volume, labels)
    at = voxel_at(volume, click_ras)
    if int(lab[at]) != 0:
        raise InvalidInputError(f"the click is on {_name(int(lab[at]))}, which is already segmented; click on the "
                                "missed tooth (use split or refine to change an existing one)")
    geometry, tooth_probability, tooth_class, source = _window_teeth(model, volume, click_ras)
    centre = tuple(int(s) // 2 for s in tooth_probability.shape)  # the click (the window is centred on it)
    taken = resample_under(Volume(lab, volume.geometry, volume.source), geometry, tooth_probability.shape,
                           is_label=True).array != 0
    candidate = (tooth_probability > ADD_THRESHOLD) & ~taken
    components, _ = ndimage.label(candidate)
    seed = centre
    if not candidate[centre]:
        # the click may sit on a dark pulp or a boundary voxel: take the nearest tooth region within reach
        near = np.zeros(candidate.shape, bool)
        near[centre] = True
        distance = ndimage.distance_transform_edt(~near, sampling=geometry.spacing[::-1])
        reach = candidate & (distance <= ADD_SNAP_MM)
        if not reach.any():
            raise InvalidInputError(f"the model sees no missed tooth at this click (tooth probability "
                                    f"{float(tooth_probability[centre]):.2f}); click inside the tooth, or paint it with "
                                    "the Segment Editor")
        seed = np.unravel_index(np.argmin(np.where(reach, distance, np.inf)), candidate.shape)
    region = components == components[seed]
    votes = np.bincount(tooth_class[region].astype(np.int64), minlength=fdi.num_classes("cbct"))
    guess = int(fdi.class_index_to_fdi(int(np.argmax(votes)), "cbct"))
    jaw = fdi.jaw_of(guess)
    if number is None:
        kept, kept_ras = _tooth_centres(volume, lab, jaw)
        centre_ijk = np.r_[np.asarray(ndimage.center_of_mass(region))[::-1], 1.0]
        new_centre = (geometry.ijk_to_ras @ centre_ijk)[:3]
        number = numbers_by_arch(jaw, kept, kept_ras, [new_centre])[0]
    else:
        number = int(number)
        if not fdi.is_valid_fdi(number):
            raise InvalidInputError(f"{number} is not an FDI tooth number (11-48)")
        if np.any(lab == number):
            raise InvalidInputError(f"tooth {number} is already segmented; give a free number or renumber first")
    restored = restore_labels(np.where(region, number, 0).astype(np.uint8), geometry, volume)
    out = lab.copy()
    new = (restored == number) & (lab == 0)
    if not new.any():
        raise InvalidInputError("the tooth the model found here is smaller than one voxel of this volume; paint it "
                                "with the Segment Editor")
    out[new] = number
    return out, record("add", [Click("tooth", tuple(map(float, click_ras)))], number, (number,),
                       int(np.count_nonzero(new)),
                       {"model": _model_name(model),
                        "tooth_probability_at_click": round(float(tooth_probability[centre]), 3),
                        "network_number": guess, "window": source}, unit="voxels")


def _tooth_centres(volume: Volume, lab: np.ndarray, jaw: str, exclude: int | None = None):
    """(teeth of ``jaw`` in ``lab`` but ``exclude``, their RAS centres), from every ``step``-th
    voxel along each axis so that about 2 M voxels are read (0.3 s less on a 0.3 mm scan; centres
    move by a fraction of a voxel, which the arch order never notices)."""
    from scipy import ndimage

    step = max(1, round((lab.size / 2e6) ** (1.0 / 3.0)))
    coarse = lab[::step, ::step, ::step]
    present = np.flatnonzero(np.bincount(coarse.ravel().astype(np.int64), minlength=256))
    kept = [int(t) for t in present if int(t) != exclude and fdi.is_valid_fdi(int(t)) and fdi.jaw_of(int(t)) == jaw]
    centres = ndimage.center_of_mass(coarse > 0, coarse, kept) if kept else []
    return kept, [_ras(volume, np.asarray(c) * step) for c in centres]


def _window_teeth(model, volume: Volume, centre_ras):
    """(the window's geometry, tooth probability (K, J, I), most probable tooth class (K, J, I),
    ``"segmentation"`` or ``"network"``) on the window of ``model`` centred on ``centre_ras``: read
    from the model's last segmentation of this volume when it kept one
    (:meth:`~ToothMCLCore.inference.cbct.CBCTPredictor.segmented_window`), else the network run there
    (``window_probabilities``)."""
    from ..inference.cbct_cache import teeth_of

    kept = getattr(model, "segmented_window", None)
    found = kept(volume, centre_ras) if kept is not None else None
    if found is not None:
        return (*found, "segmentation")
    geometry, probs = model.window_probabilities(volume, centre_ras)
    return (geometry, *teeth_of(probs), "network")


def _model_name(model) -> str:
    """The name of a CBCT predictor's model (its card's, or an nnU-Net folder's)."""
    return getattr(getattr(model, "card", None), "name", getattr(model, "name", ""))


def _name(value: int) -> str:
    return f"tooth {value}" if fdi.is_valid_fdi(value) else f"label {value}"


def _ras(volume: Volume, point_kji) -> np.ndarray:
    return (volume.geometry.ijk_to_ras @ np.array([point_kji[2], point_kji[1], point_kji[0], 1.0]))[:3]


#: a boundary fix reconsiders the tooth's border this far on both sides (mm)
REFINE_BORDER_MM = 1.5
#: the walk's linear solver tolerance: only which side wins matters (1e-3 took 2x longer for the same labels)
REFINE_TOL = 1e-2
#: how much the network's tooth probability counts beside the intensity in the walk (with a model)
REFINE_NETWORK_WEIGHT = 1.0
#: random-walker beta on intensities scaled to the tooth's 5-95 % range
REFINE_BETA = 250.0  # on phantoms (31 teeth, a 1-voxel rim eroded): beta 60 -> 65 %, 120 -> 94 %, 250 -> 100 %
#                      of teeth back at Dice >= 0.9 with 3 clicks; 500 the same


def _tooth_probability_on(volume: Volume, box, model, shape) -> tuple[np.ndarray, str]:
    """(the network's tooth probability (all tooth classes) on the voxels of ``box``, from one
    window of ``model`` centred on the box, ``"segmentation"`` or ``"network"``: where the window
    came from (:func:`_window_teeth`))."""
    from ..inference.cbct import _sub_geometry
    from ..preprocessing.cbct import resample_onto

    centre_kji = [(b.start + b.stop - 1) / 2.0 for b in box]
    geometry, tooth_probability, _, source = _window_teeth(model, volume, _ras(volume, centre_kji))
    window = Volume(tooth_probability.astype(np.float32), geometry)
    return resample_onto(window, _sub_geometry(volume.geometry, box), shape).array.astype(np.float64), source


def refine_tooth(volume: Volume, labels, tooth: int, positive=(), negative=(),
                 radius_mm: float = 3.0, model=None) -> tuple[np.ndarray, Interaction]:
    """Move ``tooth``'s boundary towards positive clicks and away from negative ones (module
    docstring). Only this tooth's boundary moves: a voxel joins it from the background (or from
    another tooth only near a positive click placed on that tooth), or leaves it. ``model``: the
    loaded CBCT predictor, whose tooth probability then guides the walk with the intensity; None
    for the intensity alone.

    Raises:
        InvalidInputError: labels not on the volume's grid, no click, a click outside the image,
            ``tooth`` not in the labels.
    """
    from scipy import ndimage
    from skimage.segmentation import random_walker

    lab = _labels_on(volume, labels)
    tooth = int(tooth)
    mine = lab == tooth
    if not mine.any():
        raise InvalidInputError(f"tooth {tooth} is not in this segmentation; pick one of its teeth")
    pos = [voxel_at(volume, p) for p in positive]
    neg = [voxel_at(volume, p) for p in negative]
    if not pos and not neg:
        raise InvalidInputError("give at least one click: where the tooth should reach (positive) or not (negative)")
    spacing = np.asarray(volume.geometry.spacing)[::-1]
    reach = int(np.ceil((max(REFINE_BORDER_MM, radius_mm) + 1.0) / spacing.min()))
    extent = np.array([(int(i.min()), int(i.max())) for i in np.nonzero(mine)])  # (3, 2)
    clicked = np.array(pos + neg).reshape(-1, 3)
    lo = np.maximum(np.minimum(extent[:, 0], clicked.min(0)) - reach, 0)
    hi = np.minimum(np.maximum(extent[:, 1], clicked.max(0)) + reach + 1, lab.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub, inside = lab[box].astype(np.int64), mine[box]
    # the band: near the tooth's border (both sides) or near a click
    to_border = np.where(inside, ndimage.distance_transform_edt(inside, sampling=spacing),
                         ndimage.distance_transform_edt(~inside, sampling=spacing))
    near_click = np.zeros(sub.shape, bool)
    for k, j, i in pos + neg:
        near_click[k - lo[0], j - lo[1], i - lo[2]] = True
    near_click = ndimage.distance_transform_edt(~near_click, sampling=spacing) <= radius_mm
    band = (to_border <= REFINE_BORDER_MM) | near_click
    # seeds: outside the band every voxel keeps its label; the walk is between the tooth (1) and
    # everything else (2): one linear system, where one per neighbouring label took 4-5x longer
    marks = np.zeros(sub.shape, np.int8)
    marks[~band] = np.where(inside[~band], 1, 2)
    other = np.where(inside, 0, sub)  # what a voxel that leaves the tooth becomes: its nearest seed's label
    for k, j, i in pos:
        marks[k - lo[0], j - lo[1], i - lo[2]] = 1
    for k, j, i in neg:
        value = int(lab[k, j, i])
        marks[k - lo[0], j - lo[1], i - lo[2]] = 2
        other[k - lo[0], j - lo[1], i - lo[2]] = 0 if value == tooth else value
    values = np.asarray(volume.array[box], np.float64)
    low, high = np.percentile(values[inside], [5, 95])  # the box holds the whole tooth
    scaled = (values - low) / max(high - low, 1e-6)
    data, channel_axis = scaled, None
    if model is not None:  # the network's tooth probability as a second channel of the walk
        probability, source = _tooth_probability_on(volume, box, model, sub.shape)
        data, channel_axis = np.stack([scaled, REFINE_NETWORK_WEIGHT * probability], axis=-1), -1
    with warnings.catch_warnings():  # probabilities a rounding error outside [0, 1]: only their argmax is used
        warnings.filterwarnings("ignore", message="The probability range is outside")
        walked = random_walker(data, marks, beta=REFINE_BETA, mode="cg_j", tol=REFINE_TOL, channel_axis=channel_axis)
    nearest = ndimage.distance_transform_edt(marks != 2, sampling=spacing, return_distances=False, return_indices=True)
    result = np.where(walked == 1, tooth, other[tuple(nearest)])
    may_join = sub == 0
    for k, j, i in pos:
        other = int(lab[k, j, i])
        if other not in (0, tooth):
            near = np.zeros(sub.shape, bool)
            near[k - lo[0], j - lo[1], i - lo[2]] = True
            may_join |= (sub == other) & (ndimage.distance_transform_edt(~near, sampling=spacing) <= radius_mm)
    change = tooth_boundary_changes(sub, result, tooth, band, may_join, grow=bool(pos), shrink=bool(neg))
    out = lab.copy()
    out_box = out[box]
    out_box[change] = result[change]
    clicks = [Click("positive", tuple(map(float, p))) for p in positive] + \
             [Click("negative", tuple(map(float, p))) for p in negative]
    params = {"radius_mm": radius_mm}
    if model is not None:
        params["model"], params["window"] = _model_name(model), source
    return out, record("refine", clicks, tooth, (tooth,), int(np.count_nonzero(out != lab)), params, unit="voxels")
