"""SOFTooth intraoral-scan segmentation: an FDI number for every vertex of the scan as stored.

The second IOS model beside the Point Transformer of :mod:`.ios`, with the same
``predict(scan, jaw, progress, cancel)`` and the same :class:`~.ios_common.IOSResult`. Stages
(reported to ``progress``; a cancel takes effect between them):

1. ``prepare``: clean the scan (a bare mesh), decimate it to the card's face budget (the
   paper's 10,000), put it in the canonical jaw frame and compute the 24-d face features
   (:func:`~ToothMCLCore.preprocessing.softooth.prepare_softooth_input`). Every vertex of the
   scan is mapped to its nearest decimated face.
2. ``render`` and 3. ``sam`` (PRG models only): the occlusal view with its face <-> pixel map
   and the frozen SAM embedding sampled at every face (cached on disk per rendered image).
4. ``segment``: the network gives Q candidate instances: mask, class and objectness logits
   and a mask-derived centre each.
5. ``postprocess`` (:func:`number_faces`, with
   :func:`~ToothMCLCore.models.softooth.assign_instances`): an instance is a tooth when its objectness
   ``sigmoid(o)`` exceeds the card's ``objectness_threshold`` (0.5; the network learns
   objectness as the IoU of its mask with the tooth it covers) and its binarised mask (0.5,
   paper) is not empty; of two teeth whose masks overlap with IoU >= 0.5 the one with lower
   objectness goes. The teeth then get distinct FDI numbers from the order-aware assignment
   on their class probabilities and centres
   (:func:`~ToothMCLCore.postprocessing.assignment.assign_fdi`, shared with CBCT and the
   Point Transformer). No class-confidence cut decides which instances are teeth, so a third
   molar stays whenever its instance exists, however unsure its class (the paper's point
   against fixed cuts). Every face takes the tooth whose mask is most probable there (above
   0.5; else gingiva, :func:`~ToothMCLCore.models.softooth.faces_to_fdi`); each tooth keeps
   its largest face-connected region (smaller fragments become gingiva, as the Point
   Transformer pipeline does with its regions). Vertices take the label of their face,
   instances number the teeth 1..n from the patient's right.

**Model card.** ``task`` "ios_teeth", ``architecture`` "softooth", ``arch_args`` for
:func:`~ToothMCLCore.models.softooth.build_softooth`, ``preprocess`` a
:class:`SOFToothSettings` dict (unknown keys are refused). A card whose network has no PRG
(``with_prg: false``) or that says ``use_prg: false`` needs no SAM. Otherwise the SAM image
encoder is ``sam_model_type`` ("vit_b", "vit_l", "vit_h", or "tiny" for tests), its weights
file is found as described in :func:`resolve_sam_checkpoint` and checked against
``sam_sha256`` (default: the published SHA-256 of the official checkpoint).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..config import config_from_dict, config_to_dict
from ..errors import ConfigError, WeightsError
from ..io.mesh import MeshReadResult
from ..preprocessing.ios import COORDINATE_SCALE_MM
from ..types import SurfaceMesh
from .cbct import ProgressFn, _load, _Reporter
from .device import resolve_device
from .ios_common import IOSResult, arch_instances, prepare_scan_and_jaw, summarize_mesh

if TYPE_CHECKING:
    from ..preprocessing.softooth import SOFToothInput

logger = logging.getLogger(__name__)

#: environment variable naming a SAM checkpoint file
SAM_CHECKPOINT_ENV = "TOOTHMCL_SAM_CHECKPOINT"
#: file names of the official checkpoints, looked up in ``cache_dir() / "sam_checkpoints"``
SAM_CHECKPOINT_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth",
                        "vit_h": "sam_vit_h_4b8939.pth"}


@dataclass(frozen=True)
class SOFToothSettings:
    """The ``preprocess`` dict of a SOFTooth model card (paper defaults).

    Attributes:
        target_faces: faces after decimation (paper: about 10,000).
        coordinate_scale_mm: divisor of the coordinate features.
        image_size: occlusal rendering in pixels (SAM's input: 1024).
        field_of_view_mm: rendered width in mm; None fits each jaw.
        sam_model_type: "vit_b", "vit_l", "vit_h" or "tiny" (random fixed-seed stand-in, tests).
        sam_checkpoint: file name looked up in the SAM checkpoint folder ("" = official name).
        sam_sha256: expected SHA-256 of the checkpoint ("" = the official one).
        sam_tiny_img_size: input size of the "tiny" encoder.
        align_corners: Eq. 3 sampling of the embedding (see ``models.sam_features``).
        use_prg: run PRG; None = as the network was built (``with_prg``).
        objectness_threshold: sigmoid(objectness) above which an instance is a tooth.
        mask_threshold: mask binarisation (paper: 0.5).
        duplicate_iou: masks overlapping at least this much are one tooth.
        min_tooth_faces: teeth with fewer faces in their largest region are dropped.
        fdi_order: number the teeth with the order-aware assignment (FHM's order prior at
            inference, the default); False = class probabilities alone, for the paper's
            ablation (``toothmcl segment-ios --no-fdi-order``).
    """

    target_faces: int = 10_000
    coordinate_scale_mm: float = COORDINATE_SCALE_MM
    image_size: int = 1024
    field_of_view_mm: float | None = None
    sam_model_type: str = "vit_b"
    sam_checkpoint: str = ""
    sam_sha256: str = ""
    sam_tiny_img_size: int = 256
    align_corners: bool = True
    use_prg: bool | None = None
    objectness_threshold: float = 0.5
    mask_threshold: float = 0.5
    duplicate_iou: float = 0.5
    min_tooth_faces: int = 5
    fdi_order: bool = True

    def __post_init__(self):
        if int(self.target_faces) < 100:
            raise ConfigError(f"target_faces must be at least 100 (got {self.target_faces})")
        for name in ("objectness_threshold", "mask_threshold", "duplicate_iou"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"{name} must be within 0..1 (got {getattr(self, name)})")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


def resolve_sam_checkpoint(settings: SOFToothSettings, explicit=None) -> Path | None:
    """The SAM checkpoint file of a card, in this order:

    1. ``explicit`` (``--sam-checkpoint`` of the CLI, ``sam_checkpoint=`` of the predictor);
    2. ``$TOOTHMCL_SAM_CHECKPOINT``;
    3. ``cache_dir() / "sam_checkpoints" / name`` (``$TOOTHMCL_CACHE``, default
       ``~/.cache/toothmcl``), name = the card's ``sam_checkpoint`` or the official file name.

    The "tiny" encoder needs no file: only an explicit one is used (None otherwise), so a
    ``$TOOTHMCL_SAM_CHECKPOINT`` set for a real model does not break it.

    Raises:
        WeightsError: no file where the rule says (the message names every place to put it).
    """
    from ..models.registry import cache_dir
    from ..models.sam_features import SAM_URL

    kind = settings.sam_model_type
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise WeightsError(f"SAM checkpoint {path} not found; check the path")
        return path
    if kind == "tiny":
        return None
    env = os.environ.get(SAM_CHECKPOINT_ENV)
    if env:
        if not Path(env).is_file():
            raise WeightsError(f"${SAM_CHECKPOINT_ENV} names {env}, which does not exist; fix or unset it")
        return Path(env)
    name = settings.sam_checkpoint or SAM_CHECKPOINT_FILES.get(kind, "")
    path = cache_dir() / "sam_checkpoints" / name
    if name and path.is_file():
        return path
    raise WeightsError(f"this SOFTooth model needs the SAM {kind} image encoder: download {SAM_URL}{name or '...'} "
                       f"and put it at {path}, set ${SAM_CHECKPOINT_ENV}, or pass --sam-checkpoint PATH")


@dataclass
class PreparedScan:
    """One jaw ready for the network.

    Attributes:
        input: :class:`~ToothMCLCore.preprocessing.softooth.SOFToothInput` (features, labels,
            vertex -> face map).
        sam_features: (M, 256) float32 per-face SAM features, None without PRG.
        visible: (M,) bool faces seen in the occlusal view, None without PRG.
    """

    input: SOFToothInput
    sam_features: np.ndarray | None
    visible: np.ndarray | None


def prepare_scan(mesh: SurfaceMesh, jaw: str, settings: SOFToothSettings, sam=None,
                 report=None) -> PreparedScan:
    """Stages 1-3 for a cleaned scan (shared by inference and training).

    Args:
        mesh: a cleaned scan with faces (e.g. ``read_mesh(path).mesh``).
        jaw: "upper" or "lower".
        settings: the card's settings.
        sam: a :class:`~ToothMCLCore.models.sam_features.SAMFeatureExtractor`, or None for no PRG.
        report: optional ``callable(stage, fraction)`` (a :class:`~.cbct._Reporter`).
    """
    from ..preprocessing.softooth import prepare_softooth_input, render_occlusal

    inp = prepare_softooth_input(mesh, jaw, int(settings.target_faces), scale_mm=settings.coordinate_scale_mm)
    if sam is None:
        return PreparedScan(inp, None, None)
    if report:
        report("render", 0.2)
    view = render_occlusal(inp.vertices_canonical, inp.faces, int(settings.image_size), settings.field_of_view_mm)
    if report:
        report("sam", 0.35)
    features, visible = sam(view, settings.align_corners)
    return PreparedScan(inp, features, visible)


def build_sam(settings: SOFToothSettings, device, checkpoint=None, use_cache: bool = True):
    """The frozen SAM feature extractor of a card (see :func:`resolve_sam_checkpoint`)."""
    from ..models.sam_features import SAMFeatureExtractor

    path = resolve_sam_checkpoint(settings, checkpoint)
    return SAMFeatureExtractor(path, settings.sam_model_type, settings.sam_sha256 or None, device=str(device),
                               use_cache=use_cache, tiny_img_size=int(settings.sam_tiny_img_size))


def largest_regions(faces: np.ndarray, face_labels: np.ndarray, min_faces: int = 1) -> np.ndarray:
    """(M,) labels where every tooth keeps only its largest region of faces sharing a vertex;
    other faces of that tooth, and teeth whose largest region has fewer than ``min_faces``, become 0."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    out = np.asarray(face_labels).copy()
    for label in np.unique(out[out > 0]):
        members = np.flatnonzero(out == label)
        rows = np.repeat(np.arange(len(members)), 3)
        incidence = sparse.csr_matrix((np.ones(rows.size), (rows, faces[members].ravel())),
                                      shape=(len(members), int(faces.max()) + 1))
        _, comp = connected_components(incidence @ incidence.T, directed=False)
        counts = np.bincount(comp)
        keep = comp == counts.argmax()
        out[members[~keep]] = 0
        if counts.max() < min_faces:
            out[members] = 0
    return out


def run_network(net, prepared: PreparedScan, device) -> dict[str, np.ndarray]:
    """Stage 4 for one scan: the network's outputs (batch of one) as float numpy arrays."""
    import torch

    def tensor(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))[None].to(device)

    with torch.inference_mode():
        out = net(tensor(prepared.input.features), tensor(prepared.sam_features), tensor(prepared.visible))
    keys = ("mask_logits", "class_logits", "objectness", "centres")
    return {k: out[k].float().cpu().numpy() for k in keys}


def number_faces(outputs: dict, faces: np.ndarray, jaw: str, settings: SOFToothSettings) -> np.ndarray:
    """(M,) int64 FDI per face from one scan's network outputs (batch of one; stage 5)."""
    from ..models.softooth import assign_instances, faces_to_fdi

    mask_logits = outputs["mask_logits"][0]
    instance_fdi = assign_instances(mask_logits, outputs["class_logits"][0], outputs["objectness"][0],
                                    outputs["centres"][0], jaw, settings.objectness_threshold,
                                    settings.mask_threshold, settings.duplicate_iou, bool(settings.fdi_order))
    face_fdi = faces_to_fdi(mask_logits, instance_fdi, settings.mask_threshold)
    return largest_regions(faces, face_fdi, int(settings.min_tooth_faces))


class SOFToothPredictor:
    """Per-vertex FDI segmentation of one jaw with SOFTooth (stateful, over a pure ``nn.Module``).

    Args:
        weights: ``.safetensors`` path with its card, or None to use ``model``.
        model: registry name of a SOFTooth model (there is no default one).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        sam_checkpoint: SAM checkpoint file (see :func:`resolve_sam_checkpoint`).
        use_sam_cache: keep SAM embeddings on disk (``$TOOTHMCL_CACHE/sam``).
        fdi_order: override the card's ``fdi_order`` (None keeps it; False for the ablation).

    Raises:
        WeightsError: no model given, not a SOFTooth IOS card, or a SAM checkpoint that is
            missing or does not match the card.
    """

    def __init__(self, weights=None, model: str | None = None, device: str = "auto", sam_checkpoint=None,
                 use_sam_cache: bool = True, fdi_order: bool | None = None):
        if weights is None and model is None:
            raise WeightsError("there is no default SOFTooth model; pass --weights PATH or --model NAME")
        self.device = resolve_device(device)
        self.net, self.card = _load(weights, model, self.device)
        if self.card.task != "ios_teeth" or self.card.architecture != "softooth":
            raise WeightsError(f"{self.card.name} is a {self.card.task!r} {self.card.architecture!r} model, "
                               "not a SOFTooth IOS teeth model")
        try:
            self.settings = SOFToothSettings.from_dict(self.card.preprocess)
        except ConfigError as exc:
            raise WeightsError(f"model card of {self.card.name}: {exc}") from None
        if fdi_order is not None:
            self.settings = dataclasses.replace(self.settings, fdi_order=bool(fdi_order))
        built_with_prg = self.net.prg is not None
        use_prg = built_with_prg if self.settings.use_prg is None else bool(self.settings.use_prg)
        if use_prg and not built_with_prg:
            raise WeightsError(f"the card of {self.card.name} says use_prg but the network was built without "
                               "PRG (arch_args with_prg: false); fix the card")
        self.net.use_prg = use_prg
        self.sam = None
        if use_prg:
            from ..models.sam_features import EMBED_DIM

            if self.net.prg.sam_channels != EMBED_DIM:
                raise WeightsError(f"{self.card.name} expects {self.net.prg.sam_channels}-channel SAM features "
                                   f"but SAM encoders give {EMBED_DIM}; the card's arch_args are wrong")
            self.sam = build_sam(self.settings, self.device, sam_checkpoint, use_sam_cache)
        elif sam_checkpoint:
            logger.info("%s runs without PRG; the SAM checkpoint is not used", self.card.name)

    def predict(self, scan: MeshReadResult | SurfaceMesh, jaw: str | None = None,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                seed: int = 0) -> IOSResult:
        """Segment one jaw; labels come back in the vertex order of ``scan`` as given.

        Args:
            scan: a scan from :func:`ToothMCLCore.io.mesh.read_mesh`, or a bare
                :class:`SurfaceMesh` (e.g. from a Slicer model node), which is cleaned here.
            jaw: "upper" or "lower"; None to take ``scan``'s own jaw or decide from the geometry.
            seed: accepted for the same signature as :class:`~.ios.IOSPredictor`; SOFTooth
                samples nothing, so its result does not depend on it.

        Raises:
            InvalidInputError: a scan without faces (SOFTooth works on faces), a bad jaw.
        """
        scan, jaw = prepare_scan_and_jaw(scan, jaw)
        report = _Reporter(progress, cancel)
        report("prepare", 0.0)
        n_faces = len(scan.mesh.faces)
        prepared = prepare_scan(scan.mesh, jaw, self.settings, self.sam, report)
        inp = prepared.input
        report("segment", 0.6)
        outputs = self._forward(prepared)
        report("postprocess", 0.85)
        face_fdi = number_faces(outputs, inp.faces, jaw, self.settings)
        labels = inp.to_vertices(face_fdi).astype(np.int32)
        instances = arch_instances(labels)
        file_labels = scan.to_file_order(labels).astype(np.int32)
        file_instances = scan.to_file_order(instances).astype(np.int32)
        teeth = summarize_mesh(scan.mesh, labels)
        report("done", 1.0)
        provenance = {
            "model": self.card.name, "model_version": self.card.version, "model_sha256": self.card.sha256,
            "architecture": "softooth", "jaw": jaw, "faces": int(inp.n_faces),
            "decimated_from_faces": n_faces if inp.n_faces < n_faces else 0, "prg": self.sam is not None,
            "sam_model_type": self.settings.sam_model_type if self.sam is not None else "",
            "sam_weights_sha256": (self.sam.weights_id or "") if self.sam is not None else "",
            "objectness_threshold": self.settings.objectness_threshold, "fdi_order": self.settings.fdi_order,
            "toothmcl_version": __version__, "device": str(self.device),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return IOSResult(file_labels, file_instances, jaw, teeth, provenance)

    def _forward(self, prepared: PreparedScan) -> dict[str, np.ndarray]:
        return run_network(self.net, prepared, self.device)
