"""Checkpoints (safetensors + card, SHA-256 checked) and the named-model registry."""

from __future__ import annotations

import json
import shutil

import pytest

from ToothMCLCore.errors import WeightsError
from ToothMCLCore.models.checkpoint import card_path, load_checkpoint, read_card, sha256_of
from ToothMCLCore.models.registry import load_registry, resolve_weights


@pytest.fixture
def registry(tmp_path, tiny_weights, monkeypatch):
    """A registry file with one file:// entry and an empty cache folder."""
    source = tmp_path / "server"
    source.mkdir()
    shutil.copy(tiny_weights, source / tiny_weights.name)
    shutil.copy(card_path(tiny_weights), card_path(source / tiny_weights.name))
    entry = {"url": (source / tiny_weights.name).as_uri(), "sha256": sha256_of(tiny_weights)}
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"cbct_swinunetr_tiny_v1": entry}))
    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(reg))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    return reg, source


def test_checkpoint_round_trip_gives_the_same_network(tiny_weights):
    """A saved network reloads with identical tensors and its card's architecture."""
    import torch

    model, card = load_checkpoint(tiny_weights)
    assert card.architecture == "swinunetr" and card.sha256 == sha256_of(tiny_weights)
    from safetensors.torch import load_file

    saved = load_file(str(tiny_weights))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key])


def test_tampered_weights_are_refused(tiny_weights, tmp_path):
    """One changed byte makes the SHA-256 differ from the card: refused with advice."""
    bad = tmp_path / tiny_weights.name
    shutil.copy(tiny_weights, bad)
    shutil.copy(card_path(tiny_weights), card_path(bad))
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256 .* download it again"):
        load_checkpoint(bad)


def test_pickled_checkpoints_are_never_loaded(tmp_path):
    """A .pt/.pth file is refused by name before anything is read."""
    pt = tmp_path / "model.pth"
    pt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(WeightsError, match="never loads pickled"):
        load_checkpoint(pt)


def test_weights_that_do_not_fit_the_architecture_are_refused(misfit_weights):
    """A card claiming another feature size makes loading fail with a clear message."""
    with pytest.raises(WeightsError, match="do not fit architecture"):
        load_checkpoint(misfit_weights)


def test_missing_card_is_an_error(tiny_weights, tmp_path):
    """Weights without their .json card cannot be rebuilt."""
    lonely = tmp_path / tiny_weights.name
    shutil.copy(tiny_weights, lonely)
    with pytest.raises(WeightsError, match="needs its .json card"):
        load_checkpoint(lonely)


def test_named_model_is_downloaded_once_into_the_cache(registry, tmp_path):
    """file:// entries are copied into the cache, then served from it even if the source goes."""
    _, source = registry
    path, sha = resolve_weights("cbct_swinunetr_tiny_v1")
    assert path.is_file() and str(path).startswith(str(tmp_path / "cache"))
    assert sha256_of(path) == sha and read_card(card_path(path)).name == "cbct_swinunetr_tiny_v1"
    shutil.rmtree(source)
    again, _ = resolve_weights("cbct_swinunetr_tiny_v1")
    assert again == path
    _model, card = load_checkpoint(again, expected_sha256=sha)
    assert card.task == "cbct_teeth"


def test_a_card_edited_at_its_file_source_reaches_the_cache(registry):
    """A local card edited after its weights were cached (a refiner named, figures written, as
    training.retrain_ios_real and the README's steps do) is what the next load reads; the weights,
    whose SHA-256 did not change, are not copied again."""
    _, source = registry
    path, sha = resolve_weights("cbct_swinunetr_tiny_v1")
    weights_time = path.stat().st_mtime_ns
    card = json.loads(card_path(source / path.name).read_text())
    card_path(source / path.name).write_text(json.dumps({**card, "notes": "test figures written after training"}))
    again, _ = resolve_weights("cbct_swinunetr_tiny_v1")
    assert read_card(card_path(again)).notes == "test figures written after training"
    assert again == path and path.stat().st_mtime_ns == weights_time
    _model, loaded = load_checkpoint(again, expected_sha256=sha)
    assert loaded.notes == "test figures written after training"


def test_registry_checksum_mismatch_keeps_nothing(registry, tmp_path):
    """A served file that is not the registered one is refused and not cached."""
    reg, _ = registry
    data = json.loads(reg.read_text())
    data["cbct_swinunetr_tiny_v1"]["sha256"] = "0" * 64
    reg.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="not the registered one"):
        resolve_weights("cbct_swinunetr_tiny_v1")
    assert not any((tmp_path / "cache").rglob("*.safetensors"))


def test_offline_download_says_where_to_put_the_file(registry, tmp_path):
    """When the URL cannot be reached the error names the cache path to fill by hand."""
    reg, _ = registry
    data = json.loads(reg.read_text())
    data["cbct_swinunetr_tiny_v1"]["url"] = "http://127.0.0.1:9/cbct_swinunetr_tiny_v1.safetensors"
    reg.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="offline.*put them at .*cache"):
        resolve_weights("cbct_swinunetr_tiny_v1")


def test_unknown_model_lists_the_known_ones(registry):
    """A typo in --model lists the names that exist."""
    with pytest.raises(WeightsError, match="known models: .*cbct_swinunetr_tiny_v1"):
        resolve_weights("cbct_swinunetr_tiny_v2")
    assert "cbct_swinunetr_tiny_v1" in load_registry()


@pytest.mark.parametrize("with_task", [True, False])
def test_a_refiner_in_a_registry_file_is_listed_as_one(tmp_path, monkeypatch, capsys, with_task):
    """A boundary refiner published in a ``$TOOTHMCL_REGISTRY`` file is known as one, so that
    ``toothmcl models`` and the Slicer module's model list do not offer it to segment with: by the
    entry's ``task``, or, for an entry without it, once its card is in the cache."""
    from ToothMCLCore.cli import main

    bundled, sha = resolve_weights("ios_boundary_real_v2")
    source = tmp_path / "server" / "my_refiner.safetensors"
    source.parent.mkdir()
    shutil.copy(bundled, source)
    card = json.loads(card_path(bundled).read_text())
    card_path(source).write_text(json.dumps({**card, "name": "my_refiner"}))
    entry = {"url": source.as_uri(), "sha256": sha, **({"task": "ios_boundary"} if with_task else {})}
    (tmp_path / "registry.json").write_text(json.dumps({"my_refiner": entry}))
    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(tmp_path / "cache"))
    assert load_registry()["my_refiner"].task == ("ios_boundary" if with_task else "")
    resolve_weights("my_refiner")  # the download puts its card in the cache
    assert load_registry()["my_refiner"].task == "ios_boundary"
    assert main(["models"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("my_refiner"))
    assert "runs inside the IOS model whose card names it" in line


def test_saved_weights_are_readable_by_others_as_any_new_file(tmp_path):
    """Trained weights on a shared machine get the umask's permissions, not private ones
    (safetensors writes a fresh 0600 file; the atomic write must not keep that)."""
    import os

    import torch

    from ToothMCLCore.config import ModelCard
    from ToothMCLCore.models.checkpoint import save_checkpoint

    card = ModelCard(name="perm_check", version="1", task="ios_boundary", architecture="linear", arch_args={},
                     class_scheme="", preprocess={})
    weights = tmp_path / "perm_check.safetensors"
    save_checkpoint(torch.nn.Linear(2, 1), card, weights)
    mask = os.umask(0)
    os.umask(mask)
    assert weights.stat().st_mode & 0o777 == card_path(weights).stat().st_mode & 0o777 == 0o666 & ~mask
