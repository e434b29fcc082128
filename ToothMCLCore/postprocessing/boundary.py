"""Re-decide tooth or gingiva next to the settled boundary with a learned mesh refiner (ours, not the papers').

After :func:`~ToothMCLCore.inference.ios.settle_and_number` almost every tooth-vs-gingiva error
on the real MeshSegNet jaws lies within a ring or two of the boundary (85-100 % of them on the
validation jaws). There the point network's probability is near 0.5, and the graph cut's
crease rule (:mod:`.surface`) cannot tell the papilla between two crowns, which the labels call
gingiva, from the crown beside it, nor a lower incisor's lingual face from the gum below it.
A small graph network (:class:`~ToothMCLCore.models.boundary_gnn.BoundaryGNN`) trained on the
training jaws reads, for each vertex, the network's tooth probability and its neighbours', the
settled labels around it, and the surface's shape (:data:`FEATURES`), passes messages over
four rings of the mesh, and re-decides the vertices within :data:`BAND_HOPS` edges of the
boundary. A vertex that becomes tooth takes the number of the tooth it touches (grown out ring
by ring from the teeth, the nearer tooth winning a tie: :func:`grow_numbers`; a vertex no tooth
reaches stays gingiva); one that becomes gingiva loses its number. Teeth are never renumbered
here; a sliver the refiner cuts off a tooth takes the number of the tooth it touches, or becomes
gingiva (:func:`drop_slivers`); and a tooth the refiner would leave with less than half
its vertices is left as it was (:func:`keep_every_tooth`).

**Triangles decide.** MeshSegNet's labels are drawn on triangles, and a vertex's label is the
vote of the triangles around it (the converter's rule,
:func:`~ToothMCLCore.io.public_datasets._common.vertex_votes`). After the per-vertex refiner,
about 70 % of the validation jaws' remaining errors were on vertices whose triangles the truth
splits between tooth and gingiva: the ring the drawn boundary runs through, where a vertex's
label depends on how many of its triangles lie on each side. A refiner whose card has
``arch_args["face_head"]`` also classifies every triangle (from its three vertices' states)
and is trained on the triangles' labels; a band vertex is then tooth when at least half of its
triangles are (:func:`face_vote`, the labels' rule for two classes; a vertex whose tooth
triangles belong to two teeth can be gingiva in the labels by plurality, which this vote does
not model).

The refiner is trained on one IOS model's probabilities (``training/train_boundary.py``) and
named by that model's card (``boundary_model``). It runs only on scans whose median edge length
lies in the range it was trained on (its card's ``preprocess["median_edge_mm"]``), because
every feature it reads is in millimetres and rings: a dense scan has a thin boundary ring of
its own and is left as settled (the provenance's ``boundary_refined`` is false, and the log
says why).

How it was chosen, on the validation jaws (4 patients, 7 jaws; the test split was read only after
each choice, never to make one): re-deciding the band by a per-vertex multilayer perceptron on
the same features, or by a gradient-boosted tree, gained about +0.006 in tooth vs gingiva; a
graph network reading three rings and re-deciding a band of two edges +0.013 / +0.014 (upper /
lower) through the whole pipeline (the first shipped version), four rings and a band of three
+0.015 / +0.016 (``ios_boundary_real_v1``), and the same with the face head (``..._v2``, shipped)
+0.018 / +0.019. Applying the refiner twice gained nothing; neither did 4-ring means of the
inputs with the jaw as an input (-0.002 on the validation band), nor the point network's own
32 features per vertex as inputs (+0.002, not worth tying the refiner to one network's
internals). The refiner is
mirror-symmetric: it sees each jaw and its mirror image (x -> -x; only the edges' x direction
changes) and averages the two, as the point network's mirror pass does, so a mirrored patient
keeps mirrored labels. Through the whole
pipeline (``ios_pt_real_v1``, 3 samplings with mirror passes), mean per-tooth Dice and tooth vs
gingiva, upper / lower:

==================  ===================  ===================  ====================  ====================
 split               Dice, settled        Dice, refined        TSA, settled          TSA, refined
==================  ===================  ===================  ====================  ====================
 validation (7)      0.934 / 0.937        0.956 / 0.961        0.956 / 0.949         0.974 / 0.968
 test (14)           0.945 / 0.918        0.965 / 0.938        0.958 / 0.947         0.976 / 0.962
==================  ===================  ===================  ====================  ====================

Every one of the 14 test jaws gained in Dice, and all but one in tooth vs gingiva (``23_lower``
0.9639 -> 0.9637). Against ``..._v1`` the face head gained 0.001 on each jaw on average: it
helped 8 test jaws, cost 5 up to 0.005, and left one as it was. Most changed vertices
become gingiva: the papillae between crowns and the rims the cut gave to the teeth.

``ios_boundary_real_v3`` was the same recipe trained on the mean of ``ios_pt_real_v2``'s and
``ios_pt_real_v1``'s probabilities (the default model, :class:`~ToothMCLCore.inference.ios.IOSPredictor`):
Dice 0.932 / 0.941 -> 0.955 / 0.967 and tooth vs gingiva 0.955 / 0.953 -> 0.976 / 0.974 on the
validation jaws; on the test split Dice 0.944 / 0.923 -> 0.965 / 0.942 and tooth vs gingiva
0.957 / 0.947 -> 0.974 / 0.963.

**Three seeds, averaged** (``ios_boundary_real_v4``, shipped; one file,
:class:`~ToothMCLCore.models.boundary_gnn.BoundaryBag`). Each refiner chooses its epoch on the
same seven validation jaws, so a single one is partly luck: two more seeds of v3's recipe gave
0.973 / 0.971 and 0.975 / 0.971 where v3 (seed 0) gave 0.976 / 0.974 (tooth vs gingiva through
the whole pipeline); the mean of the three logits beat each of them (0.977 / 0.974). Retrained
in one command (``training/train_boundary.py --seeds 0 1 2``): validation Dice 0.9581 / 0.9685,
tooth vs gingiva 0.9782 / 0.9742; on the test split, read once after the choice, Dice 0.967 /
0.944 and tooth vs gingiva 0.976 / 0.965 (up on 11 of the 14 jaws); the refiner's step takes
0.20 s per jaw instead of 0.08 s (about 5,000 vertices, 2 cores), out of about 2.6 s. Tried and
not shipped: a face head that also reads the triangle's own shape (its edges' creases and normal
cosines, its tilt and area) and the maximum and minimum of its corners' states
(``--face-geometry``): its single seeds were better on average (0.9758 / 0.9731 against 0.9745 /
0.9720), but the mean of three was 0.0005 worse on the upper validation jaws (0.9765 vs 0.9770)
and 0.002 better on the lower ones (0.9761 vs 0.9740), which failed the rule written before
(better on both jaws).

**Where the refiner stands** (out of fold, to choose without the noise of seven validation jaws:
three folds by patient over the 55 training and validation jaws, one seed, 60 epochs, no epoch
selection, tooth vs gingiva with the band re-decided, upper / lower). v4's recipe: 0.9711 /
0.9705 (``training/train_boundary.py --out-of-fold 3 --epochs 60 --seeds 0`` gives 0.9721 /
0.9705: its inputs come from the k-d tree neighbour search, the experiments' from the earlier
brute-force one, so differences under 0.001 are noise). No change tried since gains more than
0.001 on either jaw: the face geometry above 0.9716 / 0.9688 (so its validation gain was noise);
six rounds of messages instead of four 0.9707 / 0.9712; the nearest tooth's context as inputs
(depth below its top, absolute and relative to its height, distance from its axis over its
radius, distance to the next tooth, its type, the jaw) 0.9710 / 0.9707; a minimum cut over the
triangles after the refiner (their logits against a Potts term on shared edges, weighted by
length or by crease) 0.9713 / 0.9703 at its lightest and worse as it weighs more; a bias on the
logits of -0.5 to +0.5, 0.0003 at most. With half the training patients it falls to 0.9695 /
0.9692, so adding the seven validation jaws would gain about 0.0003. What is left lies on the
drawn boundary itself (85 % of the wrong vertices touch it): the lever is the point network's
probabilities, not this step. (The paper's exact Point Transformer as a third network made them
worse, not better: trained on the three networks' mean, this recipe's three seeds reached 0.969
on the validation jaws on average, against 0.974 on v4's.)
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from .surface import mesh_edges

logger = logging.getLogger(__name__)

#: vertices within this many edges of the settled boundary are re-decided (a refiner's card may
#: say otherwise: its ``preprocess["band_hops"]``, the band it was trained on)
BAND_HOPS = 3
#: hops counted out from the boundary; farther vertices all read ``_HOPS_CAP``
_HOPS_CAP = 4
#: the per-vertex inputs of the refiner, in column order
FEATURES = (
    "tooth_logit",           # log(p / (1 - p)) of the network's tooth probability p
    "tooth",                 # 1 where the settled labels say tooth
    "logit_ring1",           # mean tooth logit of the 1-ring neighbours
    "logit_ring2",           # ... of the 2-ring (the vertex itself included)
    "tooth_ring1",           # share of tooth among the 1-ring neighbours
    "tooth_ring2",           # ... among the 2-ring
    "logit_min_ring1",       # lowest and highest tooth logit among the 1-ring neighbours
    "logit_max_ring1",
    "convexity",             # mean over the incident edges of (n_j - n_i).(x_j - x_i) / |x_j - x_i|^2, 1/mm
    "convexity_min",         # the most concave incident edge
    "convexity_ring1",       # mean convexity of the 1-ring neighbours
    "normal_occlusal",       # normal's component along the occlusal axis (canonical +z)
    "height_over_ring2",     # z minus the mean z of the 2-ring, mm
    "face_area_max",         # largest incident triangle, mm^2
    "face_area_sum",         # all incident triangles, mm^2
    "faces",                 # number of incident triangles
    "edge_length",           # mean incident edge length, mm
    "hops",                  # edges to the settled boundary, signed: + on tooth, - on gingiva, capped at 4
)
#: logits of probabilities this close to 0 or 1 are clipped
_EPS = 1e-5


def check_refiner_card(card) -> None:
    """Raise WeightsError unless a refiner's card reads this module's :data:`FEATURES` in order, gives
    its band (``preprocess["band_hops"]``, 1 to ``_HOPS_CAP - 1``) and its scans' edge range, and
    names no ensemble members (a bag of refiners is one file)."""
    from ..errors import WeightsError

    pre = card.preprocess
    if card.members:
        raise WeightsError(f"{card.name} names ensemble members {list(card.members)}, which a refiner does not read: "
                           "several refiners are averaged from one weights file (arch_args.bag, "
                           "training/train_boundary.py --seeds); remove members from its card")
    if list(pre.get("features", [])) != list(FEATURES):
        raise WeightsError(f"{card.name} was trained on other inputs than this version computes (its card lists "
                           f"{pre.get('features')}); retrain it with training/train_boundary.py or update ToothMCL")
    band = pre.get("band_hops")
    if not isinstance(band, int) or not 1 <= band < _HOPS_CAP:
        raise WeightsError(f"{card.name}: preprocess.band_hops must be an integer 1-{_HOPS_CAP - 1} (got {band!r})")
    edges = pre.get("median_edge_mm")
    if not (isinstance(edges, list) and len(edges) == 2 and 0 < edges[0] < edges[1]):
        raise WeightsError(f"{card.name}: preprocess.median_edge_mm must be [low, high] in mm (got {edges!r})")


def median_edge_mm(points: np.ndarray, edges: np.ndarray) -> float:
    """Median length of the mesh's edges (``points`` (N, 3) in mm, ``edges`` (E, 2))."""
    if len(edges) == 0:
        return 0.0
    return float(np.median(np.linalg.norm(points[edges[:, 1]] - points[edges[:, 0]], axis=1)))


def _ring_mean(adjacency: sparse.csr_matrix, values: np.ndarray) -> np.ndarray:
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return (adjacency @ values) / np.maximum(degree, 1.0)


def signed_hops(adjacency: sparse.csr_matrix, tooth: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) edges from each vertex to the nearest vertex with a neighbour on the other side,
    capped at :data:`_HOPS_CAP`, positive on tooth and negative on gingiva (0 on the boundary)."""
    boundary = np.zeros(len(tooth), bool)
    differ = tooth[edges[:, 0]] != tooth[edges[:, 1]]
    boundary[edges[differ, 0]] = True
    boundary[edges[differ, 1]] = True
    hops = np.where(boundary, 0, _HOPS_CAP)
    front = boundary
    for step in range(1, _HOPS_CAP):
        reached = (adjacency @ front.astype(np.float64)) > 0
        front = reached & (hops == _HOPS_CAP) & ~boundary
        hops[front] = step
    return hops * np.where(tooth, 1, -1)


def boundary_inputs(points: np.ndarray, normals: np.ndarray, faces: np.ndarray, tooth_probability: np.ndarray,
                    tooth: np.ndarray, edges: np.ndarray | None = None, band_hops: int = BAND_HOPS):
    """The refiner's inputs for one scan.

    Args:
        points: (N, 3) vertices in the canonical jaw frame, mm (z occlusal).
        normals: (N, 3) unit vertex normals in the same frame.
        faces: (M, 3) int triangles.
        tooth_probability: (N,) the network's probability of tooth (1 - gingiva).
        tooth: (N,) bool, the settled labels' tooth vertices.
        edges: the mesh's :func:`~.surface.mesh_edges`, when the caller has them.
        band_hops: the band's half-width in edges.

    Returns:
        (features (N, F) float32 in :data:`FEATURES` order, edge_index (2, 2E) int64 each edge
        both ways, edge_features (2E, 6) float32, band (N,) bool: the vertices to re-decide).
    """
    v = np.asarray(points, np.float64)
    n = np.asarray(normals, np.float64)
    f = np.asarray(faces, np.int64)
    tooth = np.asarray(tooth, bool)
    edges = mesh_edges(f) if edges is None else edges
    count = len(v)
    p = np.clip(np.asarray(tooth_probability, np.float64), _EPS, 1.0 - _EPS)
    logit = np.log(p / (1.0 - p))
    a, b = edges[:, 0], edges[:, 1]
    ring1 = sparse.coo_matrix((np.ones(2 * len(edges)), (np.r_[a, b], np.r_[b, a])), shape=(count, count)).tocsr()
    ring1.data[:] = 1.0
    ring2 = (ring1 @ ring1 + ring1).tocsr()
    ring2.setdiag(1.0)
    ring2.data[:] = 1.0
    step = v[b] - v[a]
    length = np.linalg.norm(step, axis=1) + 1e-9
    convex = np.einsum("ij,ij->i", n[b] - n[a], step) / length**2
    degree = np.maximum(np.asarray(ring1.sum(axis=1)).ravel(), 1.0)
    convexity = (np.bincount(a, convex, count) + np.bincount(b, convex, count)) / degree
    convexity_min = np.full(count, np.inf)
    np.minimum.at(convexity_min, a, convex)
    np.minimum.at(convexity_min, b, convex)
    logit_min = np.full(count, np.inf)
    logit_max = np.full(count, -np.inf)
    for i, j in ((a, b), (b, a)):
        np.minimum.at(logit_min, i, logit[j])
        np.maximum.at(logit_max, i, logit[j])
    corners = v[f]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    area_max = np.zeros(count)
    for k in range(3):
        np.maximum.at(area_max, f[:, k], area)
    area_sum = sum(np.bincount(f[:, k], area, count) for k in range(3))
    n_faces = sum(np.bincount(f[:, k], minlength=count) for k in range(3)).astype(np.float64)
    edge_length = (np.bincount(a, length, count) + np.bincount(b, length, count)) / degree
    isolated = ~np.isfinite(convexity_min)
    for column in (convexity_min, logit_min, logit_max):
        column[isolated] = 0.0
    tooth_f = tooth.astype(np.float64)
    features = np.stack([
        logit, tooth_f, _ring_mean(ring1, logit), _ring_mean(ring2, logit), _ring_mean(ring1, tooth_f),
        _ring_mean(ring2, tooth_f), logit_min, logit_max, convexity, convexity_min, _ring_mean(ring1, convexity),
        n[:, 2], v[:, 2] - _ring_mean(ring2, v[:, 2]), area_max, area_sum, n_faces, edge_length,
        signed_hops(ring1, tooth, edges).astype(np.float64),
    ], axis=1)
    source, target = np.r_[a, b], np.r_[b, a]
    step2 = v[target] - v[source]
    length2 = np.r_[length, length]
    edge_features = np.concatenate([
        step2 / length2[:, None], length2[:, None], np.r_[convex, convex][:, None],
        np.einsum("ij,ij->i", n[source], n[target])[:, None]], axis=1)
    band = np.abs(features[:, -1]) <= band_hops
    return (features.astype(np.float32), np.stack([source, target]).astype(np.int64),
            edge_features.astype(np.float32), band)


def face_vote(faces: np.ndarray, face_tooth: np.ndarray, count: int, alone: np.ndarray | None = None) -> np.ndarray:
    """(count,) bool: True where at least half of a vertex's triangles are tooth (a tie is tooth,
    as the labels' vote gives a tied vertex to the tooth); a vertex in no triangle takes ``alone``
    ((count,) bool), or is False without it."""
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    total = np.bincount(faces.ravel(), minlength=count)
    tooth = np.bincount(faces.ravel(), np.repeat(np.asarray(face_tooth, np.float64), 3), minlength=count)
    return np.where(total > 0, 2 * tooth >= total, False if alone is None else alone)


def decide_band(model, features: np.ndarray, edge_index: np.ndarray, edge_features: np.ndarray, band: np.ndarray,
                tooth: np.ndarray, faces: np.ndarray | None = None, device="cpu") -> np.ndarray:
    """(N,) bool tooth or not: ``tooth`` outside ``band``, the refiner's decision inside it.

    The refiner sees the scan and its mirror image and averages the two (module docstring). With a
    face head and ``faces``, a band vertex follows :func:`face_vote` of its triangles' logits (a
    band vertex in no triangle follows its own logit); otherwise its own logit decides.
    """
    import torch

    use_faces = getattr(model, "face_head", None) is not None and faces is not None and len(faces) > 0
    with torch.inference_mode():
        x, pairs = torch.from_numpy(features).to(device), torch.from_numpy(edge_index).to(device)
        triangles = torch.from_numpy(np.asarray(faces, np.int64)).to(device) if use_faces else None
        vertex_logits, face_logits = 0.0, 0.0
        for e in (edge_features, mirror_edge_features(edge_features)):
            e = torch.from_numpy(e).to(device)
            if use_faces:
                f, v = model.face_logits(x, pairs, e, triangles)
                face_logits = face_logits + f.float().cpu().numpy() / 2.0
            else:
                v = model(x, pairs, e)
            vertex_logits = vertex_logits + v.float().cpu().numpy() / 2.0
    decided = vertex_logits > 0
    if use_faces:
        decided = face_vote(faces, face_logits > 0, len(tooth), alone=decided)
    return np.where(band, decided, tooth)


def mirror_edge_features(edge_features: np.ndarray) -> np.ndarray:
    """The edge inputs of the scan's mirror image (x -> -x in the canonical frame): only the edge
    direction's x changes sign; every vertex input is the same on both sides."""
    mirrored = edge_features.copy()
    mirrored[:, 0] = -mirrored[:, 0]
    return mirrored


def grow_numbers(weights: sparse.csr_matrix, labels: np.ndarray, instances: np.ndarray, vertices: np.ndarray,
                 rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers for ``vertices`` that became tooth, grown out from the numbered teeth ring by ring.

    In each of ``rounds`` rounds, every still unnumbered vertex of ``vertices`` with a numbered
    1-ring neighbour takes the number whose neighbours weigh most in ``weights`` (the mesh's edges
    weighted by inverse length, so that a tie between two teeth is decided by the nearer one, the
    same way on a patient and on its mirror image), and the instance of its nearest neighbour with
    that number. A vertex no round reaches stays gingiva (0 / 0): a number never jumps a gap.

    Args:
        weights: (N, N) symmetric sparse edge weights.
        labels, instances: (N,) the labels after the vertices that became gingiva were cleared.
        vertices: indices of the vertices that became tooth (gingiva in ``labels``).

    Returns:
        (labels, instances) of ``vertices``.
    """
    labels, instances = labels.copy(), instances.copy()
    pending = np.asarray(vertices, np.int64)
    for _ in range(rounds):
        if len(pending) == 0:
            break
        teeth = np.unique(labels[labels > 0])
        if len(teeth) == 0:
            break
        numbered = np.flatnonzero(labels > 0)
        one_hot = sparse.csr_matrix((np.ones(len(numbered)), (numbered, np.searchsorted(teeth, labels[numbered]))),
                                    shape=(len(labels), len(teeth)))
        rows = weights[pending]
        votes = (rows @ one_hot).toarray()
        reached = votes.max(axis=1) > 0
        if not reached.any():
            break
        chosen = teeth[votes.argmax(axis=1)]
        for i in np.flatnonzero(reached):
            start, stop = rows.indptr[i], rows.indptr[i + 1]
            neighbours, weight = rows.indices[start:stop], rows.data[start:stop]
            same = labels[neighbours] == chosen[i]
            instances[pending[i]] = instances[neighbours[same][np.argmax(weight[same])]]
        labels[pending[reached]] = chosen[reached]
        pending = pending[~reached]
    return labels[vertices], instances[vertices]


def drop_slivers(edges: np.ndarray, weights: sparse.csr_matrix, labels: np.ndarray, instances: np.ndarray,
                 band: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Slivers cut off a tooth: a piece of a tooth, apart from its largest connected piece and
    wholly inside the band, loses the number and takes a touching tooth's (:func:`grow_numbers`),
    or becomes gingiva. A piece reaching beyond the band is kept as it is: the refiner cut
    through the tooth, most often through a papilla the surface cut had given to one tooth (on
    the training jaws, joining such pieces again by undoing the refiner on them lowered tooth vs
    gingiva by 0.0004; dropping the slivers changed it by less than 0.0001 and raised the
    vertices given their right number).

    Re-deciding the band can cut a sliver off a tooth (on 14 of the 48 training jaws, 63 vertices
    in specks of 1 to 15; by the labels none of them was that tooth's, 42 another tooth's and 21
    gingiva): left alone, a speck of one tooth's colour would sit on the gum or on the next crown.

    Args:
        edges: (E, 2) the mesh's edges. weights: as :func:`grow_numbers`.
        labels, instances: (N,) after the refiner; new arrays are returned.
        band: (N,) bool, the vertices the refiner could change.
        rounds: of :func:`grow_numbers`.
    """
    from scipy.sparse.csgraph import connected_components

    labels, instances = labels.copy(), instances.copy()
    count = len(labels)
    a, b = edges[:, 0], edges[:, 1]
    same = (labels[a] == labels[b]) & (labels[a] > 0)
    graph = sparse.coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(count, count))
    _, piece = connected_components(graph, directed=False)
    stray = []
    for tooth in np.unique(labels[labels > 0]):
        members = np.flatnonzero(labels == tooth)
        pieces, sizes = np.unique(piece[members], return_counts=True)
        if len(pieces) == 1:
            continue
        for other in pieces[pieces != pieces[np.argmax(sizes)]]:
            cut_off = members[piece[members] == other]
            if band[cut_off].all():
                stray.append(cut_off)
    if not stray:
        return labels, instances
    stray = np.concatenate(stray)
    labels[stray], instances[stray] = 0, 0
    labels[stray], instances[stray] = grow_numbers(weights, labels, instances, stray, rounds)
    logger.info("boundary refiner: %d vertices in slivers cut off a tooth renumbered or made gingiva", len(stray))
    return labels, instances


def keep_every_tooth(labels: np.ndarray, instances: np.ndarray, before: np.ndarray, before_instances: np.ndarray,
                     keep: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Undo the refiner on any tooth it left with less than ``keep`` of its vertices (or none): a
    small tooth near the gum must not vanish into it."""
    for tooth in np.unique(before[before > 0]):
        was = before == tooth
        if np.count_nonzero(labels == tooth) < keep * np.count_nonzero(was):
            labels[was], instances[was] = tooth, before_instances[was]
    return labels, instances


def refine_boundary(model, points: np.ndarray, normals: np.ndarray, faces: np.ndarray, probs: np.ndarray,
                    labels: np.ndarray, instances: np.ndarray, device="cpu", band_hops: int = BAND_HOPS,
                    edges: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and instances with the vertices near the tooth/gingiva boundary re-decided by ``model``.

    Args:
        model: a :class:`~ToothMCLCore.models.boundary_gnn.BoundaryGNN` in eval mode on ``device``.
        points, normals, faces: the scan in the canonical frame (:func:`boundary_inputs`).
        probs: (N, C) the network's class probabilities, class 0 gingiva.
        labels, instances: (N,) int FDI numbers and instances after :func:`settle_and_number`.
        band_hops: the band the refiner was trained on (its card's ``preprocess["band_hops"]``).
        edges: the mesh's :func:`~.surface.mesh_edges`, when the caller has them.

    Returns:
        (labels, instances), new arrays; a vertex changes only inside the band.
    """
    labels = np.asarray(labels).copy()
    instances = np.asarray(instances).copy()
    tooth = labels > 0
    edges = mesh_edges(faces) if edges is None else edges
    features, edge_index, edge_features, band = boundary_inputs(points, normals, faces, 1.0 - probs[:, 0], tooth,
                                                                edges, band_hops)
    decided = decide_band(model, features, edge_index, edge_features, band, tooth, faces, device)
    to_gingiva = tooth & ~decided
    to_tooth = np.flatnonzero(~tooth & decided)
    before, before_instances = labels.copy(), instances.copy()
    labels[to_gingiva] = 0
    instances[to_gingiva] = 0
    length = np.linalg.norm(points[edges[:, 1]] - points[edges[:, 0]], axis=1)
    count = len(labels)
    weights = sparse.coo_matrix((1.0 / np.maximum(np.r_[length, length], 1e-6),
                                 (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                                shape=(count, count)).tocsr()
    number, instance = grow_numbers(weights, labels, instances, to_tooth, band_hops + 1)
    labels[to_tooth] = number
    instances[to_tooth] = instance
    labels, instances = drop_slivers(edges, weights, labels, instances, band, band_hops + 1)
    labels, instances = keep_every_tooth(labels, instances, before, before_instances)
    logger.info("boundary refiner: %d vertices became gingiva, %d tooth",
                int(np.count_nonzero((before > 0) & (labels == 0))), int(np.count_nonzero((before == 0) & (labels > 0))))
    return labels, instances
