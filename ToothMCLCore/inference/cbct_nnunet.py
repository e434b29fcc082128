"""CBCT segmentation with an nnU-Net v2 tooth model (a results folder), through our pipeline.

The same ``predict(volume, progress, cancel) -> CBCTResult`` as :class:`~.cbct.CBCTPredictor`,
so ``segment-cbct --weights FOLDER``, the corrections and the ``.seg.nrrd`` output work
unchanged. The folder is read by :mod:`ToothMCLCore.models.nnunet` (weights only, network
classes only from dynamic_network_architectures and torch.nn). Stages:

1. ``preprocess``: the volume is put on the RAS grid at the plans' spacing (one trilinear
   interpolation, :func:`~ToothMCLCore.preprocessing.cbct.resample_to_canonical`), then
   presented as nnU-Net saw its training images: the array of an axial image stored with the
   identity direction in LPS (SimpleITK's order: x towards the patient's left, y posterior;
   ToothFairy2's ``.mha`` files are so), i.e. our RAS grid flipped in x and y, with the plans'
   ``transpose_forward``; intensities normalised as the plans say (``CTNormalization``: clipped
   to the dataset's 0.5 / 99.5 percentiles, minus the mean, over the standard deviation; or
   ``ZScoreNormalization`` of the image). Anisotropic plans work the same way: the plans' spacing
   is in the network's (transposed) axis order, so each of our RAS axes gets the spacing of the
   network axis it becomes, and the grid is resampled once to those three sizes. (nnU-Net
   resamples images with third-order splines, and the low-resolution axis of strongly anisotropic
   data apart with nearest neighbour along it; we interpolate trilinearly in one pass, as for every
   other model. A scan already at the plans' spacing is not interpolated on either side: that is
   what the agreement test compares.)
2. ``segment``: windows of the plans' patch size where nnU-Net puts them (step at most half a
   patch), Gaussian weights of sigma 1/8 of the patch (nnU-Net's values); the class probabilities of
   each window are summed into our 34 CBCT classes (teeth by FDI number; a tooth's pulp, where a
   ToothFairy3 model has it, into its tooth), followed by one class per non-tooth structure the
   model knows (jaws, canals, sinuses, pharynx, bridge, crown, implant:
   :mod:`ToothMCLCore.structures`), before blending. nnU-Net blends logits and
   mirrors the input 8 times by default; we blend probabilities and do not mirror (``mirror``
   turns it on); the tests compare the two.
3. ``postprocess``: a voxel whose most probable class is a structure takes that structure's
   label value; the others go through our FDI order-aware clean-up of the teeth
   (:func:`~ToothMCLCore.postprocessing.cbct.number_teeth`), which never sees the structures.
4. ``restore``: labels resampled onto the input grid (:func:`~.cbct.restore_labels`).

Not yet: the whole volume is segmented (no ROI crop; a volume whose class probabilities
would exceed :data:`MAX_PROBABILITY_BYTES` is refused); one fold runs (nnU-Net averages all
folds by default); ``use_mask_for_norm`` is not applied (CBCT tooth plans do not use it).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from pathlib import Path

import numpy as np

from .. import __version__, fdi, structures
from ..config import PostprocessConfig
from ..errors import InvalidInputError, ResourceLimitError, WeightsError
from ..models.checkpoint import sha256_of
from ..models.nnunet import DEFAULT_CHECKPOINT, label_values, load_network, read_results_folder
from ..postprocessing.cbct import number_teeth
from ..preprocessing.cbct import canonical_geometry, resample_to_canonical
from ..types import Volume
from .cbct import CBCTResult, ProgressFn, _Reporter, click_window, restore_labels, summarize
from .device import autocast, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

#: nnU-Net's sliding-window settings
OVERLAP = 0.5
SIGMA_SCALE = 0.125
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization")
#: class probabilities (two float32 copies of our classes over the whole volume) beyond this are refused
MAX_PROBABILITY_BYTES = 8 * 1024**3


class NNUNetCBCTPredictor:
    """Tooth segmentation with an nnU-Net v2 results folder (see the module docstring).

    Args:
        folder: the ``<Trainer>__<Plans>__<configuration>`` results folder.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        fold: the fold whose checkpoint runs (default: the first one present).
        checkpoint: checkpoint file name in ``fold_X``.
        mirror: average the 8 mirrored versions of each window, as nnU-Net does by default.
        precision: on CPU ``"auto"`` (bfloat16 where the CPU has bf16 instructions: a window
            about twice as fast), ``"fp32"`` (nnU-Net's own CPU precision) or ``"bf16"``; CUDA uses
            fp16 AMP (:func:`~.device.resolve_precision`).

    Raises:
        WeightsError: a folder :mod:`ToothMCLCore.models.nnunet` refuses, labels that are not
            ToothFairy2's, or plans this pipeline cannot follow (another normalisation, more than
            one channel, a spacing that is not three positive sizes).
    """

    def __init__(self, folder, device: str = "auto", fold=None, checkpoint: str = DEFAULT_CHECKPOINT,
                 mirror: bool = False, precision: str = "auto"):
        self.results = read_results_folder(folder, None if fold is None else [fold], checkpoint)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        net, _ = load_network(self.results, fold)
        self.net = net.to(self.device)
        self.fold = str(fold) if fold is not None else min(self.results.checkpoints)
        self.checkpoint_sha256 = sha256_of(self.results.checkpoints[self.fold])
        #: what decides the classes and the preprocessing, hashed once for every result's provenance
        self.dataset_sha256 = sha256_of(self.results.root / "dataset.json")
        self.plans_sha256 = sha256_of(self.results.root / "plans.json")
        self.mirror = bool(mirror)
        plans, cfg = self.results.plans, self.results.configuration_plans
        source = self.results.root / "plans.json"
        missing = [k for k in ("spacing", "patch_size", "normalization_schemes") if not cfg.get(k)]
        if missing:
            raise WeightsError(f"{source}: configuration {self.results.configuration!r} has no {', '.join(missing)}; "
                               "use the plans.json the model was trained with")
        self.patch = tuple(int(s) for s in cfg["patch_size"])
        self.transpose = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
        if sorted(self.transpose) != [0, 1, 2]:
            raise WeightsError(f"{source}: transpose_forward {self.transpose} is not a permutation of 0, 1, 2")
        try:
            spacing = [float(s) for s in cfg["spacing"]]
        except (TypeError, ValueError):
            spacing = []
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise WeightsError(f"{source}: spacing {cfg['spacing']!r} is not three positive voxel sizes in mm; use "
                               "the plans.json the model was trained with")
        spacing_kji = np.empty(3)
        spacing_kji[list(self.transpose)] = spacing  # network axis a is our (k, j, i) axis transpose[a]
        #: the grid the network runs on, along R, A, S (i, j, k); one size for isotropic plans
        self.spacing_ras = spacing_kji[::-1].copy()
        isotropic = float(self.spacing_ras.max()) <= 1.0001 * float(self.spacing_ras.min())
        self.spacing_mm = float(self.spacing_ras[0]) if isotropic else [float(v) for v in self.spacing_ras]
        self.normalization = cfg["normalization_schemes"][0]
        if self.normalization not in NORMALIZATIONS:
            raise WeightsError(f"{source}: normalisation {self.normalization!r} is not one of {NORMALIZATIONS}")
        self.intensity = plans.get("foreground_intensity_properties_per_channel", {}).get("0", {})
        if self.normalization == "CTNormalization" and not {"mean", "std", "percentile_00_5",
                                                            "percentile_99_5"} <= set(self.intensity):
            raise WeightsError(f"{source}: CTNormalization needs foreground_intensity_properties_per_channel['0'] "
                               "(mean, std, percentile_00_5, percentile_99_5)")
        values = label_values(self.results.dataset, str(self.results.root / "dataset.json"))
        per_channel = [values[c] for c in range(len(values))]
        #: label values of the non-tooth structures this model segments; their classes follow our 34
        self.structure_values = sorted({v for v in per_channel if structures.is_structure(v)})
        n_cbct = fdi.num_classes("cbct")
        extra = {v: n_cbct + i for i, v in enumerate(self.structure_values)}
        #: our class index of every nnU-Net class (index = nnU-Net's output channel)
        self.class_map = np.array([extra[v] if v in extra else int(fdi.fdi_to_class_index(v, "cbct"))
                                   for v in per_channel], np.int64)
        self.n_classes = n_cbct + len(self.structure_values)
        self.name = self.results.root.parent.name or self.results.root.name

    # ------------------------------------------------------------------------------------
    def _spacing_text(self) -> str:
        if isinstance(self.spacing_mm, float):
            return f"{self.spacing_mm:g}"
        return " x ".join(f"{v:g}" for v in self.spacing_mm)

    def to_network_array(self, canonical: np.ndarray) -> np.ndarray:
        """Our RAS [k, j, i] array as nnU-Net's input (LPS-stored, transposed); float32."""
        return np.ascontiguousarray(np.transpose(canonical[:, ::-1, ::-1], self.transpose), dtype=np.float32)

    def from_network_array(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_network_array` on the last three axes."""
        back = np.argsort(self.transpose)
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + int(a) for a in back))
        return out[..., ::-1, ::-1]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """The plans' intensity normalisation (module docstring), float32."""
        x = x.astype(np.float32, copy=True)
        if self.normalization == "CTNormalization":
            p = self.intensity
            np.clip(x, float(p["percentile_00_5"]), float(p["percentile_99_5"]), out=x)
            return (x - np.float32(p["mean"])) / np.float32(max(float(p["std"]), 1e-8))
        return (x - x.mean()) / max(float(x.std()), 1e-8)

    def predict(self, volume: Volume, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None) -> CBCTResult:
        """Segment and number the teeth of ``volume``; the result is on ``volume``'s grid."""
        if volume.array.ndim != 3:
            raise InvalidInputError(f"volume must be 3-D (got shape {volume.array.shape}); load a single CBCT series")
        report = _Reporter(progress, cancel)
        canonical, probs = self.probabilities(volume, report)
        report("postprocess", 0.85)
        labels = self.postprocess(probs, canonical)
        report("restore", 0.95)
        restored = Volume(restore_labels(labels, canonical.geometry, volume), volume.geometry, volume.source)
        report("done", 1.0)
        provenance = {
            "model": self.name, "model_format": "nnU-Net v2 results folder", "model_folder": str(self.results.root),
            "configuration": self.results.configuration, "fold": self.fold,
            "model_version": f"{self.results.configuration} fold {self.fold}",
            "model_sha256": self.checkpoint_sha256, "precision": self.precision,
            "dataset_json_sha256": self.dataset_sha256, "plans_json_sha256": self.plans_sha256,
            "spacing_mm": self.spacing_mm, "mirror": self.mirror,
            "toothmcl_version": __version__, "device": str(self.device),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        present = np.bincount(restored.array.ravel(), minlength=256)
        provenance["structures"] = ", ".join(structures.structure(v).name for v in self.structure_values if present[v])
        return CBCTResult(labels=restored, teeth=summarize(restored.array, volume.geometry), provenance=provenance)

    def postprocess(self, probs: np.ndarray, canonical: Volume) -> np.ndarray:
        """(K, J, I) uint8 label values from our class probabilities: structures where they are
        the most probable class, elsewhere our numbered teeth (module docstring, stage 3)."""
        n_cbct = fdi.num_classes("cbct")
        classes = probs.argmax(axis=0)
        on_structure = classes >= n_cbct
        teeth_classes = np.where(on_structure, 0, classes).astype(np.uint8)
        labels = number_teeth(teeth_classes, probs[:n_cbct], canonical.geometry, PostprocessConfig())
        if self.structure_values:
            lut = np.array(self.structure_values, np.uint8)
            labels = np.where(on_structure, lut[np.clip(classes - n_cbct, 0, len(lut) - 1)], labels)
        return labels.astype(np.uint8)

    def probabilities(self, volume: Volume, report=None) -> tuple[Volume, np.ndarray]:
        """Stages 1-2: (the volume on the RAS grid at the plans' spacing, (C, K, J, I) float32
        probabilities of our CBCT classes on that grid: the 34 of the ``"cbct"`` scheme, then one
        per :attr:`structure_values`)."""
        report = report or _Reporter(None, None)
        report("preprocess", 0.0)
        _, shape = canonical_geometry(volume.geometry, volume.array.shape, self.spacing_ras)
        padded = [max(int(s), p) for s, p in zip(shape, self.patch)]
        need = 2 * self.n_classes * int(np.prod(padded, dtype=np.int64)) * 4
        if need > MAX_PROBABILITY_BYTES:
            raise ResourceLimitError(
                f"this volume at {self._spacing_text()} mm needs {need / 2**30:.1f} GiB for the class probabilities "
                f"(limit {MAX_PROBABILITY_BYTES / 2**30:.0f} GiB): nnU-Net models run on the whole volume here; crop "
                "the scan to the teeth first")
        canonical = resample_to_canonical(volume, self.spacing_ras)
        x = self.normalize(self.to_network_array(canonical.array))
        report("segment", 0.2)
        return canonical, self.from_network_array(self._sliding_window(x, report))  # a view: no third copy

    def window_probabilities(self, volume: Volume, centre_ras):
        """The network on one patch centred on ``centre_ras`` (the click tools' add): (the
        window's RAS-aligned geometry at the plans' spacing, (C, K, J, I) probabilities of our
        classes on it, as :meth:`probabilities`). One patch of the plans' size, the size the
        network was trained on, preprocessed as :meth:`predict` does; no mirroring."""
        import torch

        shape = tuple(int(self.patch[int(a)]) for a in np.argsort(self.transpose))  # network axes -> our (k, j, i)
        window = click_window(volume, centre_ras, self.spacing_ras, shape)
        x = torch.from_numpy(self.normalize(self.to_network_array(window.array)))[None, None].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            probs = torch.softmax(self.net(x).float(), dim=1)[0].cpu()
        ours = torch.zeros((self.n_classes,) + tuple(probs.shape[1:]))
        ours.index_add_(0, torch.from_numpy(self.class_map), probs)
        return window.geometry, np.ascontiguousarray(self.from_network_array(ours.numpy()))

    def _sliding_window(self, x: np.ndarray, report) -> np.ndarray:
        """(C, ...) float32 probabilities of our classes on ``x``'s grid (see :meth:`probabilities`).

        Windows where nnU-Net puts them (:func:`window_starts`), each weighted by nnU-Net's
        Gaussian (:func:`gaussian_weights`); a volume smaller than a patch is padded with zeros
        on both sides, as nnU-Net pads. Written here rather than MONAI's sliding window, which
        places its last windows differently: with other window positions the network sees other
        borders and 2-3 % of the voxels changed class against nnU-Net's own predictor."""
        import torch

        shape = x.shape
        diff = [max(0, p - s) for p, s in zip(self.patch, shape)]
        before = [d // 2 for d in diff]
        x = np.pad(x, [(b, d - b) for b, d in zip(before, diff)])
        weights = torch.from_numpy(gaussian_weights(self.patch))
        index = torch.from_numpy(self.class_map)
        n_out = self.n_classes
        total = torch.zeros((n_out,) + x.shape)
        norm = torch.zeros(x.shape)
        flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if self.mirror else [])
        starts = [window_starts(s, p) for s, p in zip(x.shape, self.patch)]
        n_windows, done = int(np.prod([len(s) for s in starts])), 0
        t = torch.from_numpy(x)[None, None]
        with torch.inference_mode():
            for k in starts[0]:
                for j in starts[1]:
                    for i in starts[2]:
                        report.check()
                        box = (slice(k, k + self.patch[0]), slice(j, j + self.patch[1]), slice(i, i + self.patch[2]))
                        batch = t[(0, 0) + box][None, None].to(self.device)
                        probs = None
                        with autocast(self.device, self.precision):
                            for axes in flips:
                                inp = torch.flip(batch, axes) if axes else batch
                                out = torch.softmax(self.net(inp).float(), dim=1)
                                out = torch.flip(out, axes) if axes else out
                                probs = out if probs is None else probs + out
                        probs = (probs[0] / len(flips)).cpu()
                        ours = torch.zeros((n_out,) + tuple(self.patch))
                        ours.index_add_(0, index, probs)
                        total[(slice(None),) + box] += ours * weights
                        norm[box] += weights
                        done += 1
                        report("segment", 0.2 + 0.65 * done / n_windows)
        probs = total.div_(norm).numpy()  # in place: the largest array of the run
        crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
        return probs[(slice(None),) + crop]


def window_starts(size: int, patch: int, step: float = OVERLAP) -> list[int]:
    """Start of every window along an axis of ``size`` voxels, as nnU-Net places them: as few
    windows as keep steps of at most ``step * patch``, spread evenly from 0 to ``size - patch``."""
    if size <= patch:
        return [0]
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    return [int(np.round((size - patch) / (n - 1) * i)) for i in range(n)]


def gaussian_weights(patch) -> np.ndarray:
    """nnU-Net's window weights: a Gaussian of sigma ``SIGMA_SCALE * patch`` per axis centred on the
    patch, scaled to 1 at its peak, zeros replaced by its smallest positive value (float32)."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1.0
    g = gaussian_filter(delta, [p * SIGMA_SCALE for p in patch], 0, mode="constant", cval=0.0)
    g /= g.max()
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


def is_results_folder(weights) -> bool:
    """True when ``weights`` names a folder (an nnU-Net results folder) rather than a weights file."""
    return weights is not None and Path(weights).is_dir()


def is_nnunet_model(name: str) -> bool:
    """True when registry name ``name`` is an nnU-Net results folder (``"format": "nnunetv2"``)."""
    from ..models.registry import load_registry

    entry = load_registry().get(name)
    return entry is not None and entry.format == "nnunetv2"


def cbct_predictor(weights=None, model: str | None = None, device: str = "auto", **options):
    """The CBCT predictor for ``weights``: :class:`NNUNetCBCTPredictor` for an nnU-Net results
    folder, :class:`~.cbct.CBCTPredictor` otherwise (``options`` go to it). Both have the same
    ``predict``."""
    if is_results_folder(weights):
        if model:
            raise InvalidInputError("give either a model name or an nnU-Net results folder, not both")
        return NNUNetCBCTPredictor(weights, device=device, **_nnunet_options(options))
    if weights is None and model and is_nnunet_model(model):
        from ..models.registry import resolve_results_folder

        folder, fold = resolve_results_folder(model)
        return NNUNetCBCTPredictor(folder, device=device, fold=fold, **_nnunet_options(options))
    from .cbct import CBCTPredictor

    return CBCTPredictor(weights=weights, model=model, device=device, **options)


def _nnunet_options(options: dict) -> dict:
    """The options of :class:`~.cbct.CBCTPredictor` an nnU-Net model also takes (precision)."""
    return {k: v for k, v in options.items() if k == "precision"}
