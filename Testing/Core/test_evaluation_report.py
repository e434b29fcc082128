"""Evaluation reports: statistics by hand, the tooth rules on real files, the report folder, errors.

The CBCT cases (shape (K, J, I) = (4, 6, 8), 0.5 mm): every ground truth holds tooth 11 in
``[0:2, 0:2, 0:2]`` and tooth 16 in ``[2:4, 0:2, 4:6]``, 8 voxels each; case c3 also holds metal
(99). Tooth 13 is in no file. Method "good": c1 perfect; c2 loses 2 voxels of 16
(Dice 2*6/(8+6) = 6/7); c3 perfect plus a false-positive tooth 12. Method "bad": c1 misses 16
(Dice 0); c2 perfect; c3 keeps 4 of 11's 8 voxels (Dice 2*4/(8+4) = 2/3).
Per-case overall Dice: good (1, 13/14, 1), bad (1/2, 1, 5/6).

Closed forms used instead of t tables: for 1, 2 and 3 degrees of freedom the t distribution
has ``t(0.975, 1) = tan(0.475 pi)``, ``t(0.975, 2) = sqrt(2 q^2 / (1 - q^2))`` with q = 0.95,
two-sided ``p = 1 - |t| / sqrt(2 + t^2)`` (df 2) and
``p = 1 - (2 / pi) (atan(x) + x / (1 + x^2))``, ``x = t / sqrt(3)`` (df 3).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest

from ToothMCLCore.cli import main
from ToothMCLCore.errors import InvalidInputError, OutputError
from ToothMCLCore.evaluation.cbct_eval import evaluate_cbct_folders
from ToothMCLCore.evaluation.report import REPORT_FILES, write_report
from ToothMCLCore.evaluation.statistics import format_p, mean_ci, paired_t_test
from ToothMCLCore.io import write_labelmap, write_seg_nrrd
from ToothMCLCore.io.teeth3ds import write_teeth3ds_json
from ToothMCLCore.types import Geometry

T_975_DF2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # 4.302653
T_975_DF1 = math.tan(0.475 * math.pi)  # 12.706205
GRID = Geometry([0.5, 0.5, 0.5], [0.0, 0.0, 0.0], np.eye(3))
SHAPE = (4, 6, 8)


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _truth(metal: bool = False) -> np.ndarray:
    gt = np.zeros(SHAPE, np.uint8)
    gt[0:2, 0:2, 0:2] = 11
    gt[2:4, 0:2, 4:6] = 16
    if metal:
        gt[0, 5, 7] = 99
    return gt


def _cbct_folders(root):
    """The three cases in mixed formats and names (see the module docstring)."""
    for d in ("gt", "good", "bad"):
        (root / d).mkdir()
    gt = {c: _truth(metal=c == "c3") for c in ("c1", "c2", "c3")}
    write_labelmap(root / "gt" / "c1.nii.gz", gt["c1"], GRID)
    write_labelmap(root / "gt" / "c2.nrrd", gt["c2"], GRID)
    write_labelmap(root / "gt" / "c3.mha", gt["c3"], GRID)
    good = {c: _truth() for c in gt}
    good["c2"][2, 0, 4:6] = 0
    good["c3"][0, 4:6, 6:8] = 12
    write_labelmap(root / "good" / "c1_pred.nii.gz", good["c1"], GRID)
    write_seg_nrrd(root / "good" / "c2_pred.seg.nrrd", good["c2"], GRID)
    write_labelmap(root / "good" / "c3_0000.nii.gz", good["c3"], GRID)
    bad = {c: _truth() for c in gt}
    bad["c1"][bad["c1"] == 16] = 0
    bad["c3"][0, 0:2, 0:2] = 0
    for c, arr in bad.items():
        write_labelmap(root / "bad" / f"{c}.nii.gz", arr, GRID)
    return root / "good", root / "gt", root / "bad"


@pytest.fixture(scope="module")
def cbct(tmp_path_factory):
    """The CBCT folders and one report made through the CLI: (root, exit code, stdout)."""
    root = tmp_path_factory.mktemp("cbct")
    good, gt, bad = _cbct_folders(root)
    code, out, _ = _run(["evaluate-cbct", str(good), str(gt), "--compare", f"bad={bad}",
                         "-o", str(root / "report"), "-q"])
    return root, code, out


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------

def test_confidence_interval_matches_the_t_formula():
    """CI of [0.8, 0.9, 1.0] = 0.9 -+ t(0.975, 2) * 0.1 / sqrt(3) = [0.651586, 1.148414]."""
    ci = mean_ci([0.8, 0.9, 1.0])
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert ci.mean == pytest.approx(0.9)
    assert (ci.low, ci.high) == (pytest.approx(0.9 - half), pytest.approx(0.9 + half))
    assert ci.low == pytest.approx(0.651586, abs=1e-6) and ci.n == 3
    assert ci.format(100.0) == "90.00 [65.16, 114.84]"


def test_paired_t_test_matches_a_hand_computation():
    """d = (0.05, 0.02, 0.05, 0.05): mean 0.0425, sd 0.015, t = 5.6667 with 3 df."""
    a = [0.90, 0.80, 0.85, 0.95]
    b = [0.95, 0.82, 0.90, 1.00]
    t = 0.0425 / (0.015 / 2.0)
    x = t / math.sqrt(3)
    p = 1 - (2 / math.pi) * (math.atan(x) + x / (1 + x * x))
    test = paired_t_test(a, b)
    assert test.n == 4 and test.mean_difference == pytest.approx(0.0425)
    assert test.t == pytest.approx(t) and test.p == pytest.approx(p, rel=1e-9)
    assert 0.01 < test.p < 0.02 and not test.significant  # the paper's level is 0.01
    assert paired_t_test(b, a).t == pytest.approx(-t)


def test_one_case_gives_no_interval_and_no_test():
    """n = 1: the CI and the t-test are undefined (NaN) and say so."""
    ci = mean_ci([0.93])
    assert ci.mean == 0.93 and math.isnan(ci.low) and math.isnan(ci.high)
    assert "undefined" in ci.note and ci.format(100.0) == "93.00 [n=1, no CI]"
    test = paired_t_test([0.9], [0.8])
    assert test.n == 1 and math.isnan(test.p) and "at least 2" in test.note


def test_identical_results_give_p_one_and_a_constant_shift_no_p():
    """Identical methods: t = 0, p = 1. The same nonzero difference in every case: p undefined."""
    same = paired_t_test([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert (same.t, same.p) == (0.0, 1.0) and "identical" in same.note
    shifted = paired_t_test([0.8, 0.9, 0.7], [0.85, 0.95, 0.75])
    assert math.isnan(shifted.p) and shifted.mean_difference == pytest.approx(0.05)
    assert mean_ci([0.5, 0.5]).low == mean_ci([0.5, 0.5]).high == 0.5


def test_cases_without_a_value_are_left_out():
    """NaN values (a case without that tooth) are dropped, pairwise for the t-test."""
    assert mean_ci([0.8, math.nan, 1.0]).n == 2
    assert paired_t_test([0.8, math.nan, 0.9, 0.7], [0.9, 0.5, 0.95, 0.85]).n == 3


# ------------------------------------------------------------------------------------------------
# Tooth rules, read from real files
# ------------------------------------------------------------------------------------------------

def test_tooth_rules_on_label_files(cbct):
    """Missed tooth = 0, prediction-only tooth = false positive outside the mean, absent = not counted."""
    root = cbct[0]
    ev = evaluate_cbct_folders(root / "gt", {"good": root / "good", "bad": root / "bad"})
    assert ev.cases == ["c1", "c2", "c3"]
    assert ev.score("c1", "bad").counted == {11: 1.0, 16: 0.0}
    assert ev.score("c1", "bad").missed == [16]
    assert ev.score("c2", "good").counted[16] == pytest.approx(6 / 7)
    c3 = ev.score("c3", "good")
    assert c3.false_positives == [12] and c3.mean_dice == 1.0
    assert ev.score("c3", "bad").counted[11] == pytest.approx(2 / 3)
    assert 13 not in ev.teeth() and 99 not in ev.teeth()
    np.testing.assert_allclose(ev.per_case("good", "overall"), [1, 13 / 14, 1])
    np.testing.assert_allclose(ev.per_case("bad", "overall"), [0.5, 1, 5 / 6])


def test_cropped_seg_nrrd_on_the_same_lattice_is_placed_on_the_truth_grid(tmp_path):
    """A .seg.nrrd covering I = 2..7 of the ground-truth grid is padded with background, not refused."""
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3, 3:6] = 21
    write_labelmap(tmp_path / "gt" / "a.nii.gz", gt, GRID)
    cropped = Geometry(GRID.spacing, [1.0, 0.0, 0.0], np.eye(3))  # origin 2 voxels along +i (R)
    write_seg_nrrd(tmp_path / "pred" / "a.seg.nrrd", gt[:, :, 2:], cropped)
    ev = evaluate_cbct_folders(tmp_path / "gt", {"p": tmp_path / "pred"})
    assert ev.score("a", "p").counted == {21: 1.0}
    assert any("another box" in n for n in ev.notes)


# ------------------------------------------------------------------------------------------------
# The report folder
# ------------------------------------------------------------------------------------------------

def test_report_folder_has_the_summary_the_csvs_and_the_plots(cbct):
    """Exit 0 and exactly the report files; PNGs decode to images of a readable size."""
    from matplotlib.image import imread

    root, code, _ = cbct
    assert code == 0
    report = root / "report"
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left
    for name in ("dice_boxplot.png", "group_bars.png", "per_tooth_bars.png"):
        image = imread(report / name)
        assert image.ndim == 3 and image.shape[0] >= 400 and image.shape[1] >= 500, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"


def test_per_case_and_per_tooth_csv_rows(cbct):
    """One row per case and method, one per case, method and tooth; Dice as 0..1."""
    report = cbct[0] / "report"
    cases = _rows(report / "per_case.csv")
    assert [(r["case"], r["method"]) for r in cases] == [
        (c, m) for c in ("c1", "c2", "c3") for m in ("good", "bad")]
    c2 = next(r for r in cases if r["case"] == "c2" and r["method"] == "good")
    assert float(c2["mean_dice"]) == pytest.approx(13 / 14, abs=1e-6)
    assert float(c2["dice_T6_first_molar"]) == pytest.approx(6 / 7, abs=1e-6)
    assert c2["dice_T3_canine"] == ""  # no canine in the ground truth: no value, not 1
    c1_bad = next(r for r in cases if r["case"] == "c1" and r["method"] == "bad")
    assert (c1_bad["n_missed"], c1_bad["missed_teeth"]) == ("1", "16")
    teeth = _rows(report / "per_tooth.csv")
    assert {r["fdi"] for r in teeth} == {"11", "12", "16"}
    fp = next(r for r in teeth if r["fdi"] == "12")
    assert (fp["case"], fp["method"], fp["status"], fp["dice"]) == ("c3", "good", "false positive", "")
    assert (fp["truth_voxels"], fp["pred_voxels"]) == ("0", "4")
    missed = next(r for r in teeth if r["case"] == "c1" and r["method"] == "bad" and r["fdi"] == "16")
    assert (missed["status"], float(missed["dice"]), missed["group"]) == ("missed", 0.0, "T6")


def test_summary_gives_mean_ci_p_and_the_rules(cbct):
    """The overall row by hand: mean [CI] of each method, the mean difference, p of the paired test."""
    summary = (cbct[0] / "report" / "summary.md").read_text()
    good, bad = np.array([1, 13 / 14, 1]), np.array([0.5, 1, 5 / 6])
    half = T_975_DF2 * good.std(ddof=1) / math.sqrt(3)
    d = bad - good
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    p = 1 - abs(t) / math.sqrt(2 + t * t)
    row = _line(summary, "| overall |")
    mean, low, high = (100 * v for v in (good.mean(), good.mean() - half, good.mean() + half))
    assert f"| 3 | {mean:.2f} [{low:.2f}, {high:.2f}] |" in row
    assert f"{d.mean() * 100:+.2f} [" in row and f"| {format_p(p)} ns |" in row
    assert row.endswith("| 1 | 0 |")  # false-positive teeth of good, bad
    assert _line(summary, "| T3 canine |").startswith("| T3 canine | 0 | - | - |")
    assert "is **not counted**" in summary and "its Dice is 0" in summary
    assert "99 (metal or restoration, 1 case)" in summary
    assert "two-sided (`scipy.stats.ttest_rel`)" in summary
    assert "| 13 upper right canine" not in summary


def test_cli_prints_a_summary_table_and_the_report_path(cbct):
    """stdout: the overall and group rows per method with p, and where the report is."""
    root, _, out = cbct
    assert _line(out, "overall").split()[1] == "3"
    assert "p (bad vs good)" in out and "T8 third molar" in out
    assert f"wrote {root / 'report'}" in out


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error, a non-zero exit code, no report folder
# ------------------------------------------------------------------------------------------------

def _no_report(parent) -> bool:
    return not (parent / "report").exists() and not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_missing_prediction_is_named_and_no_report_is_written(tmp_path):
    """A ground-truth case without prediction: exit 2, the case named, nothing written."""
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    write_labelmap(tmp_path / "gt" / "c1.nii.gz", _truth(), GRID)
    write_labelmap(tmp_path / "gt" / "c2.nii.gz", _truth(), GRID)
    write_labelmap(tmp_path / "pred" / "c1.nii.gz", _truth(), GRID)
    code, _, err = _run(["evaluate-cbct", str(tmp_path / "pred"), str(tmp_path / "gt"),
                         "-o", str(tmp_path / "report"), "-q"])
    assert code == 2 and "no prediction" in err and "c2" in err
    assert _no_report(tmp_path)


def test_two_files_of_one_case_are_refused(tmp_path):
    """c1.nii.gz and c1_pred.nii.gz in one folder are the same case: an error, not a guess."""
    (tmp_path / "p").mkdir()
    write_labelmap(tmp_path / "p" / "c1.nii.gz", _truth(), GRID)
    write_labelmap(tmp_path / "p" / "c1_pred.nii.gz", _truth(), GRID)
    with pytest.raises(InvalidInputError, match="more than one file"):
        evaluate_cbct_folders(tmp_path / "p", {"p": tmp_path / "p"})


@pytest.mark.parametrize("grid, what", [
    (Geometry([0.6, 0.5, 0.5], [0, 0, 0], np.eye(3)), "spacing"),
    (Geometry([0.5, 0.5, 0.5], [0.25, 0, 0], np.eye(3)), "origin"),
])
def test_prediction_on_another_grid_is_refused(tmp_path, grid, what):
    """Spacing or origin differing from the ground truth: exit 2 naming what differs, no report."""
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    write_labelmap(tmp_path / "gt" / "c1.nii.gz", _truth(), GRID)
    write_labelmap(tmp_path / "pred" / "c1.nii.gz", _truth(), grid)
    code, _, err = _run(["evaluate-cbct", str(tmp_path / "pred"), str(tmp_path / "gt"),
                         "-o", str(tmp_path / "report"), "-q"])
    assert code == 2 and "not on the same voxel grid" in err and what in err
    assert _no_report(tmp_path)


def test_image_instead_of_labels_is_refused(tmp_path):
    """A CBCT-like image (negative and fractional values) is not a label map: exit 2."""
    import SimpleITK as sitk

    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    write_labelmap(tmp_path / "gt" / "c1.nii.gz", _truth(), GRID)
    hu = np.linspace(-1000.0, 2000.0, np.prod(SHAPE)).reshape(SHAPE)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing([0.5, 0.5, 0.5])
    sitk.WriteImage(image, str(tmp_path / "pred" / "c1.nii.gz"))
    code, _, err = _run(["evaluate-cbct", str(tmp_path / "pred"), str(tmp_path / "gt"),
                         "-o", str(tmp_path / "report"), "-q"])
    assert code == 2 and "is not a label map" in err and "negative" in err
    image = sitk.GetImageFromArray(np.full(SHAPE, 0.37, np.float32))
    image.SetSpacing([0.5, 0.5, 0.5])
    sitk.WriteImage(image, str(tmp_path / "pred" / "c1.nii.gz"))
    code, _, err = _run(["evaluate-cbct", str(tmp_path / "pred"), str(tmp_path / "gt"), "-q"])
    assert code == 2 and "fractional values" in err


def test_failed_write_leaves_no_report_folder(cbct, tmp_path, monkeypatch):
    """A disk-full error while writing the plots: OutputError, no folder, no temporary left."""
    from ToothMCLCore.evaluation import plots

    root = cbct[0]
    ev = evaluate_cbct_folders(root / "gt", {"good": root / "good"})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_dice_boxplot", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        write_report(ev, tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_never_replaces_a_folder_that_is_not_a_report(cbct, tmp_path):
    """--overwrite on a folder with other files: exit 6, the folder untouched."""
    root = cbct[0]
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("keep me")
    code, _, err = _run(["evaluate-cbct", str(root / "good"), str(root / "gt"),
                         "-o", str(tmp_path / "thesis"), "--overwrite", "-q"])
    assert code == 6 and "not a ToothMCL report folder" in err
    assert [p.name for p in (tmp_path / "thesis").iterdir()] == ["chapter1.tex"]
    code, _, err = _run(["evaluate-cbct", str(root / "good"), str(root / "gt"),
                         "-o", str(root / "report"), "-q"])
    assert code == 6 and "already exists" in err


def test_compare_needs_name_equals_folder(cbct, capsys):
    """--compare without NAME= is a usage error (exit 2)."""
    root = cbct[0]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate-cbct", str(root / "good"), str(root / "gt"), "--compare", str(root / "bad")])
    assert exc.value.code == 2 and "NAME=PRED_DIR" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# IOS: folders of Teeth3DS files (the scan of test_ios_metrics: two cube "teeth" and gingiva)
# ------------------------------------------------------------------------------------------------

CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
VERTICES = np.r_[CUBE, CUBE + [10, 0, 0], [[5, 10, 0], [5, -10, 0], [-5, 10, 0], [15, -10, 0]]]
QUADS = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
FACES = [f for o in (0, 8) for a, b, c, d in QUADS for f in ((a + o, b + o, c + o), (a + o, c + o, d + o))]
FACES += [(16, 17, 18), (16, 17, 19)]
GT_LABELS = np.r_[[11] * 8, [12] * 8, [0] * 4]
GT_INSTANCES = np.r_[[1] * 8, [2] * 8, [0] * 4]


def _write_scan(path):
    lines = [f"v {x:g} {y:g} {z:g}" for x, y, z in VERTICES]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in FACES]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def ios_folders(tmp_path):
    """Teeth3DS layout (gt/<id>/<id>_upper.obj + .json); P1 predicted as in test_ios_metrics'
    ``shifted`` (tooth 11 grabs a gingiva vertex, 12 is called 13), P2 perfectly."""
    for case in ("P1", "P2"):
        (tmp_path / "gt" / case).mkdir(parents=True)
        _write_scan(tmp_path / "gt" / case / f"{case}_upper.obj")
        write_teeth3ds_json(tmp_path / "gt" / case / f"{case}_upper.json", GT_LABELS, GT_INSTANCES, "upper")
    (tmp_path / "pred").mkdir()
    labels, instances = GT_LABELS.copy(), GT_INSTANCES.copy()
    labels[16], instances[16] = 11, 1
    labels[8:16] = 13
    write_teeth3ds_json(tmp_path / "pred" / "P1_upper_pred.json", labels, instances, "upper")
    write_teeth3ds_json(tmp_path / "pred" / "P2_upper.json", GT_LABELS, GT_INSTANCES, "upper")
    return tmp_path


def test_ios_folder_report_has_the_challenge_metrics_per_case(ios_folders):
    """Folder mode replaces an old report: per-case TSA/TLA/TIR/score/OA/mIoU as in test_ios_metrics."""
    old = ios_folders / "report"
    old.mkdir()
    (old / "summary.md").write_text("old report")
    code, out, err = _run(["evaluate-ios", str(ios_folders / "pred"), str(ios_folders / "gt"),
                           "-o", str(old), "--overwrite", "-q"])
    assert code == 0, err
    p1 = next(r for r in _rows(old / "per_case.csv") if r["case"] == "P1_upper")
    expected = {"TSA": 0.95, "TLA": 0.802838, "TIR": 0.5, "score": 0.750946, "OA": 0.55,
                "mIoU": (0.75 + 8 / 9) / 4, "mean_dice": (16 / 17 + 0) / 2}
    for key, value in expected.items():
        assert float(p1[key]) == pytest.approx(value, abs=1e-6), key
    assert p1["false_positive_teeth"] == "13" and p1["missed_teeth"] == "12"
    summary = (old / "summary.md").read_text()
    assert "old report" not in summary and "3DTeethSeg'22" in summary
    # TSA over the two jaws: 0.975 -+ t(0.975, 1) * sd / sqrt(2), sd = 0.05 / sqrt(2)
    half = T_975_DF1 * (0.05 / math.sqrt(2)) / math.sqrt(2)
    assert f"| 2 | 0.9750 [{0.975 - half:.4f}, {0.975 + half:.4f}] |" in _line(summary, "| TSA")
    assert _line(out, "TIR").split()[1:3] == ["2", "0.7500"]
    assert sorted(p.name for p in old.iterdir()) == sorted(REPORT_FILES)


def test_ios_single_files_still_print_json(ios_folders):
    """Two files and --mesh: the JSON of one scan, as before; report options are refused there."""
    gt = ios_folders / "gt" / "P1"
    args = ["evaluate-ios", str(ios_folders / "pred" / "P1_upper_pred.json"), str(gt / "P1_upper.json"),
            "--mesh", str(gt / "P1_upper.obj")]
    code, out, _ = _run(args)
    assert code == 0 and json.loads(out)["TSA"] == pytest.approx(0.95)
    code, _, err = _run([*args, "-o", str(ios_folders / "r")])
    assert code == 2 and "folders only" in err and not (ios_folders / "r").exists()


def test_ios_case_without_scan_is_named(ios_folders):
    """A case whose mesh is not in the mesh folder: exit 2 naming it."""
    (ios_folders / "gt" / "P2" / "P2_upper.obj").unlink()
    code, _, err = _run(["evaluate-ios", str(ios_folders / "pred"), str(ios_folders / "gt"),
                         "-o", str(ios_folders / "report"), "-q"])
    assert code == 2 and "no scan" in err and "P2_upper" in err
    assert not (ios_folders / "report").exists()


def test_ios_scores_on_the_faces_of_the_scan_decimated_as_softooth_counts(meshsegnet_dir, tmp_path):
    """--faces N scores a real scan on the faces of its decimation to about N faces (the SOFTooth
    protocol's 10,000-face meshes): with one tooth erased from the prediction, OA on the faces is
    close to OA on the vertices (same surface, other units) and both see the missed tooth; too few
    faces are refused."""
    from ToothMCLCore.io.mesh import read_mesh
    from ToothMCLCore.io.public_datasets.meshsegnet import convert_scan
    from ToothMCLCore.io.teeth3ds import instances_from_labels

    path = meshsegnet_dir / "12_up.vtp"
    truth_scan, truth, _ = convert_scan(path, "upper")
    labels = truth_scan.to_file_order(truth)
    pred = np.where(labels == 11, 0, labels)
    write_teeth3ds_json(tmp_path / "gt.json", labels, instances_from_labels(labels), "upper")
    write_teeth3ds_json(tmp_path / "pred.json", pred, instances_from_labels(pred), "upper")
    results = {}
    for faces in (None, 4000):
        extra = ["--faces", str(faces)] if faces else []
        code, out, err = _run(["evaluate-ios", str(tmp_path / "pred.json"), str(tmp_path / "gt.json"),
                               "--mesh", str(path), *extra])
        assert code == 0, err
        results[faces] = json.loads(out)
    n_faces = len(read_mesh(path).mesh.faces)
    assert n_faces > 8000  # the stored scan, decimated to 4,000 faces below
    assert results[4000]["OA"] == pytest.approx(results[None]["OA"], abs=0.02)
    assert results[None]["OA"] < 1.0 and results[4000]["per_tooth"]["11"]["dice"] == 0.0
    assert results[4000]["per_tooth"]["21"]["dice"] == 1.0
    code, _, err = _run(["evaluate-ios", str(tmp_path / "pred.json"), str(tmp_path / "gt.json"), "--mesh", str(path),
                         "--faces", "50"])
    assert code != 0 and "--faces must be at least 100" in err
    # folder mode: the report counts faces and says so
    for folder, name in (("gt", "gt.json"), ("pred", "pred.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "12_up.json").write_bytes((tmp_path / name).read_bytes())
    code, _, err = _run(["evaluate-ios", str(tmp_path / "pred"), str(tmp_path / "gt"), "--mesh", str(meshsegnet_dir),
                         "--faces", "4000", "-o", str(tmp_path / "report"), "-q"])
    assert code == 0, err
    assert "faces of the scans decimated to about 4000" in (tmp_path / "report" / "summary.md").read_text()
