"""SOFTooth FDI order-aware Hungarian matching (Eq. 11-13) and the training objective (Eq. 14-15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ToothMCLCore import fdi
from ToothMCLCore.errors import ConfigError
from ToothMCLCore.models.softooth import FHMConfig, SOFToothLoss, assign_instances, faces_to_fdi, fhm_match
from ToothMCLCore.models.softooth.cmr import mask_centres
from ToothMCLCore.models.softooth.losses import sigmoid_focal_loss
from ToothMCLCore.models.softooth.matching import fhm_similarity, order_ranks

BIG = 20.0  # a logit that is as good as certain


def _class_of_position(p: int) -> int:
    """IOS class index of canonical arch position p (0 = right third molar .. 15 = left third molar)."""
    return 8 - p if p < 8 else p + 1


def _arch(positions, faces_per_tooth=3):
    """Ground truth of teeth at canonical positions: classes (L,), masks (L, N), centres (L, 3) mm."""
    s = np.linspace(-1, 1, 16)[list(positions)]
    centres = np.c_[-25 * s, 30 - 30 * s**2, np.zeros_like(s)]             # x = patient's right
    classes = np.array([_class_of_position(p) for p in positions])
    masks = np.kron(np.eye(len(positions)), np.ones(faces_per_tooth))
    return classes, masks, centres


def _logits(prob):
    prob = np.clip(np.asarray(prob, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(prob / (1 - prob))


def test_similarity_of_a_2x2_case_by_hand():
    """Dice^0.8 * p^0.2, minus 0.5 max(L1/S - 0.1, 0), minus 4 max(|r - t| - 0.15, 0)."""
    masks = np.array([[BIG, BIG, -BIG, -BIG], [0.0, 0.0, 0.0, 0.0]])         # sigma: 1 1 0 0 / .5 .5 .5 .5
    gt = np.array([[1, 1, 0, 0], [0, 0, 1, 1.0]])
    classes = np.array([1, 2])                                               # FDI 41 and 42
    cls = _logits([[0.5, 0.75, 0.25], [0.5, 0.5, 0.9]])
    gt_c = np.array([[0.1, 1.0, 0.0], [0.4, 0.8, 0.0]])                    # 42 lies right of 41
    # Dice with smoothing 1: (2*2+1)/(2+2+1) = 1, (0+1)/5 = 0.2, (2*1+1)/(2+2+1) = 0.6, 0.6
    base = np.array([[1.0**0.8 * 0.75**0.2, 0.2**0.8 * 0.25**0.2],
                     [0.6**0.8 * 0.5**0.2, 0.6**0.8 * 0.9**0.2]])
    off = FHMConfig(use_centre=False, use_order=False)
    np.testing.assert_allclose(fhm_similarity(masks, cls, gt_c, gt, classes, gt_c, 2.0, off), base, atol=1e-6)
    # predictions sit on the teeth: L1 between the teeth 0.5, / S 2.0 = 0.25 -> 0.5 * 0.15 = 0.075;
    # ranks: 41 is t = 1, 42 is t = 0, so a crossed pair costs 4 * (1 - 0.15) = 3.4
    penalty = np.array([[0.0, 0.075 + 3.4], [0.075 + 3.4, 0.0]])
    np.testing.assert_allclose(fhm_similarity(masks, cls, gt_c, gt, classes, gt_c, 2.0), base - penalty, atol=1e-6)


def test_centre_penalty_acts_beyond_the_drift_tolerance_only():
    """Within delta_drift * S_scene the similarity is untouched; beyond, it drops linearly."""
    gt, classes, gt_c = np.array([[1, 1.0]]), np.array([3]), np.zeros((1, 3))
    masks, cls = np.array([[BIG, BIG]]), _logits([[0.1, 0.1, 0.1, 0.8]])

    def sim(dx):
        return fhm_similarity(masks, cls, np.array([[dx, 0, 0]]), gt, classes, gt_c, 10.0)[0, 0]

    base = 0.8**0.2
    assert sim(0.0) == pytest.approx(base, abs=1e-6)
    assert sim(0.9) == pytest.approx(base, abs=1e-6)                         # 0.09 of the scene
    assert sim(3.0) == pytest.approx(base - 0.5 * (0.3 - 0.1), abs=1e-6)


def test_order_prior_turns_a_swapped_assignment_into_the_right_one():
    """Two predictions share an ambiguous mask and claim each other's class; their places on
    the arch put them back."""
    classes, gt, gt_c = _arch([5, 6, 7, 8])                                 # 43 42 41 31 (lower jaw)
    masks = np.where(gt > 0, BIG, -BIG)
    masks[[1, 2]] = np.where(gt[1] + gt[2] > 0, BIG, -BIG)                 # one mask over two teeth
    prob = np.full((4, 17), 0.05)
    prob[np.arange(4), classes] = 0.9
    prob[[1, 2]] = prob[[2, 1]]                                              # classes swapped
    args = (masks, _logits(prob), gt_c, gt, classes, gt_c, 1000.0)          # centre penalty idle
    rows, cols = fhm_match(*args, FHMConfig(use_order=False))
    assert list(cols[np.argsort(rows)]) == [0, 2, 1, 3]
    rows, cols = fhm_match(*args)
    assert list(cols[np.argsort(rows)]) == [0, 1, 2, 3]


def test_given_a_missing_tooth_the_remaining_teeth_keep_their_predictions():
    """With 44 missing, ranks of the teeth present shift nothing and every tooth is matched
    to the prediction on it, among predictions of uninformative class and junk queries."""
    rng = np.random.default_rng(0)
    positions = [p for p in range(16) if p != 4]
    classes, gt, gt_c = _arch(positions)
    r, t = order_ranks(gt_c, gt_c, classes)
    np.testing.assert_allclose(r, t, atol=1e-9)
    masks = np.where(gt > 0, 2.0, -2.0) + rng.normal(0, 1.0, gt.shape)     # noisy but right
    junk_masks = rng.normal(-3.0, 1.0, (5, gt.shape[1]))
    junk_centres = rng.uniform([-25, 0, 0], [25, 30, 0], (5, 3))
    cls = np.zeros((20, 17))                                                 # every class p = 0.5
    rows, cols = fhm_match(np.vstack([junk_masks, masks]), cls, np.vstack([junk_centres, gt_c]),
                           gt, classes, gt_c, 80.0)
    np.testing.assert_array_equal(rows, np.arange(5, 20))
    np.testing.assert_array_equal(cols, np.arange(15))


def test_fhm_config_rejects_unknown_keys_and_negative_weights():
    """Config dicts are strict: a typo or a negative weight is an error that names the key."""
    assert FHMConfig.from_dict({"alpha": 0.5}).alpha == 0.5
    with pytest.raises(ConfigError, match="lamda_order"):
        FHMConfig.from_dict({"lamda_order": 1.0})
    with pytest.raises(ConfigError, match="delta_order"):
        FHMConfig(delta_order=-1.0)


def _instances(positions, confident=0.8):
    """Inference outputs of instances at canonical positions: masks, class logits, objectness, centres."""
    classes, gt, centres = _arch(positions)
    prob = np.full((len(positions), 17), 0.02)
    prob[np.arange(len(positions)), classes] = confident
    return np.where(gt > 0, BIG, -BIG), _logits(prob), np.full(len(positions), 2.0), centres, classes


def test_inference_keeps_numbers_around_a_missing_tooth_and_an_unsure_third_molar():
    """34 missing, 38 barely recognised (p = 0.15 but 'no tooth' 0.02): 15 distinct right numbers."""
    positions = [p for p in range(16) if p != 11]
    masks, cls, obj, centres, classes = _instances(positions)
    cls[-1] = _logits(np.r_[0.02, np.full(16, 0.01)])
    cls[-1, 16] = _logits(0.15)
    numbers = assign_instances(masks, cls, obj, centres, "lower")
    expected = fdi.class_index_to_fdi(classes, "ios_lower")
    np.testing.assert_array_equal(numbers, expected)
    assert 34 not in numbers and 38 in numbers


def test_inference_drops_duplicates_and_empty_queries_and_fixes_a_swap():
    """A second mask of the same tooth and an empty query get no number; a swap is undone."""
    masks, cls, obj, centres, classes = _instances(range(16))
    cls[[3, 4]] = cls[[4, 3]]
    masks = np.vstack([masks, masks[7], np.full(masks.shape[1], -BIG)])
    cls = np.vstack([cls, cls[7], cls[7]])
    obj = np.r_[obj, 0.0, 3.0]
    centres = np.vstack([centres, centres[7], centres[7]])
    numbers = assign_instances(masks, cls, obj, centres, "upper")
    np.testing.assert_array_equal(numbers[:16], fdi.class_index_to_fdi(classes, "ios_upper"))
    assert list(numbers[16:]) == [0, 0]
    faces = faces_to_fdi(masks, numbers)
    np.testing.assert_array_equal(faces, np.repeat(numbers[:16], 3))


def test_without_the_order_prior_a_swap_the_network_believes_stays():
    """fdi_order=False (the paper's "w/o FHM" at inference) numbers by class probabilities alone:
    the swapped pair keeps the network's numbers, which the order prior corrects."""
    masks, cls, obj, centres, classes = _instances(range(16))
    cls[[3, 4]] = cls[[4, 3]]
    expected = fdi.class_index_to_fdi(classes, "ios_upper")
    with_order = assign_instances(masks, cls, obj, centres, "upper")
    without = assign_instances(masks, cls, obj, centres, "upper", fdi_order=False)
    np.testing.assert_array_equal(with_order, expected)
    np.testing.assert_array_equal(without[[3, 4]], expected[[4, 3]])
    np.testing.assert_array_equal(np.delete(without, [3, 4]), np.delete(expected, [3, 4]))


def test_focal_loss_by_hand():
    """-alpha_t (1 - p_t)^2 log p_t for logits 0 (target 1) and 2 (target 0)."""
    out = sigmoid_focal_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    p = 1 / (1 + math.exp(-2.0))
    expected = [0.25 * 0.5**2 * math.log(2.0), 0.75 * p**2 * -math.log(1 - p)]
    torch.testing.assert_close(out, torch.tensor(expected))


def test_class_loss_is_focal_sum_over_ground_truth_teeth():
    """One query matched to tooth class 1 of a 2-channel head: target [0, 1], sum over 1 tooth."""
    out = {
        "mask_logits": torch.tensor([[[BIG, -BIG]]]), "class_logits": torch.tensor([[[2.0, 0.0]]]),
        "objectness": torch.tensor([[0.0]]), "centres": torch.tensor([[[0.0, 0, 0]]]),
        "centre_faces": torch.tensor([[0]]), "face_centres": torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]]),
    }
    losses = SOFToothLoss()(out, torch.tensor([[1, 0]]))
    p = 1 / (1 + math.exp(-2.0))
    hand = 0.75 * p**2 * -math.log(1 - p) + 0.25 * 0.5**2 * math.log(2.0)
    assert float(losses["cls"]) == pytest.approx(hand, rel=1e-5)
    assert float(losses["objectness"]) == pytest.approx(math.log(2.0), rel=1e-5)  # IoU 1, logit 0


def _perfect_outputs(labels: torch.Tensor, positions: torch.Tensor, q: int = 6):
    """Network outputs that match every tooth exactly; spare queries say 'no tooth'."""
    b, n = labels.shape
    mask = torch.full((b, q, n), -BIG)
    cls = torch.full((b, q, 17), -BIG)
    cls[..., 0] = BIG
    obj = torch.full((b, q), -BIG)
    for i in range(b):
        for j, c in enumerate(labels[i].unique()[1:]):
            mask[i, j] = torch.where(labels[i] == c, BIG, -BIG)
            cls[i, j, 0], cls[i, j, c] = -BIG, BIG
            obj[i, j] = BIG
    centres, faces = mask_centres(mask, positions)
    return {"mask_logits": mask, "class_logits": cls, "objectness": obj, "centres": centres,
            "centre_faces": faces, "face_centres": positions}


def test_perfect_prediction_has_near_zero_main_losses():
    """Exact masks, classes and mask-derived centres: mask, centre, class and objectness ~ 0."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[0, 0, 3, 3, 3, 4, 4, 0, 11, 11], [0, 1, 1, 0, 0, 2, 2, 2, 0, 0]])
    positions = torch.rand(2, 10, 3, generator=g)
    losses = SOFToothLoss()(_perfect_outputs(labels, positions), labels)
    assert float(losses["matched"]) == 5
    for part in ("mask", "dice", "bce", "centre", "cls", "objectness"):
        assert float(losses[part]) < 1e-6, part
