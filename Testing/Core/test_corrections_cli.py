"""``toothmcl corrections list|show|diff|check`` through a parser built with add_corrections_parsers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ToothMCLCore.corrections import CorrectionStore, CorrectionStoreError
from ToothMCLCore.corrections.cli import add_corrections_parsers
from ToothMCLCore.errors import InvalidInputError
from ToothMCLCore.types import Geometry

GEOMETRY = Geometry([0.4, 0.4, 0.4], [0.0, 0.0, 0.0], np.eye(3))


def _run(*argv) -> int:
    parser = argparse.ArgumentParser(prog="toothmcl")
    add_corrections_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["corrections", *map(str, argv)])
    return args.func(args)


@pytest.fixture
def store(tmp_path):
    """case_017: revision 1 swaps 44/45; revision 2 also deletes the metal. ios_3: one IOS revision."""
    store = CorrectionStore(tmp_path / "store", create=True)
    pred = np.zeros((5, 6, 7), dtype=np.uint8)
    pred[1:3, 1:3, 1:3], pred[1:3, 3:5, 1:3], pred[4, 5, 6] = 44, 45, 99
    swapped = pred.copy()
    swapped[pred == 44], swapped[pred == 45] = 45, 44
    no_metal = np.where(swapped == 99, 0, swapped).astype(np.uint8)
    model = {"model": "cbct_swinunetr_v1", "model_version": "1.2.0", "model_sha256": "cd" * 32}
    store.save("case_017", prediction=pred, corrected=swapped, geometry=GEOMETRY, model=model,
               annotator="dr who", note="44/45 were swapped", diff=[{"op": "swap", "from": 44, "to": 45, "voxels": 16}])
    store.save("case_017", prediction=pred, corrected=no_metal, geometry=GEOMETRY, model=model,
               annotator="dr no", note="metal was noise")
    ios = np.array([0] * 5 + [16] * 5, dtype=np.uint8)
    store.save("ios_3", prediction=ios, corrected=ios, model={"model": "ios_pt_v1"}, annotator="ann",
               modality="ios", jaw="upper")
    return store


def test_list_shows_one_line_per_case_with_revisions_annotator_and_modality(store, capsys):
    """Each case is one row: revisions, last annotator, last date and modality; then a total."""
    assert _run("list", store.root) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["case", "revisions"]
    row = next(line for line in lines if line.startswith("case_017"))
    assert row.split()[1] == "2" and "dr no" in row and row.rstrip().endswith("cbct") and "UTC" in row
    assert next(line for line in lines if line.startswith("ios_3")).rstrip().endswith("ios")
    assert lines[-1].startswith("2 cases, 3 revisions")


def test_show_prints_provenance_and_a_per_tooth_table(store, capsys):
    """show names model, annotator, note and lists 44 -> 45 and 45 -> 44 as renumbered."""
    assert _run("show", store.root, "case_017", "--revision", 1) == 0
    out = capsys.readouterr().out
    assert "case_017, revision 1 of 2 (CBCT)" in out
    assert "cbct_swinunetr_v1 1.2.0" in out and "dr who" in out and "44/45 were swapped" in out
    assert "operations   swap 44 -> 45 (voxels=16)" in out
    rows = [line.split() for line in out.splitlines() if "renumbered" in line]
    assert sorted(r[:3] for r in rows) == [["44", "45", "renumbered"], ["45", "44", "renumbered"]]
    assert "unchanged (1): 99" in out


def test_show_json_is_the_revision_metadata(store, capsys):
    """--json prints the latest revision's metadata, tooth diff included, as parseable JSON."""
    assert _run("show", store.root, "case_017", "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["revision"] == 2 and meta["annotator"] == "dr no" and meta["model_sha256"] == "cd" * 32
    assert {"change": "removed", "from": 99, "to": 0, "before": 1, "after": 0, "overlap": 0} in meta["tooth_diff"]


def test_diff_between_revisions_shows_what_the_second_correction_changed(store, capsys):
    """Revision 1 -> 2 shows only the removed metal; the teeth are unchanged between them."""
    assert _run("diff", store.root, "case_017", "--from", 1, "--to", 2) == 0
    out = capsys.readouterr().out
    (row,) = [line.split() for line in out.splitlines() if "removed" in line]
    assert row[:3] == ["99", "-", "removed"] and "metal" in out
    assert "unchanged (2): 44 45" in out
    assert _run("diff", store.root, "case_017", "--from", 1, "--to", 2, "--json") == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert [c["change"] for c in changes] == ["unchanged", "unchanged", "removed"]


def test_check_exit_code_says_whether_the_store_is_sound(store, capsys):
    """check returns 0 on a sound store, 1 with a leftover, and 0 again after --repair."""
    assert _run("check", store.root) == 0 and "OK" in capsys.readouterr().out
    (store.root / "tmp" / "leftover-0123456789ab").mkdir()
    assert _run("check", store.root) == 1
    assert "--repair" in capsys.readouterr().out
    assert _run("check", store.root, "--repair") == 0
    assert "removed tmp/leftover-0123456789ab" in capsys.readouterr().out


def test_commands_on_a_wrong_path_or_case_raise_errors_main_prints_as_one_line(store, tmp_path):
    """A folder that is no store and an unknown case are ToothMCLErrors with what to do."""
    with pytest.raises(CorrectionStoreError, match="not a corrections store"):
        _run("list", tmp_path)
    with pytest.raises(InvalidInputError, match="'case_018' is not in .*toothmcl corrections list"):
        _run("show", store.root, "case_018")
