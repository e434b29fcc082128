"""Intraoral-scan segmentation: an FDI number for every vertex of the scan as stored.

Stages (reported to ``progress``; a cancel takes effect between them):

1. ``prepare``: decimate meshes above the face budget (fast-simplification; logged), orient
   the jaw in its canonical frame, farthest-point-sample the card's number of points.
2. ``segment``: the Point Transformer gives 17 class probabilities per sampled point.
3. ``transfer``: every vertex takes the inverse-distance-weighted probabilities of its 3
   nearest sampled points (the issue's "k-nearest neighbour vote", soft so ties cannot occur).
   Stages 2-3 run for ``passes`` different farthest-point samplings (different start points)
   and the vertex probabilities are averaged: a vertex that one sampling covers poorly is
   covered by another. The paper samples once. On held-out phantom jaws (8 jaws) the demo
   model's mean per-tooth Dice was 0.81 with one sampling, 0.84 with 4; with the current demo
   weights 0.916 with 4 and 0.927 with 8, and the demo's upper jaw (next to a missing tooth)
   0.84, 0.86, 0.87, 0.88 with 4, 5, 6, 8. Each pass costs about 1.3 s per 100k-vertex jaw
   on 2 CPU cores and the issue's budget is 10 s per such jaw, so the default is 6;
   ``passes=1`` is the paper's single sampling. The passes are deterministic: the same scan
   always gets the same labels.
   With ``mirror`` (ours, not the paper's) each pass also segments the mirror image of the
   sample (x -> -x in the canonical frame, normals too) and averages its probabilities, each
   tooth class read as its mirror (11 <-> 21, :func:`~ToothMCLCore.fdi.mirror_permutation`):
   the network must then say the same of a tooth seen from either side, which removes its
   left/right bias near the midline. On the MeshSegNet validation jaws (4 patients, never
   trained on) ``ios_pt_real_v1`` went from mean per-tooth Dice 0.598 to 0.633 (upper) and
   0.791 to 0.800 (lower), and from 1 mirrored tooth to none. A mirrored pass costs a forward
   pass, so a card that turns it on halves its passes for the same time.
   A card may also name ``members`` (ours, not the paper's): further networks that read the same
   sampled points (and their mirror), their class probabilities averaged with the card's own
   network's, each network weighing the same. The default ``ios_pt_real_v2`` (the paper's widths
   and depths) names ``ios_pt_real_v1`` (a smaller network trained the same way): alone, each with
   a refiner trained on its own outputs, the larger was better on the lower validation jaws (tooth
   vs gingiva 0.971 vs 0.968) and worse on the upper (0.967 vs 0.974); averaged, with a refiner
   trained on the average, 0.976 upper and 0.974 lower (Dice 0.955 / 0.967 vs v1's 0.956 / 0.961).
   On the test split the gain shrank to Dice 0.942 vs 0.938 on the lower jaws (upper 0.965 both),
   tooth vs gingiva 0.974 / 0.963 vs 0.976 / 0.962 (with the refiner of three seeds now named,
   ``ios_boundary_real_v4``: 0.976 / 0.965). It doubles the network's time (5.0 s vs 3.1 s
   end to end for a 115k-vertex phantom jaw on 2 cores, ``benchmarks/ios_speed.py``); ``--model
   ios_pt_real_v1`` is the faster single network.
4. ``postprocess``: unless ``refine`` is off, the boundaries are first settled on the surface
   (:mod:`~ToothMCLCore.postprocessing.surface`: a graph cut along concave creases decides tooth
   or gingiva, a crease-avoiding random walk where each tooth ends; on the real test split mean
   per-tooth Dice 0.670 -> 0.713 upper, 0.783 -> 0.824 lower, tooth vs gingiva 0.928 -> 0.958 /
   0.920 -> 0.947), and before the walk the teeth are numbered as one sequence along the arch
   (:mod:`~ToothMCLCore.postprocessing.arch_order`: each tooth about its textbook width, its
   ends where the crowns' normals turn, the network weighing less on a whole arch than on part
   of one; the test split then gave 0.945 upper, 0.918 lower, TIR 0.938 -> 0.995, renumbered
   teeth 28 -> 1, exp(-TLA) 0.826 -> 0.848; two lower jaws each lose one tooth to a neighbour,
   and the challenge's TLA gives such a jaw about 0).
   Then each tooth label keeps its largest connected region on the mesh (smaller
   regions become gingiva); a further region of the same label far across the arch is a second
   tooth (:func:`~ToothMCLCore.postprocessing.assignment.is_second_instance`); every tooth
   region then gets its FDI number from the order-aware assignment shared with CBCT
   (:func:`~ToothMCLCore.postprocessing.assignment.assign_fdi`).
   Last, where the card names a ``boundary_model`` and the scan's resolution is one it was
   trained on, a small graph network re-decides tooth or gingiva on the vertices within a few
   edges of the boundary, as many as its card says (:mod:`~ToothMCLCore.postprocessing.boundary`;
   off with ``refine`` or ``boundary``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from dataclasses import dataclass

import numpy as np

from .. import __version__, fdi
from ..errors import InvalidInputError, WeightsError
from ..io.mesh import (
    DECIMATE_ABOVE_FACES,
    MeshReadResult,
    decimate,
    occlusal_direction,
    vertex_normals,
)
from ..postprocessing.assignment import assign_fdi, is_second_instance
from ..postprocessing.boundary import check_refiner_card, median_edge_mm, refine_boundary
from ..postprocessing.surface import mesh_edges
from ..preprocessing.ios import (
    COORDINATE_SCALE_MM,
    MIRROR_X,
    N_POINTS,
    canonical_frame,
    point_features,
    sample_points,
)
from ..types import SurfaceMesh
from .cbct import ProgressFn, _load, _Reporter
from .device import autocast, resolve_device
from .ios_common import IOSResult, arch_instances, prepare_scan_and_jaw, summarize_mesh

logger = logging.getLogger(__name__)

DEFAULT_IOS_MODEL = "ios_pt_real_v2"  # real scans, two networks averaged; the phantom model is ios_pt_demo_v1
#: meshes above this many faces are decimated before sampling
DECIMATE_TO_FACES = 300_000
#: tooth regions with fewer vertices are islands
MIN_TOOTH_VERTICES = 30
#: farthest-point samplings averaged per scan (see the module docstring)
DEFAULT_PASSES = 6


@dataclass
class NetworkOutput:
    """What :meth:`IOSPredictor.network_probabilities` gives: ``mesh`` (decimated when the scan
    was above the face budget; ``mapping`` then takes a scan vertex to its vertex here, else None)
    with its RAS ``normals``; ``points`` / ``point_normals`` (N, 3) in the canonical jaw frame;
    ``probs`` (N, 17) class probabilities; ``points_sampled`` per pass."""

    mesh: SurfaceMesh
    normals: np.ndarray
    points: np.ndarray
    point_normals: np.ndarray
    probs: np.ndarray
    mapping: np.ndarray | None
    points_sampled: int


class IOSPredictor:
    """Per-vertex FDI segmentation of one jaw with a Point Transformer.

    Args:
        weights: ``.safetensors`` path with its card, or None to use ``model``.
        model: registry name (default :data:`DEFAULT_IOS_MODEL`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        passes: farthest-point samplings averaged; None takes the card's ``preprocess``
            ``"sampling_passes"`` (set where the model was measured), else :data:`DEFAULT_PASSES`.
        mirror: also segment each sample's mirror image (module docstring); None takes the
            card's ``preprocess`` ``"mirror_passes"``, else off (the paper's way).
        paper_protocol: run the ToothMCL paper's pipeline only, to compare with its tables: one
            sampling, no mirror, and each vertex takes its most probable class (stage 4, the
            region clean-up and the order-aware numbering, is ours and is skipped).
        refine: settle the boundaries on the surface and number the teeth along the arch before
            the regions are numbered (stage 4, :mod:`ToothMCLCore.postprocessing.surface`,
            :mod:`ToothMCLCore.postprocessing.arch_order`); None or True: on, except with ``paper_protocol``.
        boundary: with ``refine``, re-decide tooth or gingiva near the settled boundary with the
            learned refiner the card names (``boundary_model``;
            :mod:`ToothMCLCore.postprocessing.boundary`); None or True: when the card names one.
        boundary_weights: a refiner's ``.safetensors`` file (with its card) to use instead of the
            card's, e.g. one just trained by ``training/train_boundary.py``.

    Raises:
        InvalidInputError: ``paper_protocol`` with ``passes`` other than 1 or with ``mirror``.
        WeightsError: a refiner file that is missing, corrupt or not a boundary refiner.
    """

    def __init__(self, weights=None, model: str | None = None, device: str = "auto", passes: int | None = None,
                 mirror: bool | None = None, paper_protocol: bool = False, refine: bool | None = None,
                 boundary: bool | None = None, boundary_weights=None):
        if passes is not None and int(passes) < 1:
            raise InvalidInputError(f"passes must be at least 1 (got {passes})")
        if paper_protocol and ((passes is not None and int(passes) != 1) or mirror or refine):
            raise InvalidInputError("the paper's protocol samples once without a mirror pass or refinement: drop "
                                    "--passes / --mirror / --refine, or drop --paper-protocol")
        self.paper_protocol = bool(paper_protocol)
        self.refine = (refine is None or bool(refine)) and not self.paper_protocol
        if self.paper_protocol:
            passes, mirror = 1, False
        self.device = resolve_device(device)
        self.net, self.card = _load(weights, model or DEFAULT_IOS_MODEL, self.device)
        if self.card.task != "ios_teeth":
            raise WeightsError(f"{self.card.name} is a {self.card.task!r} model, not an IOS teeth model")
        self.member_nets, self.member_cards = [], []
        named = list(self.card.members)
        if self.card.name in named or len(set(named)) != len(named):
            raise WeightsError(f"{self.card.name}'s members ({', '.join(named)}) name a network twice or the card's "
                               "own network: each network may be named once, so remove the repeat from its card")
        for name in named:
            net, card = self._load_member(name)
            self.member_nets.append(net)
            self.member_cards.append(card)
        self.passes = int(passes if passes is not None else self.card.preprocess.get("sampling_passes", DEFAULT_PASSES))
        self.mirror = bool(mirror if mirror is not None else self.card.preprocess.get("mirror_passes", False))
        self.n_points = int(self.card.preprocess.get("n_points", N_POINTS))
        self.scale_mm = float(self.card.preprocess.get("coordinate_scale_mm", COORDINATE_SCALE_MM))
        self.boundary_net = self.boundary_card = None
        wanted = boundary_weights is not None or self.card.boundary_model
        if self.refine and boundary is not False and wanted:
            self.boundary_net, self.boundary_card = _load(boundary_weights, self.card.boundary_model, self.device)
            if self.boundary_card.task != "ios_boundary":
                raise WeightsError(f"{self.boundary_card.name} is a {self.boundary_card.task!r} model, not a "
                                   "tooth-vs-gingiva boundary refiner (task 'ios_boundary')")
            check_refiner_card(self.boundary_card)

    def predict(self, scan: MeshReadResult | SurfaceMesh, jaw: str | None = None,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                seed: int = 0) -> IOSResult:
        """Segment one jaw; labels come back in the vertex order of ``scan`` as given.

        Args:
            scan: a scan from :func:`ToothMCLCore.io.mesh.read_mesh`, or a bare
                :class:`SurfaceMesh` (e.g. from a Slicer model node), which is cleaned here.
            jaw: "upper" or "lower"; None to take ``scan``'s own jaw or decide from the
                geometry (:func:`ToothMCLCore.io.mesh.detect_jaw`).
        """
        scan, jaw = prepare_scan_and_jaw(scan, jaw)
        report = _Reporter(progress, cancel)
        net = self.network_probabilities(scan, jaw, report, seed)
        mesh, normals, pts, nrm, probs, mapping = net.mesh, net.normals, net.points, net.point_normals, net.probs, net.mapping
        report("postprocess", 0.8)
        boundary_refined = False
        if self.paper_protocol:
            labels = fdi.class_index_to_fdi(probs.argmax(axis=1), f"ios_{jaw}").astype(np.int32)
            instances = arch_instances(labels)
        elif self.refine:
            labels, instances = settle_and_number(mesh, normals, probs, pts, jaw, nrm)
            edges = mesh_edges(mesh.faces) if self.boundary_net is not None and mesh.faces is not None else None
            boundary_refined = self._boundary_applies(pts, edges)
            if boundary_refined:
                labels, instances = refine_boundary(self.boundary_net, pts, nrm, mesh.faces, probs, labels, instances,
                                                    self.device, int(self.boundary_card.preprocess["band_hops"]), edges)
        else:
            labels, instances = number_vertices(mesh, probs, pts, jaw)
        tooth_probability = (1.0 - probs[:, 0]).astype(np.float32)
        if mapping is not None:
            labels, instances, tooth_probability = labels[mapping], instances[mapping], tooth_probability[mapping]
        file_labels = scan.to_file_order(labels).astype(np.int32)
        file_instances = scan.to_file_order(instances).astype(np.int32)
        teeth = summarize_mesh(scan.mesh, labels)
        report("done", 1.0)
        provenance = {
            "model": self.card.name, "model_version": self.card.version, "model_sha256": self.card.sha256,
            "ensemble_members": ", ".join(f"{c.name} {c.version} {c.sha256}" for c in self.member_cards),
            "jaw": jaw, "points_sampled": net.points_sampled, "sampling_passes": self.passes, "mirror_passes": self.mirror,
            "paper_protocol": self.paper_protocol, "surface_refinement": self.refine,
            "boundary_model": self.boundary_card.name if self.boundary_card else "",
            "boundary_refined": boundary_refined,
            "decimated_from_faces": len(scan.mesh.faces) if mapping is not None else 0,
            "toothmcl_version": __version__, "device": str(self.device),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return IOSResult(file_labels, file_instances, jaw, teeth, provenance,
                         scan.to_file_order(tooth_probability, fill=0.0).astype(np.float32))

    def network_probabilities(self, scan: MeshReadResult, jaw: str, report=None, seed: int = 0) -> NetworkOutput:
        """Stages 1-3 (module docstring) on a scan that :func:`prepare_scan_and_jaw` returned: the
        class probabilities of every vertex of the (possibly decimated) mesh."""
        report = report or _Reporter(None, None)
        report("prepare", 0.0)
        mesh, normals = scan.mesh, scan.normals
        mapping = None
        n_faces = len(mesh.faces)
        if n_faces > DECIMATE_ABOVE_FACES:
            mesh, mapping = decimate(mesh, DECIMATE_TO_FACES)
            normals = vertex_normals(mesh)
            logger.warning("decimated the scan from %d to %d faces before sampling", n_faces, len(mesh.faces))
        frame = canonical_frame(mesh.vertices_ras, occlusal_direction(mesh, normals), jaw)
        pts = frame.apply(mesh.vertices_ras)
        nrm = frame.apply_vectors(normals)
        probs = np.zeros((len(pts), 0))
        as_mirror = fdi.mirror_permutation(f"ios_{jaw}")
        for k in range(self.passes):
            idx = sample_points(pts, self.n_points, seed=seed + k)
            report("segment", 0.1 + 0.7 * k / self.passes)
            probs_sampled = self._forward(pts[idx], nrm[idx])
            if self.mirror:
                flipped = self._forward(pts[idx] * MIRROR_X, nrm[idx] * MIRROR_X)
                probs_sampled = 0.5 * (probs_sampled + flipped[:, as_mirror])
            report("transfer", 0.1 + 0.7 * (k + 0.8) / self.passes)
            vertex_probs = transfer_probabilities(pts[idx], probs_sampled, pts)
            probs = vertex_probs if k == 0 else probs + vertex_probs
        probs /= self.passes
        return NetworkOutput(mesh, normals, pts, nrm, probs, mapping, len(idx))

    def _load_member(self, name: str):
        """(network, card) of ensemble member ``name`` (the card's ``members``), checked to read
        the same sampled points as the main network and to give the same classes.

        A member that is itself an ensemble contributes its own network only, and the card must
        name that member's members as well: each network is then loaded once and weighs the
        same, whatever the nesting (a card naming v2 and v1, where v2 names v1, averages three
        networks, not v1 twice)."""
        net, card = _load(None, name, self.device)
        mine = self.card.preprocess
        if card.task != "ios_teeth" or card.class_scheme != self.card.class_scheme:
            raise WeightsError(f"{self.card.name} names {name} as an ensemble member, but {name} is a {card.task!r} "
                               f"model with class scheme {card.class_scheme!r}: a member must be an IOS teeth model "
                               f"with scheme {self.card.class_scheme!r}")
        for key, default in (("n_points", N_POINTS), ("coordinate_scale_mm", COORDINATE_SCALE_MM)):
            if float(card.preprocess.get(key, default)) != float(mine.get(key, default)):
                raise WeightsError(f"{self.card.name} names {name} as an ensemble member, but their {key} differ "
                                   f"({mine.get(key, default)} vs {card.preprocess.get(key, default)}): members run "
                                   "on the same sampled points, so fix one of the two cards")
        missing = [m for m in card.members if m not in self.card.members and m != self.card.name]
        if missing:
            raise WeightsError(f"{name} is itself an ensemble (of its own network and {', '.join(card.members)}), and "
                               f"{self.card.name} loads only each member's own network: name "
                               f"{', '.join(missing)} in {self.card.name}'s members too")
        return net, card

    def _boundary_applies(self, points: np.ndarray, edges: np.ndarray | None) -> bool:
        """True when there is a boundary refiner and the scan's median edge length is within the
        range it was trained on (its card's ``preprocess["median_edge_mm"]``); logs why not."""
        if self.boundary_net is None or edges is None or len(edges) == 0:
            return False
        low, high = self.boundary_card.preprocess["median_edge_mm"]
        edge = median_edge_mm(points, edges)
        if low <= edge <= high:
            return True
        logger.info("boundary refiner %s skipped: the scan's median edge is %.2f mm, it was trained on %.2f-%.2f mm",
                    self.boundary_card.name, edge, low, high)
        return False

    def _forward(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """(n, 17) class probabilities of ``points`` (n, 3) mm with their ``normals``, canonical
        frame: the network's, or the mean of the ensemble's (the card's ``members``)."""
        import torch

        p = torch.from_numpy((points / self.scale_mm).astype(np.float32))[None].to(self.device)
        f = torch.from_numpy(point_features(points, normals, self.scale_mm))[None].to(self.device)
        nets = [self.net, *self.member_nets]
        with torch.inference_mode(), autocast(self.device):
            probs = sum(torch.softmax(net(p, f).float()[0], dim=-1) for net in nets) / len(nets)
        return probs.cpu().numpy()


def transfer_probabilities(sampled: np.ndarray, probs: np.ndarray, targets: np.ndarray, k: int = 3) -> np.ndarray:
    """Inverse-distance-weighted probabilities of the ``k`` nearest sampled points, (M, C)."""
    from scipy.spatial import cKDTree

    k = min(k, len(sampled))
    dist, idx = cKDTree(sampled).query(targets, k=k)
    if k == 1:
        dist, idx = dist[:, None], idx[:, None]
    w = 1.0 / np.maximum(dist, 1e-6)
    w /= w.sum(axis=1, keepdims=True)
    return (probs[idx] * w[..., None]).sum(axis=1)


def _adjacency(mesh: SurfaceMesh, points: np.ndarray):
    """Sparse vertex adjacency from the faces (or an 8-NN graph for a bare point cloud)."""
    from scipy import sparse

    n = len(points)
    if len(mesh.faces):
        f = mesh.faces
        rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    else:
        from scipy.spatial import cKDTree

        _, nn = cKDTree(points).query(points, k=min(9, n))
        rows = np.repeat(np.arange(n), nn.shape[1] - 1)
        cols = nn[:, 1:].ravel()
    return sparse.coo_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, n)).tocsr()


def number_vertices(mesh: SurfaceMesh, probs: np.ndarray, points: np.ndarray, jaw: str):
    """Clean per-vertex classes into FDI labels and instances (see the module docstring).

    Args:
        mesh: the (possibly decimated) cleaned mesh.
        probs: (N, 17) float class probabilities per vertex.
        points: (N, 3) canonical coordinates (x = patient's right, y = anterior).
        jaw: "upper" or "lower".

    Returns:
        (labels (N,) int32 FDI / 0, instances (N,) int32 1..n right to left / 0).
    """
    from scipy.sparse.csgraph import connected_components

    scheme = f"ios_{jaw}"
    classes = probs.argmax(axis=1)
    adj = _adjacency(mesh, points).tocoo()
    same = classes[adj.row] == classes[adj.col]
    from scipy import sparse

    graph = sparse.coo_matrix((np.ones(same.sum(), bool), (adj.row[same], adj.col[same])),
                              shape=adj.shape)
    _, comp = connected_components(graph, directed=False)
    regions = []
    for c in range(1, probs.shape[1]):
        members = np.nonzero(classes == c)[0]
        if len(members) == 0:
            continue
        ids, counts = np.unique(comp[members], return_counts=True)
        order = np.argsort(counts)[::-1]
        largest = members[comp[members] == ids[order[0]]]
        if counts[order[0]] < MIN_TOOTH_VERTICES:
            continue
        regions.append(largest)
        for j in order[1:]:
            region = members[comp[members] == ids[j]]
            if counts[j] >= MIN_TOOTH_VERTICES and is_second_instance(
                    counts[j], counts[order[0]], points[region].mean(0), points[largest].mean(0)):
                regions.append(region)
    labels = np.zeros(len(points), np.int32)
    instances = np.zeros(len(points), np.int32)
    if not regions:
        return labels, instances
    candidates = fdi.teeth_of_jaw(jaw)
    cols = fdi.fdi_to_class_index(np.asarray(candidates), scheme)
    p = np.stack([probs[r][:, cols].mean(axis=0) for r in regions])
    centres = np.stack([points[r].mean(axis=0) for r in regions])
    numbers = assign_fdi(p, centres, candidates)
    for r, n in zip(regions, numbers):
        labels[r] = n
    order = sorted((i for i, n in enumerate(numbers) if n), key=lambda i: fdi.tooth(int(numbers[i])).arch_index)
    for inst, i in enumerate(order, start=1):
        instances[regions[i]] = inst
    return labels, instances


def settle_and_number(mesh: SurfaceMesh, normals: np.ndarray, probs: np.ndarray, points: np.ndarray, jaw: str,
                      point_normals: np.ndarray | None = None):
    """Stage 4 with the boundaries settled on the surface first (:mod:`~ToothMCLCore.postprocessing.surface`):
    a graph cut decides tooth or gingiva, the teeth are numbered along the arch
    (:mod:`~ToothMCLCore.postprocessing.arch_order`) and then as regions (:func:`number_vertices`), a
    crease-aware random walk re-decides where each tooth ends, and the result is numbered again
    (largest region per tooth, order-aware numbers). Same returns as :func:`number_vertices`. A
    point cloud (no faces) has no surface to settle on: it is numbered as it is.

    ``normals`` are in the frame of ``mesh``; ``point_normals`` (N, 3) those in the frame of
    ``points`` (default: ``normals``, when ``mesh`` is in that frame too)."""
    from ..interactive.ios_tools import ScanGraph
    from ..postprocessing.arch_order import number_along_arch
    from ..postprocessing.surface import restrict_to_teeth, settle_teeth, tooth_gingiva_cut

    if mesh.faces is None or len(mesh.faces) == 0:
        return number_vertices(mesh, probs, points, jaw)

    if point_normals is None:
        point_normals = normals
    graph = ScanGraph(mesh, normals, jaw)
    tooth = tooth_gingiva_cut(mesh, normals, 1.0 - probs[:, 0], edges=graph.edges)
    teeth_only = number_along_arch(restrict_to_teeth(probs, tooth), points, tooth, jaw, point_normals)
    labels, _ = number_vertices(mesh, teeth_only, points, jaw)
    scheme = f"ios_{jaw}"
    settled = settle_teeth(graph, labels, probs, scheme, tooth)
    decided = np.zeros_like(teeth_only)
    decided[np.arange(len(settled)), fdi.fdi_to_class_index(settled, scheme)] = 1.0
    # the walk's decision leads; the network's probabilities still rank the numbers of each region
    return number_vertices(mesh, 0.7 * decided + 0.3 * teeth_only, points, jaw)


def _card_architecture(weights, model: str | None) -> str | None:
    """The architecture named by the card of ``weights`` or of registry model ``model``; None when
    there is no readable card to look at (the predictor then reports what is wrong)."""
    from pathlib import Path

    from ..models.checkpoint import card_path, read_card
    from ..models.registry import resolve_weights

    if weights is not None:
        path = Path(weights)
        if not (path.is_file() and path.name.endswith(".safetensors") and card_path(path).is_file()):
            return None
    else:
        path, _ = resolve_weights(model or DEFAULT_IOS_MODEL)
    return read_card(card_path(path)).architecture


def ios_predictor(weights=None, model: str | None = None, device: str = "auto", **options):
    """The IOS predictor for a model card: :class:`~.softooth.SOFToothPredictor` for architecture
    ``"softooth"``, :class:`IOSPredictor` otherwise. Both have the same ``predict``.

    Args:
        weights, model, device: as :class:`IOSPredictor` (``model`` defaults to its default).
        options: keyword arguments of either predictor (``passes``, ``mirror``; ``sam_checkpoint``,
            ``use_sam_cache``, ``fdi_order``). Those the chosen one does not take are ignored with a warning
            when they are set (not None).
    """
    import inspect

    if _card_architecture(weights, model) == "softooth":
        from .softooth import SOFToothPredictor as predictor_class

        if options.get("paper_protocol"):
            raise InvalidInputError("--paper-protocol runs the ToothMCL paper's Point Transformer pipeline; a SOFTooth "
                                    "model is not it (use --no-fdi-order for SOFTooth's own ablation)")
    else:
        predictor_class = IOSPredictor
    accepted = inspect.signature(predictor_class).parameters
    ignored = sorted(k for k, v in options.items() if k not in accepted and v is not None)
    if ignored:
        logger.warning("%s ignored: the model runs with %s", ", ".join(ignored), predictor_class.__name__)
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return predictor_class(weights=weights, model=model, device=device, **kwargs)
