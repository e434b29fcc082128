"""Fine-tuning data: dataset-export cases prepared once (cached), crops and jaws per step, validation.

CBCT cases are prepared exactly as inference prepares a volume
(:func:`training.datasets.prepare_case`: RAS, isotropic spacing, offset, clip, normalise; labels
as class indices of the ``cbct`` scheme) and cached with up to 20,000 random tooth voxels (crop
centres). IOS jaws are put in their canonical frame and farthest-point sampled as inference
does (:mod:`ToothMCLCore.preprocessing.ios`). Random draws come from
:func:`training.engine.sample_rng`, so they do not depend on the number of processes.
"""

from __future__ import annotations

import numpy as np
import torch

from ToothMCLCore import fdi

from .cache import ArrayCache, cache_key, file_stamp
from .datasets import augment_intensity, expand_box, prepare_case
from .engine import sample_rng
from .patches import crop_affine, random_centre, random_rotation, sample_crop

PREPARATION_VERSION = 1
#: tooth voxels kept per case to centre crops on
_FOREGROUND_SAMPLES = 20_000


def _cbct_case(cache: ArrayCache, case, preprocess) -> tuple[dict, dict]:
    def build():
        record = case.load()
        prepared = prepare_case(record.image, record.labels, preprocess, name=case.case_id)
        fg = np.argwhere(prepared.classes > 0)
        if len(fg) > _FOREGROUND_SAMPLES:
            fg = fg[np.random.default_rng(0).choice(len(fg), _FOREGROUND_SAMPLES, replace=False)]
        box = [[s.start, s.stop] for s in prepared.teeth_box]
        arrays = {"image": prepared.image.astype(np.float32), "classes": prepared.classes.astype(np.uint8),
                  "foreground": fg.astype(np.int32).reshape(-1, 3)}
        return arrays, {"case_id": case.case_id, "teeth_box": box}

    stamps = [file_stamp(p) for p in sorted(case.paths.values())]
    return cache.get(cache_key(case.case_id, PREPARATION_VERSION, stamps, preprocess.to_dict()), build)


def _region(meta: dict, shape, margin_voxels: int, rng=None) -> tuple[slice, ...]:
    box = tuple(slice(a, b) for a, b in meta["teeth_box"])
    return expand_box(box, shape, margin_voxels, rng)


class _Cases(torch.utils.data.Dataset):
    """Dataset cases prepared through an :class:`ArrayCache` opened in the worker that reads them
    (a cache holds memory maps, which do not cross process boundaries)."""

    def __init__(self, cases, cache_dir, seed: int = 0):
        self.cases, self.cache_dir, self.seed = list(cases), cache_dir, int(seed)
        self.epoch, self._cache = 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.cases)

    @property
    def cache(self) -> ArrayCache:
        if self._cache is None:
            self._cache = ArrayCache(self.cache_dir or None)
        return self._cache


class CBCTCropDataset(_Cases):
    """Training crops ``(image (1, K, J, I) float32, classes (1, K, J, I) int64)``, augmented."""

    def __init__(self, cases, preprocess, config, seed: int, cache_dir):
        super().__init__(cases, cache_dir, seed)
        self.preprocess, self.config = preprocess, config

    def __getitem__(self, index):
        c = self.config
        arrays, meta = _cbct_case(self.cache, self.cases[index], self.preprocess)
        rng = sample_rng(self.seed, self.epoch, index)
        image, classes, size = arrays["image"], arrays["classes"], tuple(int(s) for s in c.crop_size)
        region = _region(meta, image.shape, round(c.roi_margin_mm / self.preprocess.spacing_mm), rng)
        fg = arrays["foreground"]
        inside = np.all([(fg[:, a] >= region[a].start) & (fg[:, a] < region[a].stop) for a in range(3)], axis=0)
        if rng.random() < c.foreground_fraction and inside.any():
            centre = fg[rng.choice(np.flatnonzero(inside))].astype(np.float64)
        else:
            centre = random_centre(rng, region, size, image.shape)
        affine = crop_affine(centre, size, random_rotation(rng, c.rotation_rad))
        x = sample_crop(image, affine, size, order=1)
        y = sample_crop(classes, affine, size, order=0)
        if c.intensity_augment:
            x = augment_intensity(x, rng)
        return (torch.from_numpy(np.ascontiguousarray(x, np.float32))[None],
                torch.from_numpy(y.astype(np.int64))[None])


class CBCTCaseDataset(_Cases):
    """Validation cases: the teeth box plus the margin, ``(image (1, K, J, I), classes (K, J, I))``."""

    def __init__(self, cases, preprocess, config, cache_dir):
        super().__init__(cases, cache_dir)
        self.preprocess, self.config = preprocess, config

    def __getitem__(self, index):
        arrays, meta = _cbct_case(self.cache, self.cases[index], self.preprocess)
        region = _region(meta, arrays["image"].shape, round(self.config.roi_margin_mm / self.preprocess.spacing_mm))
        x = np.array(arrays["image"][region], np.float32)  # a copy: the cache is memory-mapped read-only
        return torch.from_numpy(x)[None], torch.from_numpy(np.array(arrays["classes"][region], np.int64))


def cbct_validation(model, loader, config) -> dict[str, float]:
    """Mean over cases of the mean Dice over each case's teeth (sliding window over the box)."""
    from monai.inferers import sliding_window_inference

    from ToothMCLCore.evaluation.dice import dice_per_tooth, mean_dice

    scores = []
    for x, y in loader:
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=x.device.type == "cuda"):
            logits = sliding_window_inference(x, tuple(int(s) for s in config.crop_size), 1, model,
                                              overlap=config.sw_overlap, mode="gaussian")
        pred = fdi.class_index_to_fdi(logits[0].float().argmax(0).cpu().numpy(), "cbct")
        truth = fdi.class_index_to_fdi(y[0].cpu().numpy(), "cbct")
        scores.append(mean_dice(dice_per_tooth(pred, truth)))
    valid = [s for s in scores if np.isfinite(s)]
    dice = float(np.mean(valid)) if valid else 0.0
    return {"dice": dice, "score": dice}


# ------------------------------------------------------------------------------------------------
# IOS
# ------------------------------------------------------------------------------------------------

def _ios_jaw(cache: ArrayCache, case, n_points: int, whole: bool = False) -> tuple[dict, dict]:
    """A jaw in its canonical frame: a fixed sample of ``n_points`` (the paper's way), or with
    ``whole`` every vertex with the faces, to be resampled at each step (:mod:`.ios_sampling`)."""
    def build():
        from ToothMCLCore.io.mesh import occlusal_direction, vertex_normals
        from ToothMCLCore.preprocessing.ios import canonical_frame, sample_points

        record = case.load()
        mesh, jaw = record.mesh, record.jaw
        normals = vertex_normals(mesh)
        frame = canonical_frame(mesh.vertices_ras, occlusal_direction(mesh, normals), jaw)
        pts, nrm = frame.apply(mesh.vertices_ras), frame.apply_vectors(normals)
        classes = fdi.fdi_to_class_index(np.asarray(record.labels), f"ios_{jaw}", strict=False)
        if whole:
            arrays = {"points": pts.astype(np.float32), "normals": nrm.astype(np.float32),
                      "faces": np.asarray(mesh.faces, np.int32), "classes": classes.astype(np.uint8)}
            return arrays, {"case_id": case.case_id, "jaw": jaw}
        idx = sample_points(pts, n_points, seed=0)
        if len(idx) < n_points:  # a small mesh: repeat points up to the fixed count
            idx = np.resize(idx, n_points)
        arrays = {"points": pts[idx].astype(np.float32), "normals": nrm[idx].astype(np.float32),
                  "classes": classes[idx].astype(np.uint8)}
        return arrays, {"case_id": case.case_id, "jaw": jaw}

    stamps = [file_stamp(p) for p in sorted(case.paths.values())]
    key = (PREPARATION_VERSION, stamps, "whole") if whole else (PREPARATION_VERSION, stamps, n_points)
    return cache.get(cache_key(case.case_id, *key), build)


class IOSJawDataset(_Cases):
    """Jaws as ``(points (n, 3), features (n, 6), classes (n,))``; augmented for training.

    ``config.sampling``: ``"fixed"`` (the paper's way) samples ``n_points`` once per jaw and
    augments its coordinates; ``"mesh"`` draws a new resolution and sample of the whole scan at
    every step, as inference would see it (:func:`training.ios_sampling.resample_jaw`; validation
    takes the scan as stored), so ``n`` differs between jaws: use batch size 1.
    """

    def __init__(self, cases, config, seed: int, cache_dir, augment: bool):
        super().__init__(cases, cache_dir, seed)
        self.config, self.augment = config, augment

    def __len__(self):
        return len(self.cases) * (self.config.repeats if self.augment else 1)

    def __getitem__(self, index):
        from ToothMCLCore.preprocessing.ios import MIRROR_X, augment, point_features

        from .ios_sampling import RESOLUTION_CHOICES, resample_jaw, sample_like_inference

        c = self.config
        whole = c.sampling == "mesh"
        arrays, meta = _ios_jaw(self.cache, self.cases[index % len(self.cases)], c.n_points, whole=whole)
        rng = sample_rng(self.seed, self.epoch, index)
        pts, nrm = np.asarray(arrays["points"], np.float64), np.asarray(arrays["normals"], np.float64)
        classes = np.asarray(arrays["classes"], np.int64)
        if whole and self.augment:
            choices = RESOLUTION_CHOICES if c.resolution_augment else (("native", 1.0),)
            pts, nrm, classes, _ = resample_jaw(pts, np.asarray(arrays["faces"]), classes, c.n_points, rng, choices)
        elif whole:
            idx = sample_like_inference(pts, c.n_points, np.random.default_rng(0))
            pts, nrm, classes = pts[idx], nrm[idx], classes[idx]
        if self.augment:
            pts, nrm = augment(pts, nrm, rng, max_angle=c.rotation_rad, shift_mm=c.shift_mm, scale=tuple(c.scale),
                               tilt=c.tilt_rad, jitter_mm=c.jitter_mm,
                               width=tuple(c.arch_width) if c.arch_width is not None else None)
            if c.mirror and rng.random() < c.mirror:  # no draw when off: earlier runs stay reproducible
                pts, nrm = pts * MIRROR_X, nrm * MIRROR_X
                classes = fdi.mirror_permutation(f"ios_{meta['jaw']}")[classes]
        scale = c.coordinate_scale_mm
        return (torch.from_numpy((pts / scale).astype(np.float32)),
                torch.from_numpy(point_features(pts, nrm, scale)),
                torch.from_numpy(classes))


def ios_validation(model, loader) -> dict[str, float]:
    """Point accuracy and the mean over jaws of the mean Dice over each jaw's tooth classes."""
    dices, correct, total = [], 0, 0
    for points, features, classes in loader:
        pred = model(points, features).argmax(-1)[0].cpu().numpy()
        truth = classes[0].cpu().numpy()
        correct, total = correct + int((pred == truth).sum()), total + truth.size
        per_class = [2.0 * np.sum((pred == k) & (truth == k)) / (np.sum(pred == k) + np.sum(truth == k))
                     for k in np.unique(truth) if k > 0]
        if per_class:
            dices.append(float(np.mean(per_class)))
    dice = float(np.mean(dices)) if dices else 0.0
    return {"dice": dice, "accuracy": correct / max(total, 1), "score": dice}
