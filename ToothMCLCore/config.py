"""Frozen configuration dataclasses with strict ``from_dict`` / ``to_dict``.

Defaults are the ToothMCL paper's (Methods, Data Preprocessing and Training details). A model
card stores the preprocessing a model was trained with, so inference always runs with the
model's own settings; the CLI and the Slicer module only choose the model and the device.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a mapping: unknown keys are refused, values coerced to the
    field's type.

    YAML reads ``1e-4`` as a string (YAML 1.1 needs ``1.0e-4``); a ``float`` field accepts it, an
    ``int`` field accepts ``2.0`` but not ``2.5``, a ``bool`` field only true/false, ``str`` fields
    take the text of the value, and lists become tuples. Every config of the project (model cards,
    inference settings, training sections) is read through here.

    Raises:
        ConfigError: not a mapping, an unknown key, a value of the wrong kind, or one the
            dataclass refuses (its message names the field).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a mapping (got {type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(cls.__name__, name, hints[name], value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from None


def _coerce(owner: str, name: str, hint, value):
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{owner}.{name} must not be empty")
    base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if base is int:
            number = float(value)
            if number != int(number):
                raise ValueError("expected a whole number")
            return int(number)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) is tuple or base is tuple or isinstance(value, list):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}.{name}: cannot use {value!r} ({exc})") from None
    return value


def config_to_dict(config) -> dict[str, Any]:
    """A config dataclass as a plain dict (tuples as lists), for YAML, JSON and checkpoints."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(config) for v in [getattr(config, f.name)]}


@dataclass(frozen=True)
class CBCTPreprocessConfig:
    """How a CBCT volume is turned into network input.

    Attributes:
        spacing_mm: isotropic target voxel size (paper: 0.3 mm, trilinear for images).
        clip_min, clip_max: intensity window (paper: [0, 2500]); intensities are clipped to it
            and scaled by its fixed width to [0, 1] (the paper says min-max per volume, see
            :mod:`ToothMCLCore.preprocessing.cbct`).
        intensity_offset: value added to the stored intensities before clipping, or ``"auto"``.
            Many scanners store CBCT in HU-like units with air near -1000 while the paper's
            window [0, 2500] assumes air near 0. ``"auto"`` adds +1000 when the 0.5th
            percentile of the volume is below -500 (air at -1000 leaves no doubt) and 0
            otherwise; the decision is logged and written to the output provenance.
    """

    spacing_mm: float = 0.3
    clip_min: float = 0.0
    clip_max: float = 2500.0
    intensity_offset: float | str = "auto"

    def __post_init__(self):
        if not (0.05 <= float(self.spacing_mm) <= 5.0):
            raise ConfigError(f"spacing_mm must be within 0.05..5 mm (got {self.spacing_mm})")
        if not self.clip_max > self.clip_min:
            raise ConfigError(f"clip_max must exceed clip_min (got {self.clip_min}, {self.clip_max})")
        if isinstance(self.intensity_offset, str) and self.intensity_offset != "auto":
            raise ConfigError(f"intensity_offset must be a number or 'auto' (got {self.intensity_offset!r})")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


@dataclass(frozen=True)
class ROIConfig:
    """Cropping to the dentition before the fine model runs.

    Attributes:
        spacing_mm: voxel size the lightweight ROI model runs at.
        threshold: probability above which a voxel is "tooth" for the ROI model.
        margin_mm: margin added around the detected teeth on every side.
        min_teeth_volume_mm3: below this the ROI model "found nothing" and the fallback runs.
        fallback_intensity: normalised intensity above which a voxel is enamel/dentin-like, for
            the fallback that needs no model (the largest bright cluster, with the margin).
    """

    spacing_mm: float = 1.5
    threshold: float = 0.5
    margin_mm: float = 8.0
    min_teeth_volume_mm3: float = 500.0
    fallback_intensity: float = 0.62

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


@dataclass(frozen=True)
class SlidingWindowConfig:
    """MONAI sliding-window inference settings.

    Attributes:
        roi_size: window in voxels (k, j, i order of our arrays), each divisible by 32 for
            SwinUNETR. Default: the paper's fine-tuning crop 256 x 256 x 128 (i, j, k), so the
            network sees at inference what it saw in training.
        overlap: fraction of overlap between windows (MONAI default for Gaussian blending: 0.5;
            we default to 0.25 because the Gaussian weights already hide seams, and it is 2x
            fewer windows; the benchmark measures the Dice difference).
        mode: ``"gaussian"`` blending.
        sw_batch_size: windows per forward pass.
        whole_crop_max_voxels: when the ROI crop, each side rounded up to a multiple of 32,
            has at most this many voxels, it is segmented as one window of that size instead
            of overlapping ``roi_size`` windows: every voxel is computed once and the network
            sees the whole dentition (SwinUNETR has no absolute position embedding, so a larger
            input is the same computation over more context). 0 turns it off (the default, as
            the paper's crops are larger than its windows); the benchmark measures both.
    """

    roi_size: tuple[int, int, int] = (128, 256, 256)
    overlap: float = 0.25
    mode: str = "gaussian"
    sw_batch_size: int = 1
    whole_crop_max_voxels: int = 0

    def __post_init__(self):
        if len(self.roi_size) != 3 or any(int(s) % 32 for s in self.roi_size):
            raise ConfigError(f"roi_size must be 3 sizes divisible by 32 (got {self.roi_size})")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1) (got {self.overlap})")
        if int(self.whole_crop_max_voxels) < 0:
            raise ConfigError(f"whole_crop_max_voxels must be >= 0 (got {self.whole_crop_max_voxels})")

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


@dataclass(frozen=True)
class PostprocessConfig:
    """Cleaning the network's label map.

    Attributes:
        min_tooth_volume_mm3: connected components smaller than this are dropped (a real tooth
            crown alone is > 40 mm^3; islands are usually a few voxels).
        lambda_order, delta_order: the FDI order prior of SOFTooth Eq. 13, reused to resolve
            duplicated or swapped numbers after prediction, measured in tooth positions: lambda
            is the paper's 4 per position, delta half a position (the paper's 0.15 of the arch
            would keep neighbours swapped; see ``ToothMCLCore.postprocessing.assignment``).
    """

    min_tooth_volume_mm3: float = 20.0
    lambda_order: float = 4.0
    delta_order: float = 0.5

    from_dict = classmethod(config_from_dict)
    to_dict = config_to_dict


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild and run a checkpoint, stored as JSON beside the weights.

    Attributes:
        name: registry key, ``<modality>_<arch>_v<N>``.
        version: semantic version of the weights.
        task: ``"cbct_teeth"``, ``"cbct_roi"``, ``"ios_teeth"``, ``"ios_boundary"``.
        architecture: builder key in ``ToothMCLCore.models.ARCHITECTURES``.
        arch_args: keyword arguments of the builder.
        class_scheme: ``ToothMCLCore.fdi`` scheme name (``"cbct"``, ``"binary"``, ...).
        preprocess: preprocessing dict (:class:`CBCTPreprocessConfig` for CBCT models).
        sliding_window: :class:`SlidingWindowConfig` dict.
        sha256: SHA-256 of the safetensors file.
        training_data, intended_use, notes: free text shown to users.
        roi_model: registry name of the ROI model to crop with (CBCT models), or "".
        boundary_model: registry name of the tooth-vs-gingiva boundary refiner trained on this
            IOS model's probabilities (:mod:`ToothMCLCore.postprocessing.boundary`), or "".
        members: registry names of further IOS teeth networks run on the same sampled points as
            this one; the class probabilities of all of them are averaged (an ensemble,
            :class:`ToothMCLCore.inference.ios.IOSPredictor`). Empty for a single network.
    """

    name: str
    version: str
    task: str
    architecture: str
    arch_args: dict = field(default_factory=dict)
    class_scheme: str = "cbct"
    preprocess: dict = field(default_factory=dict)
    sliding_window: dict = field(default_factory=dict)
    sha256: str = ""
    training_data: str = ""
    intended_use: str = ""
    notes: str = ""
    roi_model: str = ""
    boundary_model: str = ""
    members: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    from_dict = classmethod(config_from_dict)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
