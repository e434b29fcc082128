"""A click prompts SAM on the scan's occlusal rendering; the mask comes back to the scan's faces.

With a SAM checkpoint present, an annotator can add a missed tooth without the segmentation
model: the scan is rendered from the occlusal side in its canonical jaw frame (the rendering
SOFTooth's PRG uses, with its face <-> pixel map:
:func:`~ToothMCLCore.preprocessing.softooth.occlusal.render_occlusal`), the frozen image encoder
embeds it once per scan (:class:`~ToothMCLCore.models.sam_features.SAMFeatureExtractor`, cached on
disk), and each click is a positive point prompt to SAM's prompt encoder and mask decoder
(``segment_anything.SamPredictor.predict``, its three masks, the one SAM scores highest kept).
A face belongs to the mask when its pixel (the ``C_map`` of SOFTooth's Eq. 2) does; a vertex
when most of its faces do. The new tooth is the part of that region connected to the click among
vertices labelled gingiva (teeth already labelled keep their numbers), numbered by arch order
(:func:`~.common.numbers_by_arch`).

What is ours: the choice of SAM's best-scored mask (SAM's own predictor returns all three for an
ambiguous single point; a tooth is the whole-object mask, which SAM usually scores highest),
and the majority rule from faces to vertices. Not measured on real scans: no SAM checkpoint can
be downloaded here (the tests run the whole path with a small random-weight SAM, whose masks mean
nothing), so this tool's accuracy is unknown until someone with the official weights measures it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .common import Click, Interaction, record
from .ios_tools import ScanGraph, _check_number, _labels, _numbers_for


class SAMPrompter:
    """SAM loaded once, with one occlusal rendering and embedding per scan (module docstring).

    Args:
        checkpoint_path: the official SAM checkpoint (``vit_b``/``vit_l``/``vit_h``); None for
            ``model_type="tiny"`` (tests).
        model_type: "vit_b", "vit_l", "vit_h" or "tiny".
        sha256: expected SHA-256 of the checkpoint (default: the published one).
        device: "auto", "cpu" or "cuda".
        use_cache: keep scan embeddings on disk (:class:`~ToothMCLCore.models.sam_features.SAMFeatureExtractor`).
        tiny_img_size: rendering size for the tiny model (SAM's ViTs use 1024).
    """

    def __init__(self, checkpoint_path=None, model_type: str = "vit_b", sha256: str | None = None,
                 device: str = "auto", use_cache: bool = True, tiny_img_size: int = 256):
        from segment_anything import SamPredictor

        from ..models.sam_features import SAMFeatureExtractor, build_sam

        sam, weights_id = build_sam(model_type, checkpoint_path, sha256, tiny_img_size)
        self.model_type = model_type
        self.features = SAMFeatureExtractor(model_type=model_type, device=device, use_cache=use_cache,
                                            encoder=(sam.image_encoder, weights_id))
        self.sam = sam.to(self.features.device)
        self.predictor = SamPredictor(self.sam)
        self.img_size = int(sam.image_encoder.img_size)
        self._scan = None  # (id of the graph, its rendering)

    def view(self, graph: ScanGraph):
        """The occlusal rendering of ``graph``'s scan, made (and embedded) once per scan."""
        import torch

        from ..preprocessing.softooth.occlusal import render_occlusal

        if self._scan is not None and self._scan[0] is graph:
            return self._scan[1]
        faces = np.asarray(graph.mesh.faces, np.int64)
        points = graph.canonical_points()
        if np.linalg.det(graph.frame.rotation) < 0:  # the upper jaw's frame is a mirror: keep the winding
            faces = faces[:, [0, 2, 1]]
        view = render_occlusal(points, faces, image_size=self.img_size)
        embedding = self.features.embed(view.image)
        self.predictor.reset_image()
        self.predictor.original_size = view.image_hw
        self.predictor.input_size = view.image_hw  # square, at the encoder's size: no resizing
        self.predictor.features = torch.from_numpy(embedding)[None].to(self.features.device)
        self.predictor.is_image_set = True
        self._scan = (graph, view)
        return view

    def mask(self, graph: ScanGraph, vertex: int) -> tuple[np.ndarray, float]:
        """((N,) bool vertices in SAM's mask for a positive click on ``vertex``, SAM's score)."""
        import torch

        view = self.view(graph)
        row, col = view.project(graph.canonical_points()[[vertex]])[0]
        with torch.inference_mode():
            masks, scores, _ = self.predictor.predict(point_coords=np.array([[col, row]], np.float32),
                                                      point_labels=np.array([1]), multimask_output=True)
        best = int(np.argmax(scores))
        ij = view.face_pixel_ij
        in_mask = masks[best][ij[:, 0], ij[:, 1]].astype(np.float64)
        faces = np.asarray(graph.mesh.faces, np.int64)
        n = len(graph.vertices)
        votes = np.bincount(faces.ravel(), weights=np.repeat(in_mask, 3), minlength=n)
        counts = np.bincount(faces.ravel(), minlength=n)
        return votes > 0.5 * np.maximum(counts, 1), float(scores[best])


def sam_add_tooth(graph: ScanGraph, labels, click_ras, prompter: SAMPrompter | None,
                  number: int | None = None) -> tuple[np.ndarray, Interaction]:
    """Add the missed tooth under a click with SAM (module docstring).

    Raises:
        InvalidInputError: no SAM loaded; the click is off the scan or on a tooth already; SAM's
            mask holds no gingiva vertex connected to the click; ``number`` not free in this jaw.
    """
    if prompter is None:
        raise InvalidInputError("the SAM prompt needs a SAM checkpoint: give --sam-checkpoint (sam_vit_b_01ec64.pth) "
                                "or set TOOTHMCL_SAM_CHECKPOINT, or use the model-based add tool")
    lab = _labels(graph, labels)
    seed = graph.vertex_at(click_ras)
    if lab[seed] != 0:
        raise InvalidInputError(f"the click is on tooth {lab[seed]}, not on gingiva: to add a missed tooth, click "
                                "where the tooth is not segmented")
    inside, score = prompter.mask(graph, seed)
    region = graph.component(inside & (lab == 0), seed)
    if not region.any():
        raise InvalidInputError(f"SAM's mask at this click (score {score:.2f}) holds no unlabelled surface around it; "
                                "click on the middle of the tooth's crown, or use the model-based add tool")
    if number is None:
        number = _numbers_for(graph, lab, [region])[0]
    _check_number(graph, lab, int(number))
    out = lab.copy()
    out[region] = int(number)
    return out, record("sam", [Click("tooth", tuple(map(float, click_ras)))], int(number), (int(number),),
                       int(region.sum()), {"sam_model": prompter.model_type, "sam_score": round(score, 3)})

