"""Named models: a registry of (URL, SHA-256) entries and a local download cache.

A name such as ``cbct_swinunetr_demo_v1`` resolves to a ``.safetensors`` file and its card:

1. bundled weights shipped inside the package (``bundled:`` URLs) are used in place;
2. otherwise the cache (``$TOOTHMCL_CACHE`` or ``~/.cache/toothmcl``) is checked;
3. otherwise the weights and card are downloaded once (``file://``, ``https://``), checked
   against the SHA-256 and moved into the cache atomically.

Nothing is downloaded at import. Offline, the error names the URL and the exact path where
the user can put the file by hand. Extra entries come from a JSON file (``$TOOTHMCL_REGISTRY``
or the ``registry_file`` argument): ``{"name": {"url": ..., "sha256": ..., "description": ...}}``.

An entry with ``"format": "nnunetv2"`` names an nnU-Net v2 results folder
(:mod:`ToothMCLCore.models.nnunet`): ``url`` is the folder itself (``file://``) or a ``.zip`` of it,
downloaded once and unpacked into the cache; ``sha256`` is that of the checkpoint of ``fold``
(default "0"), ``dataset_sha256`` and ``plans_sha256`` those of ``dataset.json`` and ``plans.json``
(what ``sha256sum`` prints): all three are checked every time the model is resolved
(:func:`resolve_results_folder`). The checkpoint alone is not enough: ``dataset.json`` says which
output channel is which tooth, so a swapped one would renumber every tooth under the same weights,
and ``plans.json`` sets the spacing, normalisation and network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError
from .checkpoint import card_path, sha256_of

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
#: what a registry entry can name: our .safetensors + card, or an nnU-Net v2 results folder
FORMATS = ("toothmcl", "nnunetv2")


@dataclass(frozen=True)
class RegistryEntry:
    """One named model.

    Attributes:
        name: ``<modality>_<arch>_v<N>``.
        url: where the ``.safetensors`` file lives; its card is the same URL ending ``.json``.
        sha256: expected SHA-256 of the weights.
        description: one line for ``toothmcl models``.
        task: the card's task where it is known without a download, else "": a bundled card's, the
            registry file's optional ``"task"`` (``write_registry_entry`` writes it), or the card of
            a copy already in the cache (:func:`_cached_task`).
    """

    name: str
    url: str
    sha256: str
    description: str = ""
    format: str = "toothmcl"
    fold: str = "0"
    #: nnunetv2 entries: SHA-256 of the results folder's dataset.json and plans.json
    dataset_sha256: str = ""
    plans_sha256: str = ""
    task: str = ""


def _bundled_entries() -> dict[str, RegistryEntry]:
    """Entries for the weights shipped in the package, read from their cards (no download)."""
    entries = {}
    if BUNDLED_DIR.is_dir():
        for card_file in sorted(BUNDLED_DIR.glob("*.json")):
            try:
                card = json.loads(card_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                logger.warning("ignoring unreadable bundled model card %s", card_file)
                continue
            name = card.get("name", card_file.stem)
            entries[name] = RegistryEntry(
                name=name,
                url=f"bundled:{card_file.stem}.safetensors",
                sha256=card.get("sha256", ""),
                description=card.get("intended_use", ""),
                task=str(card.get("task", "")),
            )
    return entries


def load_registry(registry_file: str | os.PathLike | None = None) -> dict[str, RegistryEntry]:
    """All known entries: bundled ones, then those of ``registry_file`` / ``$TOOTHMCL_REGISTRY``."""
    entries = _bundled_entries()
    path = registry_file or os.environ.get("TOOTHMCL_REGISTRY")
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise WeightsError(f"registry file {path} cannot be read ({exc}); fix or remove it") from None
        for name, item in data.items():
            try:
                entries[name] = RegistryEntry(name=name, url=item["url"], sha256=item["sha256"],
                                              description=item.get("description", ""),
                                              format=item.get("format", "toothmcl"), fold=str(item.get("fold", "0")),
                                              dataset_sha256=str(item.get("dataset_sha256", "")),
                                              plans_sha256=str(item.get("plans_sha256", "")),
                                              task=str(item.get("task") or _cached_task(name, item["sha256"])))
            except (KeyError, TypeError, AttributeError):
                raise WeightsError(
                    f"registry entry {name!r} in {path} needs 'url' and 'sha256'"
                ) from None
            if entries[name].format not in FORMATS:
                raise WeightsError(f"registry entry {name!r} in {path}: format must be one of {FORMATS} "
                                   f"(got {entries[name].format!r})")
            if entries[name].format == "nnunetv2" and not (entries[name].dataset_sha256 and entries[name].plans_sha256):
                raise WeightsError(f"registry entry {name!r} in {path}: an nnunetv2 entry needs 'dataset_sha256' and "
                                   "'plans_sha256' besides the checkpoint's 'sha256' (run sha256sum dataset.json "
                                   "plans.json in the results folder): dataset.json decides which tooth is which")
    return entries


def _cached_task(name: str, sha256: str) -> str:
    """The task on the cached card of ``name`` when that card describes weights with ``sha256``
    (what :func:`resolve_weights` downloaded), else "" (the weights are not hashed here: this is
    for listing models, and loading them checks the hash)."""
    try:
        card = json.loads(card_path(cache_dir() / name / f"{name}.safetensors").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(card.get("task", "")) if isinstance(card, dict) and card.get("sha256") == sha256 else ""


def cache_dir() -> Path:
    return Path(os.environ.get("TOOTHMCL_CACHE", Path.home() / ".cache" / "toothmcl"))


def _download(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest`` through a temporary file (no partial file is ever left)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refresh_card(url: str, cached: Path) -> None:
    """Copy a local (``file://``) card over its cached copy when it changed: a card is edited
    after training (its refiner named, test figures written) while the weights, whose SHA-256
    the cache checks, stay the same. A source that cannot be read leaves the cached card."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            current = response.read()
    except (urllib.error.URLError, OSError, ValueError):
        return
    if current != cached.read_bytes():
        _download(url, cached)
        logger.info("refreshed the cached card %s from %s", cached, url)


def resolve_weights(name: str, registry_file: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Local path of a named model's weights (downloading once if needed) and its SHA-256.

    Raises:
        WeightsError: unknown name, download failure (offline), or checksum mismatch.
    """
    entries = load_registry(registry_file)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise WeightsError(f"unknown model {name!r}; known models: {known} (or pass --weights PATH)")
    entry = entries[name]
    if entry.format != "toothmcl":
        raise WeightsError(f"{name!r} is an {entry.format} model, not ToothMCL weights; segment-cbct runs it "
                           "with --model as well")
    if entry.url.startswith("bundled:"):
        return BUNDLED_DIR / entry.url[len("bundled:"):], entry.sha256

    target = cache_dir() / name / f"{name}.safetensors"
    card_url = entry.url[: -len(".safetensors")] + ".json" if entry.url.endswith(".safetensors") else entry.url + ".json"
    if target.is_file() and card_path(target).is_file() and sha256_of(target) == entry.sha256:
        if entry.url.startswith("file:"):
            _refresh_card(card_url, card_path(target))
        return target, entry.sha256
    try:
        _download(entry.url, target)
        _download(card_url, card_path(target))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"cannot download model {name!r} from {entry.url} ({reason}). If this machine is "
            f"offline, download {entry.url} and its .json card elsewhere and put them at "
            f"{target} and {card_path(target)}, or pass --weights PATH"
        ) from None
    digest = sha256_of(target)
    if digest != entry.sha256:
        target.unlink(missing_ok=True)
        card_path(target).unlink(missing_ok=True)
        raise WeightsError(
            f"downloaded {name!r} has SHA-256 {digest}, expected {entry.sha256}; the file at "
            f"{entry.url} is not the registered one. Nothing was kept in the cache."
        )
    logger.info("cached %s at %s", name, target)
    return target, entry.sha256


def resolve_results_folder(name: str, registry_file: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(local nnU-Net results folder, fold) of an ``nnunetv2`` registry entry, its checkpoint checked.

    A ``file://`` URL of a folder is used in place; a ``.zip`` is downloaded once into the cache
    and unpacked there (members that would land outside it are refused).

    Raises:
        WeightsError: unknown name or not an nnU-Net entry, download or archive failure, no
            results folder inside, or the fold's checkpoint does not have the registered SHA-256.
    """
    from urllib.parse import unquote, urlparse

    entries = load_registry(registry_file)
    entry = entries.get(name)
    if entry is None or entry.format != "nnunetv2":
        raise WeightsError(f"{name!r} is not a registered nnU-Net model; see 'toothmcl models'")
    parsed = urlparse(entry.url)
    local = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if local is not None and local.is_dir():
        folder = local
    else:
        target = cache_dir() / name
        folder = _results_folder_in(target) if target.is_dir() else None
        if folder is None:
            archive = cache_dir() / f".{name}.zip"
            try:
                _download(entry.url, archive)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise WeightsError(f"cannot download model {name!r} from {entry.url} "
                                   f"({getattr(exc, 'reason', exc)}); put the results folder at {target} by hand, "
                                   "or pass --weights FOLDER") from None
            try:
                _unpack(archive, target)
            finally:
                archive.unlink(missing_ok=True)
            folder = _results_folder_in(target)
            if folder is None:
                raise WeightsError(f"{entry.url} holds no nnU-Net results folder (plans.json, dataset.json, fold_X/)")
    checkpoint = folder / f"fold_{entry.fold}" / "checkpoint_final.pth"
    if not checkpoint.is_file():
        raise WeightsError(f"{folder} has no fold_{entry.fold}/checkpoint_final.pth, which registry entry {name!r} names")
    for path, expected in ((checkpoint, entry.sha256), (folder / "dataset.json", entry.dataset_sha256),
                           (folder / "plans.json", entry.plans_sha256)):
        digest = sha256_of(path)
        if digest != expected:
            cached = cache_dir() / name
            removed = folder.is_relative_to(cached)
            if removed:  # a stale or damaged download: the next call fetches it again
                shutil.rmtree(cached, ignore_errors=True)
            raise WeightsError(f"{path} has SHA-256 {digest}, but registry entry {name!r} expects {expected}; "
                               "it is not the registered model" + (" (the cached copy was removed: run again to "
                                                                   "download it afresh)" if removed else ""))
    return folder, entry.fold


def _results_folder_in(root: Path) -> Path | None:
    """The folder under ``root`` (``root`` included) holding plans.json and dataset.json."""
    for plans in sorted(root.rglob("plans.json")):
        if (plans.parent / "dataset.json").is_file():
            return plans.parent
    return None


def _unpack(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into ``target`` through a temporary folder; a member whose path would leave
    it (absolute, ``..``) is refused and nothing is kept."""
    import zipfile

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    dest = (staging / member).resolve()
                    if not dest.is_relative_to(staging.resolve()):
                        raise WeightsError(f"{archive.name} holds {member!r}, a path outside its folder; refused")
                zf.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise WeightsError(f"the downloaded archive is not a valid .zip ({exc})") from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
