"""nnU-Net v2 result folders (the public CBCT tooth models) read safely, as ToothMCL weights.

Nearly every public CBCT tooth model (ToothFairy2 challenge entries, TotalSegmentator's and
DentalSegmentator's tooth models) is an nnU-Net v2 *results folder* (those labelled with
ToothFairy2's names run here; :func:`label_values` refuses other label tables for now)::

    <Trainer>__<Plans>__<configuration>/
        dataset.json              labels (name -> id), channel_names, file_ending
        plans.json                configurations: spacing, patch size, normalisation, network
        fold_0/checkpoint_final.pth   (fold_1 .. fold_4, or fold_all)

This module reads one without running any code from it:

- the checkpoint is opened with ``torch.load(weights_only=True)``; the only extra types allowed
  are NumPy's scalar and dtype reconstructors (nnU-Net's training log stores NumPy floats), so
  a file that pickles anything else (a class, a function) is refused with
  :class:`~ToothMCLCore.errors.WeightsError`, never executed. nnU-Net's own predictor loads it
  with ``weights_only=False``;
- the network class named by ``plans.json`` must be a ``torch.nn.Module`` of
  ``dynamic_network_architectures.architectures``, and every class a keyword names
  (``conv_op``, ``norm_op``, ``nonlin``, ``dropout_op``) a ``torch.nn.Module`` of ``torch.nn``;
  nnU-Net's ``pydoc.locate`` would import whatever the file says;
- the network is built from the plans (the classes of ``dynamic-network-architectures``, the
  library nnU-Net itself builds with, optional extra ``nnunet``) and the checkpoint's weights
  must fit it exactly (``strict=True``).

:func:`read_results_folder` checks the folder and names what is wrong; :func:`load_network`
returns the network with its weights; :func:`label_values` maps the dataset's class indices to
ToothMCL label values (ToothFairy2's tooth names to FDI numbers).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, WeightsError

logger = logging.getLogger(__name__)

#: where a plans file may take its network class from
ARCHITECTURES_PACKAGE = "dynamic_network_architectures.architectures"
#: where the classes of its keywords (conv_op, norm_op, nonlin, dropout_op) may come from
LAYERS_PACKAGE = "torch.nn"
DEFAULT_CHECKPOINT = "checkpoint_final.pth"
_FOLD = re.compile(r"^fold_(\d+|all)$")
_EXTRA = "pip install 'toothmcl[nnunet]' (dynamic-network-architectures, the library nnU-Net builds its networks with)"


@dataclass(frozen=True)
class ResultsFolder:
    """A checked nnU-Net v2 results folder.

    Attributes:
        root: the folder.
        dataset: ``dataset.json``. plans: ``plans.json``.
        configuration: the configuration the checkpoints were trained with (e.g. "3d_fullres").
        checkpoints: {fold: checkpoint path}, folds as in the folder names ("0".."4", "all").
    """

    root: Path
    dataset: dict
    plans: dict
    configuration: str
    checkpoints: dict

    @property
    def configuration_plans(self) -> dict:
        """The ``plans.json`` entry of :attr:`configuration` (``inherits_from`` resolved)."""
        configurations = self.plans["configurations"]
        merged: dict = {}
        name, seen = self.configuration, set()
        chain = []
        while name is not None:
            if name in seen or name not in configurations:
                raise WeightsError(f"{self.root / 'plans.json'}: configuration {name!r} is missing or inherits "
                                   "from itself; use the plans.json the model was trained with")
            seen.add(name)
            chain.append(configurations[name])
            name = configurations[name].get("inherits_from")
        for entry in reversed(chain):
            merged.update(entry)
        return merged


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path.parent} is not an nnU-Net v2 results folder: {path.name} is missing (a results "
                           "folder holds dataset.json, plans.json and fold_X/checkpoint_final.pth)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} cannot be read as JSON ({exc}); copy the results folder again") from None
    if not isinstance(doc, dict):
        raise WeightsError(f"{path} is not a JSON object; copy the results folder again")
    return doc


def read_results_folder(folder, folds=None, checkpoint: str = DEFAULT_CHECKPOINT) -> ResultsFolder:
    """Check an nnU-Net v2 results folder (files, labels, plans, checkpoints) without loading weights.

    Args:
        folder: the ``<Trainer>__<Plans>__<configuration>`` folder.
        folds: folds to use ("0".."4" or "all", ints accepted); None = every fold that has the
            checkpoint.
        checkpoint: checkpoint file name inside each ``fold_X`` folder.

    Raises:
        WeightsError: not a folder, a file missing or unreadable, no configuration, no fold with
            the checkpoint, region-based labels.
    """
    root = Path(folder)
    if not root.is_dir():
        raise WeightsError(f"{root} is not a folder; give the nnU-Net results folder "
                           "(<Trainer>__<Plans>__<configuration> holding dataset.json and plans.json)")
    dataset, plans = _read_json(root / "dataset.json"), _read_json(root / "plans.json")
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise WeightsError(f"{root / 'dataset.json'} has no 'labels' mapping; copy the model's own dataset.json")
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise WeightsError(f"{root.name} is a region-based nnU-Net model (labels map to lists of ids); only "
                           "models with one class per label are supported")
    if sorted(labels.values()) != list(range(len(labels))):
        raise WeightsError(f"{root / 'dataset.json'}: label ids must be 0..{len(labels) - 1}, one each, as nnU-Net "
                           "requires (they are the network's output channels); copy the model's own dataset.json")
    if not isinstance(dataset.get("channel_names"), dict) or len(dataset["channel_names"]) != 1:
        raise WeightsError(f"{root / 'dataset.json'}: a CBCT tooth model has one input channel "
                           f"(channel_names {dataset.get('channel_names')!r})")
    if not isinstance(plans.get("configurations"), dict) or not plans["configurations"]:
        raise WeightsError(f"{root / 'plans.json'} has no configurations; copy the model's own plans.json")
    configuration = root.name.split("__")[-1] if root.name.count("__") == 2 else ""
    if configuration not in plans["configurations"]:
        raise WeightsError(f"cannot tell the configuration of {root.name}: the folder name should end in "
                           f"__<configuration>, one of {sorted(plans['configurations'])}; keep nnU-Net's folder name")
    available = {}
    for sub in sorted(root.iterdir()):
        match = _FOLD.match(sub.name)
        if match and sub.is_dir() and (sub / checkpoint).is_file():
            available[match.group(1)] = sub / checkpoint
    wanted = None if folds is None else [str(f) for f in folds]
    if wanted is None:
        chosen = available
    else:
        missing = [f for f in wanted if f not in available]
        if missing:
            raise WeightsError(f"{root.name} has no fold_{missing[0]}/{checkpoint}; folds with it: "
                               f"{', '.join(sorted(available)) or 'none'}")
        chosen = {f: available[f] for f in wanted}
    if not chosen:
        raise WeightsError(f"{root.name} holds no fold_X/{checkpoint}; copy the trained folds, or name the "
                           "checkpoint (e.g. checkpoint_best.pth)")
    return ResultsFolder(root, dataset, plans, configuration, chosen)


def load_checkpoint(path) -> dict:
    """An nnU-Net checkpoint as plain data, loaded with ``weights_only=True``.

    NumPy scalars and dtypes (nnU-Net's training log holds NumPy floats) are the only types added
    to what PyTorch's safe loader accepts.

    Raises:
        WeightsError: the file cannot be read, needs anything else to unpickle (it would run code),
            or lacks ``network_weights``.
    """
    import numpy as np
    import torch

    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64)),
            type(np.dtype(np.int32)), type(np.dtype(np.bool_))]
    try:
        scalar = np._core.multiarray.scalar  # NumPy 2
    except AttributeError:  # pragma: no cover - NumPy 1
        scalar = np.core.multiarray.scalar
    # a checkpoint names the reconstructor as the NumPy that wrote it did: most public models were
    # trained under NumPy 1 (numpy.core...), newer ones under NumPy 2 (numpy._core...)
    safe += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        cls = getattr(getattr(np, "dtypes", None), name, None)
        if cls is not None:
            safe.append((cls, f"numpy.dtypes.{name}"))
    try:
        with torch.serialization.safe_globals(safe):
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the safe unpickler means: refuse
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" it needs {found.group(1)}" if found else ""
        raise WeightsError(f"{path} cannot be loaded as weights only:{what or ' ' + text.splitlines()[0][:160]}. "
                           "ToothMCL never unpickles code from a checkpoint; export the weights (the state dict "
                           "and plain data) or use a checkpoint written by nnU-Net v2") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("network_weights"), dict):
        raise WeightsError(f"{path} holds no 'network_weights'; is it an nnU-Net v2 checkpoint?")
    return doc


def _resolve_class(name: str, package: str, what: str, source: Path):
    """The ``torch.nn.Module`` subclass ``name`` from inside ``package`` only."""
    import torch

    if not isinstance(name, str) or not (name == package or name.startswith(package + ".")):
        raise WeightsError(f"{source}: {what} {name!r} is not a class of {package}; ToothMCL builds nnU-Net networks "
                           f"only from {package}")
    module_name, _, class_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if package == ARCHITECTURES_PACKAGE:
            raise WeightsError(f"{what} {name} needs dynamic-network-architectures: {_EXTRA}") from None
        raise WeightsError(f"{source}: {what} {name!r} does not exist in this PyTorch") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise WeightsError(f"{source}: {what} {name!r} is not a torch.nn.Module class of {package}")
    return cls


def architecture(folder: ResultsFolder) -> dict:
    """The network description of the folder's configuration: ``{"network_class_name",
    "arch_kwargs", "_kw_requires_import", "input_channels", "num_classes"}`` (plain JSON data, as
    a model card keeps it)."""
    plans_path = folder.root / "plans.json"
    arch = folder.configuration_plans.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs"), dict):
        raise WeightsError(f"{plans_path}: configuration {folder.configuration!r} has no 'architecture' entry "
                           "(plans written by nnU-Net v2.4 or newer have one); retrain or re-plan with nnU-Net v2")
    return {"network_class_name": arch.get("network_class_name"), "arch_kwargs": dict(arch["arch_kwargs"]),
            "_kw_requires_import": list(arch.get("_kw_requires_import", [])),
            "input_channels": len(folder.dataset["channel_names"]), "num_classes": len(folder.dataset["labels"])}


def build_network(arch: dict, source: Path | str = "plans.json"):
    """The network :func:`architecture` describes, with random weights (no deep supervision)."""
    source = Path(source)
    cls = _resolve_class(arch.get("network_class_name"), ARCHITECTURES_PACKAGE, "network class", source)
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = _resolve_class(kwargs[key], LAYERS_PACKAGE, f"{key}", source)
    kwargs["deep_supervision"] = False
    try:
        return cls(input_channels=int(arch["input_channels"]), num_classes=int(arch["num_classes"]), **kwargs)
    except TypeError as exc:
        raise WeightsError(f"{source}: the network arguments do not fit {cls.__name__} ({exc}); use the plans.json "
                           "the model was trained with") from None


def load_network(folder: ResultsFolder, fold: str | int | None = None):
    """(network with the fold's weights, eval mode; the checkpoint's plain data).

    Raises:
        WeightsError: see :func:`load_checkpoint`, :func:`build_network`; weights that do not fit.
    """
    fold = str(fold) if fold is not None else min(folder.checkpoints)
    if fold not in folder.checkpoints:
        raise WeightsError(f"{folder.root.name} has no checkpoint for fold {fold}")
    path = folder.checkpoints[fold]
    doc = load_checkpoint(path)
    trained_with = (doc.get("init_args") or {}).get("configuration")
    if trained_with is not None and trained_with != folder.configuration:
        raise WeightsError(f"{path} was trained with configuration {trained_with!r}, but its folder says "
                           f"{folder.configuration!r}; keep nnU-Net's folder layout")
    network = build_network(architecture(folder), folder.root / "plans.json")
    try:
        network.load_state_dict(doc["network_weights"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise WeightsError(f"{path}: the weights do not fit the network of plans.json ({first}); use the plans.json "
                           "and dataset.json of this model") from None
    return network.eval(), doc


def label_values(dataset: dict, source: str = "dataset.json") -> dict[int, int]:
    """Class index -> ToothMCL label value of a model's ``dataset.json``.

    Two tables are read:

    - a dataset ToothMCL exported (``toothmcl export-dataset --format nnunet`` or
      ``convert-dataset``), which nnU-Net then trained on: its ``toothmcl_label_values`` lists
      the label value of each class index (0, FDI numbers, 99 metal), and nnU-Net copies the
      file into the results folder as it is. So a model retrained on corrected cases runs here;
    - otherwise ToothFairy2's names: teeth become their FDI numbers (as
      :func:`~ToothMCLCore.io.public_datasets.toothfairy2.label_table` reads them); the jaws,
      canals, sinuses, the pharynx, bridges, crowns and implants keep label values of their own
      (:mod:`ToothMCLCore.structures`), never tooth numbers.

    Raises:
        WeightsError: a label neither table knows, or a ``toothmcl_label_values`` that does not fit
            the ``labels`` (another length, values that are not 0, FDI numbers or 99).
    """
    from .. import fdi
    from ..io.public_datasets.toothfairy2 import label_table

    ours = dataset.get("toothmcl_label_values")
    if ours is not None:
        labels = dataset.get("labels", {})
        ids = sorted(v for v in labels.values() if isinstance(v, int))
        if not isinstance(ours, list) or ids != list(range(len(ours))) or not all(
                isinstance(v, int) and (v in (0, fdi.METAL_LABEL) or fdi.is_valid_fdi(v)) for v in ours):
            raise WeightsError(f"{source}: toothmcl_label_values {str(ours)[:80]} does not fit its labels (one value "
                               "per class id 0..C-1: 0, FDI numbers or 99); use the dataset.json ToothMCL exported")
        return dict(enumerate(ours))
    try:
        return label_table(dataset["labels"], "metal", source, keep_structures=True)
    except InvalidInputError as exc:
        raise WeightsError(f"{exc}; ToothMCL runs nnU-Net tooth models whose labels are ToothFairy2's, or trained "
                           "on a dataset ToothMCL exported") from None
