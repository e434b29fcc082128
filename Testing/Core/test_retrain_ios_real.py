"""Retraining the default intraoral model in one command (training/retrain_ios_real.py), on the
real scans, with tiny networks and one epoch each so that it runs in CI: the plumbing between the
four trainings is what is checked, not the figures."""

from __future__ import annotations

import json

import pytest

TINY = "{in_channels: 6, num_classes: 17, planes: [16, 32, 32, 32, 32], blocks: [1, 1, 1, 1, 1], " \
       "strides: [1, 4, 4, 4, 4], nsamples: [8, 8, 8, 8, 8]}"


@pytest.fixture(scope="module")
def retrained(meshsegnet_dir, tmp_path_factory):
    """The command run once with tiny settings; returns (its output folder, exit code)."""
    from training.retrain_ios_real import main

    out = tmp_path_factory.mktemp("retrain")
    quick = [x for setting in ("train.epochs=1", f"ios.arch={TINY}", "ios.n_points=2048")
             for x in ("--set", setting)]
    argv = ["--data", str(meshsegnet_dir), "--out", str(out), "--boundary-epochs", "5", "--limit", "2",
            "--passes", "1", "--mirror"]
    for step in ("v1", "v2"):
        argv += [x.replace("--set", f"--{step}-set") for x in quick]
    return out, main(argv)


def test_one_command_trains_both_networks_and_both_refiners_and_names_them(retrained, monkeypatch):
    """The four models land in OUT with cards that name each other as the shipped ones do (v2
    averages v1 and uses the refiner trained on the mean, v1 its own), every card holds the
    whole pipeline's test-split figures, and with TOOTHMCL_REGISTRY=OUT/registry.json the names
    load the new weights, not the shipped ones."""
    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.models.checkpoint import read_card, sha256_of

    out, code = retrained
    assert code == 0
    registry = json.loads((out / "registry.json").read_text())
    assert {name: entry["task"] for name, entry in registry.items()} == {
        "ios_pt_real_v1": "ios_teeth", "ios_pt_real_v2": "ios_teeth",
        "ios_boundary_real_v2": "ios_boundary", "ios_boundary_real_v4": "ios_boundary"}
    v1, v2 = read_card(out / "v1" / "ios_pt_real_v1.json"), read_card(out / "v2" / "ios_pt_real_v2.json")
    assert v1.boundary_model == "ios_boundary_real_v2" and list(v1.members) == []
    assert v2.boundary_model == "ios_boundary_real_v4" and list(v2.members) == ["ios_pt_real_v1"]
    refiners = {name: read_card(out / f"{step}_boundary" / f"{name}.json")
                for step, name in (("v1", "ios_boundary_real_v2"), ("v2", "ios_boundary_real_v4"))}
    assert "averaged with ios_pt_real_v1" in refiners["ios_boundary_real_v4"].training_data
    assert refiners["ios_boundary_real_v2"].arch_args["bag"] == 1
    assert refiners["ios_boundary_real_v4"].arch_args["bag"] == 3
    for card in (v1, v2):
        figures = card.metrics["test_split"]
        assert figures["all"]["scans"] == 14 and figures["boundary_model"] == card.boundary_model
        assert figures["sampling_passes"] == 1 and figures["mirror_passes"] is True
    assert "2 networks' probabilities are averaged" in v2.notes

    monkeypatch.setenv("TOOTHMCL_REGISTRY", str(out / "registry.json"))
    monkeypatch.setenv("TOOTHMCL_CACHE", str(out / "cache"))
    predictor = IOSPredictor(model="ios_pt_real_v2", device="cpu")
    assert predictor.card.sha256 == sha256_of(out / "v2" / "ios_pt_real_v2.safetensors")
    assert predictor.member_cards[0].sha256 == sha256_of(out / "v1" / "ios_pt_real_v1.safetensors")
    assert predictor.boundary_card.sha256 == sha256_of(out / "v2_boundary" / "ios_boundary_real_v4.safetensors")


def test_running_it_again_keeps_what_is_finished(retrained, meshsegnet_dir):
    """A second run skips every finished step: no model or card is written again; the command
    leaves the environment as it found it (it may run inside another program)."""
    import os

    from training.retrain_ios_real import main

    out, _ = retrained
    files = sorted(out.glob("v*/*.safetensors")) + sorted(out.glob("v*/*.json"))
    before = {f: f.stat().st_mtime_ns for f in files}
    assert json.loads((out / "steps.json").read_text()) == {
        "v1": True, "v1_boundary": True, "v2": True, "v2_boundary": True}
    assert main(["--data", str(meshsegnet_dir), "--out", str(out)]) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert os.environ.get("TOOTHMCL_REGISTRY") != str(out / "registry.json")
