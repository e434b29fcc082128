"""Evaluation of tooth segmentations against ground truth.

Modules (import them directly; importing this package loads nothing heavy):

- :mod:`.dice`: Dice per FDI tooth on label arrays; :mod:`.ios_metrics`: one IOS scan's
  3DTeethSeg'22 metrics, OA and mIoU.
- :mod:`.statistics`: mean with Student-t 95 % CI, two-sided paired t-test.
- :mod:`.pairing`: pair prediction and ground-truth files by case name.
- :mod:`.cbct_eval` / :mod:`.ios_eval`: evaluate folders of cases into an
  :class:`.results.Evaluation` (per case, method and tooth).
- :mod:`.report` / :mod:`.plots`: the report folder (Markdown, CSV, PNG), written atomically.
- :mod:`.cli`: the ``evaluate-cbct`` and ``evaluate-ios`` commands.
"""
