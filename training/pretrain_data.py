"""Paired CBCT-IOS data for the pretraining: sources, preparation, per-step items, batches.

See :mod:`training.pretrain` for the folder layout and what preparation and augmentation do.
A prepared pair (cached, :class:`training.cache.ArrayCache`) holds

- ``image`` (K, J, I) float32 in [0, 1]: the preprocessed CBCT inside the ROI, on the RAS grid
  whose ijk -> RAS matrix is ``meta["roi_ijk_to_ras"]``; ``labels`` (K, J, I) uint8 FDI when known;
- per jaw (``meta["jaws"]``, J of them): ``points_ras`` (J, n, 3) float32 sampled scan points in
  CBCT RAS (registered), ``normals_ras`` (J, n, 3), ``point_labels`` (J, n) int16 FDI / 0 when
  known, and the jaw's canonical frame in RAS, ``frame_rotation`` (J, 3, 3) and
  ``frame_origin`` (J, 3) (:func:`ToothMCLCore.preprocessing.ios.canonical_frame`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ToothMCLCore import fdi
from ToothMCLCore.config import CBCTPreprocessConfig
from ToothMCLCore.errors import InvalidInputError, RegistrationError
from ToothMCLCore.types import Geometry, SurfaceMesh, Volume

from .cache import ArrayCache, cache_key, file_stamp
from .datasets import augment_intensity
from .engine import sample_rng
from .patches import crop_affine, crop_geometry, random_centre, random_rotation, sample_crop

logger = logging.getLogger(__name__)

#: version of the preparation: bump to invalidate every cached pair
PREPARATION_VERSION = 1
_SCAN_SUFFIXES = (".obj", ".stl", ".ply", ".vtp", ".vtk")


@dataclass(frozen=True)
class PairSource:
    """Where one pair comes from: files, or a synthetic phantom seed.

    Attributes:
        pair_id: the patient / pair name used in messages and cache keys.
        cbct, cbct_labels: volume paths (labels optional).
        scans: jaw -> scan path.
        to_cbct: jaw -> known (4, 4) scan -> CBCT RAS map (registration skipped for that jaw).
        phantom_seed: make a phantom instead of reading files (at ``phantom_spacing_mm``, 0 = the
            training spacing); ``phantom_moved`` moves its scans by a seeded rigid transform so
            that they must be registered, as real scans.
    """

    pair_id: str
    cbct: str = ""
    cbct_labels: str = ""
    scans: dict = field(default_factory=dict)
    to_cbct: dict = field(default_factory=dict)
    phantom_seed: int | None = None
    phantom_moved: bool = False
    phantom_spacing_mm: float = 0.0

    def identity(self) -> list:
        if self.phantom_seed is not None:
            return ["phantom", self.phantom_seed, self.phantom_moved, self.phantom_spacing_mm]
        files = [self.cbct, self.cbct_labels, *[self.scans[j] for j in sorted(self.scans)]]
        return [file_stamp(f) for f in files if f] + [self.to_cbct]


def _find(folder: Path, stem: str, suffixes=None) -> str:
    if stem == "cbct" and (folder / "cbct").is_dir():
        return str(folder / "cbct")
    for child in sorted(folder.iterdir()):
        name = child.name.lower()
        if child.is_file() and name.startswith(stem + ".") and (suffixes is None or name.endswith(suffixes)):
            return str(child)
    return ""


def discover_pairs(root) -> tuple[list[PairSource], list[PairSource]]:
    """``(train, val)`` pair sources of a folder in the layout of :mod:`training.pretrain`."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"paired data folder {root} does not exist")
    pairs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        cbct = _find(folder, "cbct")
        scans = {jaw: s for jaw in fdi.JAWS if (s := _find(folder, jaw, _SCAN_SUFFIXES))}
        if not cbct or not scans:
            logger.warning("skipping %s: it needs a cbct file and an upper or lower scan", folder)
            continue
        to_cbct = {}
        reg = folder / "registration.json"
        if reg.is_file():
            to_cbct = {j: np.asarray(m, np.float64).tolist() for j, m in json.loads(reg.read_text()).items()}
        pairs.append(PairSource(folder.name, cbct, _find(folder, "cbct_labels"), scans, to_cbct))
    if not pairs:
        raise InvalidInputError(f"{root} holds no pair folder (<patient>/cbct.* with upper.* or lower.*)")
    splits_file = root / "splits.json"
    if not splits_file.is_file():
        return pairs, []
    splits = json.loads(splits_file.read_text())
    by_id = {p.pair_id: p for p in pairs}
    unknown = sorted(set(splits.get("train", [])) | set(splits.get("val", [])) - set(by_id))
    if unknown:
        raise InvalidInputError(f"{splits_file} names pairs that are not in {root}: {unknown[:5]}")
    return [by_id[i] for i in splits.get("train", [])], [by_id[i] for i in splits.get("val", [])]


def phantom_pairs(n: int, first_seed: int = 0, spacing_mm: float = 0.3, moved: bool = False) -> list[PairSource]:
    """``n`` synthetic pairs (seeds ``first_seed``...); scans in the CBCT frame unless ``moved``.

    Moved scans must be registered, which needs a CBCT of 0.8 mm or finer (the registration's
    thresholds are a few tenths of a millimetre): their phantom CBCT is made at
    ``min(spacing_mm, 0.8)`` and resampled to the training grid like any CBCT.
    """
    eye = np.eye(4).tolist()
    return [PairSource(f"phantom{s:04d}", scans={j: "" for j in fdi.JAWS},
                       to_cbct={} if moved else {j: eye for j in fdi.JAWS}, phantom_seed=s, phantom_moved=moved,
                       phantom_spacing_mm=min(spacing_mm, 0.8) if moved else spacing_mm)
            for s in range(first_seed, first_seed + max(0, int(n)))]


def _load(source: PairSource, spacing_mm: float) -> tuple[Volume, Volume | None, dict[str, SurfaceMesh]]:
    if source.phantom_seed is not None:
        from ToothMCLCore.synthetic import make_phantom

        spacing = source.phantom_spacing_mm or spacing_mm
        ph = make_phantom(source.phantom_seed, spacing=spacing, ios_resolution_mm=max(0.5, min(1.0, spacing_mm)))
        scans = {"upper": ph.ios_upper, "lower": ph.ios_lower}
        if source.phantom_moved:
            from scipy.spatial.transform import Rotation

            rng = np.random.default_rng([source.phantom_seed, 99])
            for jaw, mesh in scans.items():
                r = Rotation.from_rotvec(rng.normal(size=3) * 0.2).as_matrix()
                v = mesh.vertices_ras @ r.T + rng.uniform(-15, 15, size=3)
                scans[jaw] = dataclasses.replace(mesh, vertices_ras=v, source=f"{source.pair_id} {jaw}")
        return ph.image, ph.labels, scans
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.io.volume import read_volume

    cbct = read_volume(source.cbct)
    labels = read_volume(source.cbct_labels) if source.cbct_labels else None
    scans = {}
    for jaw, path in source.scans.items():
        mesh = read_mesh(path).mesh
        scans[jaw] = dataclasses.replace(mesh, jaw=jaw, source=f"{source.pair_id} {jaw} ({Path(path).name})")
    return cbct, labels, scans


def prepare_pair(source: PairSource, config) -> tuple[dict, dict]:
    """Preprocess, register, crop and sample one pair (``config``: a PretrainConfig).

    Raises:
        RegistrationError: a scan does not register onto the CBCT (the message names it).
    """
    from ToothMCLCore.io.mesh import occlusal_direction, vertex_normals
    from ToothMCLCore.preprocessing.cbct import preprocess_cbct, resample_onto
    from ToothMCLCore.preprocessing.correspondence import labels_at_points
    from ToothMCLCore.preprocessing.ios import canonical_frame, sample_points
    from ToothMCLCore.preprocessing.registration import RegistrationConfig, register_ios_to_cbct

    cbct, labels, scans = _load(source, config.spacing_mm)
    labels = labels if config.use_labels else None
    pre, _ = preprocess_cbct(cbct, CBCTPreprocessConfig(spacing_mm=config.spacing_mm))
    reg_config = RegistrationConfig.from_dict(dict(config.registration))
    reg_cbct = pre
    if labels is None and config.registration_spacing_mm and config.registration_spacing_mm != config.spacing_mm:
        reg_cbct, _ = preprocess_cbct(cbct, CBCTPreprocessConfig(spacing_mm=config.registration_spacing_mm))
    per_jaw, report = [], {}
    for jaw in fdi.JAWS:
        if jaw not in scans:
            continue
        mesh = dataclasses.replace(scans[jaw], jaw=jaw)
        if not config.use_labels:
            mesh = dataclasses.replace(mesh, labels=None)
        if jaw in source.to_cbct:
            matrix = np.asarray(source.to_cbct[jaw], np.float64)
        else:
            result = register_ios_to_cbct(mesh, reg_cbct, labels, reg_config, name=f"pair {source.pair_id}, {jaw} scan")
            matrix = result.matrix
            report[jaw] = {"median_mm": result.residual_median_mm, "inliers": result.inlier_fraction}
        v = mesh.vertices_ras @ matrix[:3, :3].T + matrix[:3, 3]
        moved = dataclasses.replace(mesh, vertices_ras=v)
        normals = vertex_normals(moved)
        frame = canonical_frame(v, occlusal_direction(moved, normals), jaw)
        idx = sample_points(frame.apply(v), config.points_per_jaw, seed=len(v))
        if len(idx) < config.points_per_jaw:  # small scan: repeat points to the fixed count
            logger.warning("%s %s scan has %d vertices < points_per_jaw %d; repeating points", source.pair_id, jaw,
                           len(v), config.points_per_jaw)
            idx = np.resize(idx, config.points_per_jaw)
        if mesh.labels is not None and np.asarray(mesh.labels).any():
            point_labels = np.asarray(mesh.labels)[idx]
        elif labels is not None:
            point_labels = labels_at_points(labels, v[idx])
        else:
            point_labels = None
        per_jaw.append((jaw, v[idx], normals[idx], point_labels, frame))

    # ROI: box of the registered scan points on the canonical grid, plus the margin
    m = pre.geometry.ras_to_ijk
    kji = (np.concatenate([p[1] for p in per_jaw]) @ m[:3, :3].T + m[:3, 3])[:, ::-1]
    margin = config.roi_margin_mm / config.spacing_mm
    lo = np.clip(np.floor(kji.min(axis=0) - margin).astype(int), 0, None)
    hi = np.minimum(np.ceil(kji.max(axis=0) + margin).astype(int) + 1, pre.array.shape)
    if np.any(hi <= lo):
        raise RegistrationError(f"pair {source.pair_id}: the registered scans lie outside the CBCT")
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    roi = pre.geometry.ijk_to_ras.copy()
    roi[:3, 3] = pre.geometry.ijk_to_ras[:3, :3] @ lo[::-1] + roi[:3, 3]
    arrays = {"image": pre.array[box].astype(np.float32),
              "points_ras": np.stack([p[1] for p in per_jaw]).astype(np.float32),
              "normals_ras": np.stack([p[2] for p in per_jaw]).astype(np.float32),
              "frame_rotation": np.stack([p[4].rotation for p in per_jaw]),
              "frame_origin": np.stack([p[4].origin for p in per_jaw])}
    if labels is not None:
        arrays["labels"] = resample_onto(labels, pre.geometry, pre.array.shape, is_label=True).array[box].astype(np.uint8)
    if all(p[3] is not None for p in per_jaw):
        arrays["point_labels"] = np.stack([p[3] for p in per_jaw]).astype(np.int16)
    meta = {"pair_id": source.pair_id, "jaws": [p[0] for p in per_jaw], "roi_ijk_to_ras": roi.tolist(),
            "registration": report}
    return arrays, meta


def _prep_key(source: PairSource, config) -> str:
    keys = ("spacing_mm", "points_per_jaw", "roi_margin_mm", "use_labels", "registration", "registration_spacing_mm")
    return cache_key(source.pair_id, PREPARATION_VERSION, source.identity(), {k: getattr(config, k) for k in keys})


def _as_cache(cache) -> ArrayCache:
    return cache if isinstance(cache, ArrayCache) else ArrayCache(cache or None)


def prepare_all(sources: list[PairSource], config, cache) -> tuple[list[PairSource], list[tuple[str, str]]]:
    """Prepare (and cache) every pair; returns ``(accepted, [(pair_id, reason) refused])``.

    ``cache`` is an :class:`ArrayCache` or its folder ("" / None: in memory). Under torchrun
    each rank prepares every ``WORLD_SIZE``-th pair and the ranks share the outcome, so all of
    them train on the same accepted pairs.
    """
    cache = _as_cache(cache)
    dist = torch.distributed
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    refused = []
    for source in sources[rank::world]:
        try:
            cache.get(_prep_key(source, config), lambda s=source: prepare_pair(s, config))
        except RegistrationError as exc:
            refused.append((source.pair_id, str(exc)))
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, refused)
        refused = [r for part in gathered for r in part]
    bad = {name for name, _ in refused}
    return [s for s in sources if s.pair_id not in bad], sorted(refused)


class PairDataset(torch.utils.data.Dataset):
    """One augmented crop + both scans per item (``augment=False``: centred crop, no change).

    ``cache_dir``: an :class:`ArrayCache` or its folder ("" / None: in memory).
    """

    def __init__(self, sources: list[PairSource], config, seed: int, augment: bool, cache_dir=None):
        self.sources, self.config, self.seed, self.augment = list(sources), config, int(seed), augment
        self.cache_dir, self.epoch = cache_dir, 0
        self._cache = cache_dir if isinstance(cache_dir, ArrayCache) else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        if self._cache is None:
            self._cache = _as_cache(self.cache_dir)
        c, source = self.config, self.sources[index]
        arrays, meta = self._cache.get(_prep_key(source, c), lambda: prepare_pair(source, c))
        rng = sample_rng(self.seed, self.epoch, index) if self.augment else np.random.default_rng([self.seed, index])
        image, size = arrays["image"], tuple(int(s) for s in c.crop_size)
        if self.augment:
            centre = random_centre(rng, tuple(slice(0, n) for n in image.shape), size, image.shape)
            affine = crop_affine(centre, size, random_rotation(rng, c.cbct_rotation_rad))
        else:
            affine = crop_affine((np.asarray(image.shape) - 1) / 2.0, size)
        x = sample_crop(image, affine, size, order=1)
        if self.augment and c.intensity_augment:
            x = augment_intensity(x, rng)
        labels_crop = sample_crop(arrays["labels"], affine, size, order=0) if "labels" in arrays else None
        crop_m = crop_geometry(Geometry.from_ijk_to_ras(np.asarray(meta["roi_ijk_to_ras"])), affine).ijk_to_ras
        pts, feats, net_to_ras = [], [], []
        for j in range(len(meta["jaws"])):
            p_net, f, m = _jaw_input(arrays, j, c, rng if self.augment else None)
            pts.append(p_net)
            feats.append(f)
            net_to_ras.append(m)
        point_labels = np.asarray(arrays["point_labels"]) if "point_labels" in arrays else None
        return {"cbct": torch.from_numpy(np.ascontiguousarray(x, np.float32))[None],
                "ios_points": torch.from_numpy(np.stack(pts)), "ios_features": torch.from_numpy(np.stack(feats)),
                "meta": {"pair_id": meta["pair_id"], "crop_ijk_to_ras": crop_m, "crop_shape": size,
                         "labels_crop": labels_crop, "net_to_ras": np.stack(net_to_ras),
                         "points_ras": np.asarray(arrays["points_ras"], np.float64), "point_labels": point_labels}}


def _jaw_input(arrays, j: int, c, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network points (n, 3), features (n, 6) of jaw ``j`` and the (4, 4) map network -> CBCT RAS."""
    from ToothMCLCore.preprocessing.ios import point_features

    rot, origin = np.asarray(arrays["frame_rotation"][j]), np.asarray(arrays["frame_origin"][j])
    canonical = (np.asarray(arrays["points_ras"][j], np.float64) - origin) @ rot.T
    normals = np.asarray(arrays["normals_ras"][j], np.float64) @ rot.T
    r, s, t = np.eye(3), 1.0, np.zeros(3)
    if rng is not None:
        r = random_rotation(rng, c.ios_rotation_rad)
        s = float(rng.uniform(*c.ios_scale))
        t = rng.uniform(-c.ios_shift_mm, c.ios_shift_mm, size=3)
    aug = s * canonical @ r.T + t
    scale = c.coordinate_scale_mm
    m = np.eye(4)  # network -> aug (x scale) -> canonical (inverse similarity) -> RAS (frame inverse)
    m[:3, :3] = rot.T @ r.T * (scale / s)
    m[:3, 3] = origin - rot.T @ r.T @ t / s
    return (aug / scale).astype(np.float32), point_features(aug, normals @ r.T, scale), m


def collate_pairs(items: list[dict]) -> dict:
    """Batch: ``cbct`` (B, 1, K, J, I); ``ios_points`` / ``ios_features`` (M, n, 3 | 6), every jaw of
    every pair; ``items``: per pair its metadata and ``jaw_rows`` (its rows of the IOS tensors)."""
    metas, start = [], 0
    for item in items:
        n = item["ios_points"].shape[0]
        metas.append({**item["meta"], "jaw_rows": list(range(start, start + n))})
        start += n
    return {"cbct": torch.stack([i["cbct"] for i in items]),
            "ios_points": torch.cat([i["ios_points"] for i in items]),
            "ios_features": torch.cat([i["ios_features"] for i in items]), "items": metas}


__all__ = ["PairDataset", "PairSource", "collate_pairs", "discover_pairs", "phantom_pairs", "prepare_all",
           "prepare_pair"]
