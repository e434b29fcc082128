"""ToothMCLCore.monai_import: a CBCT run imports MONAI without its unused integrations, and they stay usable."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from ToothMCLCore.inference.cbct import CBCTPredictor
predictor = CBCTPredictor(model="cbct_swinunetr_demo_v2", device="cpu")
import numpy as np
from ToothMCLCore.synthetic import make_cbct_phantom
image, _ = make_cbct_phantom(5, spacing=1.5)
result = predictor.predict(image)
print("loaded:", sorted(n for n in ("torchvision", "matplotlib", "pandas", "sklearn") if n in sys.modules))
import matplotlib, torchvision
print("importable afterwards:", matplotlib.__name__, torchvision.__name__)
print("teeth:", len(result.teeth))
"""


def test_a_cbct_run_leaves_monais_unused_integrations_out_and_importable():
    """A whole CBCT prediction (SwinUNETR + sliding window) runs without importing torchvision, matplotlib,
    pandas or scikit-learn (about 2 s of MONAI's import on 2 cores), and they import normally afterwards."""
    out = subprocess.run([sys.executable, "-c", CODE], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded: []" in out.stdout
    assert "importable afterwards: matplotlib torchvision" in out.stdout
    assert "teeth:" in out.stdout
