"""CBCT click tools on phantoms (no real dental CBCT with tooth labels is reachable from here)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.interactive.cbct_tools import split_tooth


@pytest.fixture(scope="module")
def phantom():
    from ToothMCLCore.synthetic import make_cbct_phantom

    image, truth = make_cbct_phantom(21, spacing=0.8)
    return image, truth.array.astype(np.int64)


def inside_point(image, mask: np.ndarray) -> np.ndarray:
    """RAS of the voxel deepest inside ``mask`` (a click in the middle of a tooth)."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]  # the image border is outside
    k, j, i = np.unravel_index(np.argmax(depth), mask.shape)
    return (image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


def merged(truth: np.ndarray, a: int, b: int) -> np.ndarray:
    """Teeth a and b as one segment, the gap between them filled as a model that merges them would."""
    both = np.isin(truth, [a, b])
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(both))
    bridge = np.zeros_like(both)
    bridge[box] = ndimage.binary_closing(both[box], structure=np.ones((3, 3, 3)), iterations=1) & (truth[box] == 0)
    out = truth.copy()
    out[both | bridge] = a
    return out


def test_two_merged_neighbours_are_split_and_numbered_with_two_clicks(phantom):
    """For every pair of neighbouring teeth of the phantom, merged into one segment with the gap
    between them filled, one click in each gives both teeth back at Dice >= 0.9, each with its number."""
    image, truth = phantom
    scores = []
    for jaw in fdi.JAWS:
        teeth = [t for t in fdi.teeth_of_jaw(jaw) if np.any(truth == t)]
        for a, b in itertools.pairwise(teeth):
            if abs(fdi.tooth(a).arch_index - fdi.tooth(b).arch_index) > 1 and fdi.tooth(a).side == fdi.tooth(b).side:
                continue  # a tooth missing between them: not neighbours
            damaged = merged(truth, a, b)
            fixed, record = split_tooth(image, damaged, inside_point(image, truth == a), inside_point(image, truth == b))
            for t in (a, b):
                got, want = fixed == t, truth == t
                scores.append(2 * np.count_nonzero(got & want) / (np.count_nonzero(got) + np.count_nonzero(want)))
            assert sorted(record.labels) == sorted((a, b)) and record.unit == "voxels"
            assert record.to_operation()["voxels"] == np.count_nonzero(fixed != damaged)
            assert np.array_equal(fixed[~np.isin(damaged, [a])], damaged[~np.isin(damaged, [a])])
    assert len(scores) >= 40 and min(scores) >= 0.9, sorted(scores)[:5]


def test_bad_split_clicks_are_refused_and_change_nothing(phantom):
    """A click outside the image, on background, or in two different teeth gets a message saying
    what to do; the labels stay as they were."""
    image, truth = phantom
    before = truth.copy()
    in_11, in_21 = inside_point(image, truth == 11), inside_point(image, truth == 21)
    background = (image.geometry.ijk_to_ras @ np.array([0, 0, 0, 1.0]))[:3]
    outside = background - 50.0
    with pytest.raises(InvalidInputError, match="outside the image"):
        split_tooth(image, truth, outside, in_11)
    with pytest.raises(InvalidInputError, match="not on background"):
        split_tooth(image, truth, background, in_11)
    with pytest.raises(InvalidInputError, match="two different teeth"):
        split_tooth(image, truth, in_11, in_21)
    assert np.array_equal(truth, before)


@pytest.mark.parametrize("with_model", [False, True])
def test_an_eroded_tooth_boundary_is_fixed_with_at_most_three_clicks(with_model, request):
    """Every tooth of another phantom loses its outer voxel layer (Dice about 0.70); refine clicks at
    the middle of the largest error (3 at most) bring >= 85 % of teeth back to Dice >= 0.9 with the
    intensity alone (measured 94 %, mean 0.96) and >= 97 % with the model's tooth probability too
    (measured on all 31: 100 %, mean 0.98; every sixth tooth here); voxels far from the tooth never
    change."""
    from ToothMCLCore.interactive.cbct_tools import refine_tooth
    from ToothMCLCore.synthetic import make_cbct_phantom

    model = request.getfixturevalue("cbct_model") if with_model else None

    image, truth = make_cbct_phantom(5, spacing=0.8)
    truth = truth.array.astype(np.int64)
    scores = []
    teeth = fdi.present_teeth(np.unique(truth))
    # with the model every click also runs a network window: a sixth of the teeth keeps CI short
    for tooth in teeth[::6] if with_model else teeth:
        mine = truth == tooth
        labels = np.where(mine & ~ndimage.binary_erosion(mine), 0, truth)
        far = ndimage.distance_transform_edt(~mine) > 8
        for _ in range(3):
            missed, extra = mine & (labels != tooth), ~mine & (labels == tooth)
            error = missed if missed.sum() >= extra.sum() else extra
            if error.sum() < 5:
                break
            parts, _ = ndimage.label(error)
            click = inside_point(image, parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1)
            before = labels
            labels, record = refine_tooth(image, labels, tooth, model=model,
                                          **{"positive" if error is missed else "negative": [click]})
            assert record.tool == "refine" and np.array_equal(labels[far], before[far])
        got = labels == tooth
        scores.append(2 * np.count_nonzero(got & mine) / (got.sum() + mine.sum()))
    scores = np.array(scores)
    floor, mean, count = (0.97, 0.97, 5) if with_model else (0.85, 0.93, 25)
    assert len(scores) >= count and np.mean(scores >= 0.9) >= floor and scores.mean() >= mean, scores


@pytest.fixture(scope="module")
def cbct_model():
    from ToothMCLCore.inference.cbct import CBCTPredictor

    return CBCTPredictor(device="cpu")  # the shipped default model, as the module loads it


def fix_with_clicks(image, labels, truth, tooth, number, clicks_left):
    """Refine clicks at the middle of the largest error of ``number`` against ``truth == tooth``."""
    from ToothMCLCore.interactive.cbct_tools import refine_tooth

    mine = truth == tooth
    for _ in range(clicks_left):
        got = labels == number
        if 2 * np.count_nonzero(got & mine) / (got.sum() + mine.sum()) >= 0.9:
            break
        missed, extra = mine & ~got, got & ~mine
        error = missed if missed.sum() >= extra.sum() else extra
        parts, _ = ndimage.label(error)
        click = inside_point(image, parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1)
        labels, _ = refine_tooth(image, labels, number, **{"positive" if error is missed else "negative": [click]})
    return labels


def test_a_missed_tooth_is_added_with_one_click_and_numbered_by_arch_order(phantom, cbct_model):
    """A tooth erased from the segmentation comes back where the user clicks: the model runs on a
    window around the click, the tooth under it is added with the number its place in the arch
    calls for, and at most two refine clicks bring it to Dice >= 0.9 (measured on all 31 teeth of
    this phantom: 100 %, 81 % with the add click alone, every number right; on phantom seed 5:
    97 %). Eight teeth across the four quadrants are checked here; other teeth never change."""
    from ToothMCLCore.interactive.cbct_tools import add_tooth

    image, truth = phantom
    results = {}
    for tooth in (11, 16, 23, 27, 31, 35, 44, 47):
        labels = np.where(truth == tooth, 0, truth)
        added, record = add_tooth(image, labels, inside_point(image, truth == tooth), cbct_model)
        assert record.tool == "add" and record.unit == "voxels" and record.labels == (record.label,)
        assert record.params["model"] == cbct_model.card.name
        assert np.array_equal(added[labels != 0], labels[labels != 0])  # no other tooth moves
        fixed = fix_with_clicks(image, added, truth, tooth, record.label, 2)
        got, want = fixed == record.label, truth == tooth
        results[tooth] = (record.label, round(2 * np.count_nonzero(got & want) / (got.sum() + want.sum()), 3))
    assert all(number == tooth for tooth, (number, _) in results.items()), results
    assert sum(d >= 0.9 for _, d in results.values()) >= 7, results


def test_bad_add_clicks_are_refused_and_change_nothing(phantom, cbct_model):
    """Without a model, on a tooth that is already there, or where the model sees no tooth, the add
    tool says what to do and the labels stay as they were."""
    from ToothMCLCore.interactive.cbct_tools import add_tooth

    image, truth = phantom
    labels = np.where(truth == 36, 0, truth)
    before = labels.copy()
    in_36, in_11 = inside_point(image, truth == 36), inside_point(image, truth == 11)
    corner = (image.geometry.ijk_to_ras @ np.array([1, 1, 1, 1.0]))[:3]
    with pytest.raises(InvalidInputError, match="none is loaded"):
        add_tooth(image, labels, in_36, None)
    with pytest.raises(InvalidInputError, match="already segmented"):
        add_tooth(image, labels, in_11, cbct_model)
    with pytest.raises(InvalidInputError, match="sees no missed tooth"):
        add_tooth(image, labels, corner, cbct_model)
    with pytest.raises(InvalidInputError, match="already segmented"):
        add_tooth(image, labels, in_36, cbct_model, number=11)
    assert np.array_equal(labels, before)


@pytest.fixture(scope="module")
def segmented_model(phantom):
    """(the default model after it segmented the phantom, the result)."""
    from ToothMCLCore.inference.cbct import CBCTPredictor

    model = CBCTPredictor(device="cpu", backend="torch")
    return model, model.predict(phantom[0])


def test_an_add_on_the_volume_just_segmented_reads_that_segmentation_instead_of_running_the_network(
        phantom, segmented_model):
    """After the model segmented this volume, an add click there costs no network window: the
    window comes from the segmentation's own probabilities (the record says so), and the tooth comes
    back with the same number and at least as well as when the network runs (measured on 8 teeth:
    mean Dice 0.923 against 0.900, in 0.05 s against 3 s); on another volume the network runs."""
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.interactive.cbct_tools import add_tooth
    from ToothMCLCore.types import Volume

    image, truth = phantom
    model, _ = segmented_model
    calls = []
    hook = model.net.register_forward_hook(lambda *_: calls.append(1))
    fresh = CBCTPredictor(device="cpu", backend="torch")
    for tooth in (16, 23, 35):
        labels = np.where(truth == tooth, 0, truth)
        click = inside_point(image, truth == tooth)
        kept, record = add_tooth(image, labels, click, model)
        ran, record_ran = add_tooth(image, labels, click, fresh)
        assert record.params["window"] == "segmentation" and record_ran.params["window"] == "network"
        assert record.label == record_ran.label == tooth
        want = truth == tooth
        dice = [2 * np.count_nonzero((a == tooth) & want) / (np.sum(a == tooth) + want.sum()) for a in (kept, ran)]
        assert dice[0] >= 0.88 and dice[0] >= dice[1] - 0.02, (tooth, dice)
    assert calls == []
    edited = image.array.copy()
    edited[0, 0, 0] += 1  # one voxel differs: another volume for the kept segmentation
    other = Volume(edited, image.geometry)
    _, record = add_tooth(other, np.where(truth == 16, 0, truth), inside_point(image, truth == 16), model)
    assert record.params["window"] == "network" and len(calls) == 1
    hook.remove()


def test_the_kept_teeth_saved_as_uint8_and_handed_to_a_new_predictor_serve_its_clicks(phantom, segmented_model):
    """What a saved scene keeps of a segmentation (the tooth probability in 1/255 steps and the
    tooth class, uint8) and hands to a newly loaded predictor serves its add click without a network
    window, adding the same voxels as the kept float16 teeth; the segmentation's result carries
    them; a predictor of other weights refuses them; the volume they belong to is recognised through
    a grid read back to 1e-14 mm but not through one moved by 0.01 mm."""
    from ToothMCLCore.errors import WeightsError
    from ToothMCLCore.inference.cbct import CBCTPredictor
    from ToothMCLCore.inference.cbct_cache import SegmentedTeeth
    from ToothMCLCore.interactive.cbct_tools import add_tooth
    from ToothMCLCore.types import Geometry, Volume

    image, truth = phantom
    model, result = segmented_model
    kept = result.segmented
    assert kept is model.segmented and kept.model_sha256 == model.card.sha256
    probability, tooth_class = kept.quantised()
    assert probability.dtype == tooth_class.dtype == np.uint8 and probability.max() > 200
    restored = SegmentedTeeth.from_quantised(kept.key, kept.geometry, probability, tooth_class, kept.model_sha256)
    new = CBCTPredictor(device="cpu", backend="torch")
    new.keep(restored)
    calls = []
    new.net.register_forward_hook(lambda *_: calls.append(1))
    labels = np.where(truth == 23, 0, truth)
    click = inside_point(image, truth == 23)
    mine, record = add_tooth(image, labels, click, new)
    theirs, _ = add_tooth(image, labels, click, model)
    assert record.params["window"] == "segmentation" and calls == [] and record.label == 23
    assert np.count_nonzero(mine != theirs) <= 0.01 * np.count_nonzero(theirs == 23)

    m = image.geometry.ijk_to_ras.copy()
    m[:3, 3] += 1e-14
    assert SegmentedTeeth(kept.key, kept.geometry, kept.tooth_probability, kept.tooth_class).serves(
        Volume(image.array, Geometry.from_ijk_to_ras(m)), click)
    m[:3, 3] += 0.01
    assert not kept.serves(Volume(image.array, Geometry.from_ijk_to_ras(m)), click)
    with pytest.raises(WeightsError, match="segment the volume again"):
        new.keep(SegmentedTeeth(kept.key, kept.geometry, probability, tooth_class, "0" * 64))
    with pytest.raises(InvalidInputError, match="segment the volume again"):
        SegmentedTeeth.from_quantised(kept.key, kept.geometry, probability, tooth_class[:-1])
