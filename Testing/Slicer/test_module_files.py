"""The module imports without a GUI and without torch, and ships every file it needs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from slicer_test_data import MODULE_DIR, REPO

UI_FILE = MODULE_DIR / "Resources" / "UI" / "ToothMCLSegment.ui"


def test_importing_the_module_loads_neither_torch_nor_the_core():
    """Opening Slicer with ToothMCLSegment installed does not import torch, MONAI or ToothMCLCore."""
    code = (
        f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(MODULE_DIR)!r}]\n"
        "import ToothMCLSegment\n"
        "logic = ToothMCLSegment.ToothMCLSegmentLogic()\n"
        "assert callable(logic.segmentVolume) and callable(logic.saveCorrection)\n"
        "print(sorted(m for m in ('torch', 'monai', 'ToothMCLCore') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ui_declares_every_widget_the_module_uses():
    """Every ui.<name> the widget and its teeth panel use exists in the .ui file; bound parameters exist."""
    root = ET.parse(UI_FILE).getroot()
    names = {w.get("name") for w in root.iter("widget")}
    source = (MODULE_DIR / "ToothMCLSegment.py").read_text(encoding="utf-8")
    panel = (MODULE_DIR / "ToothMCLSegmentLib" / "TeethPanel.py").read_text(encoding="utf-8")
    used = set(re.findall(r"\bui\.(\w+)", source + panel))
    assert len(used) >= 15 and used <= names, sorted(used - names)

    bound = {w.find("string").text for w in root.iter("property") if w.get("name") == "SlicerParameterName"}
    tree = ast.parse(source)
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ToothMCLSegmentParameterNode")
    parameters = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert bound == {"inputNode", "device", "segmentation", "annotator"} and bound <= parameters


def test_build_lists_every_module_file_and_resource():
    """ToothMCLSegment/CMakeLists.txt lists every Lib file and resource, so the extension ships them."""
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"\$\{MODULE_NAME\}(Lib/\w+\.py|\.py)", cmake))
    on_disk = {"Lib/" + p.name for p in (MODULE_DIR / "ToothMCLSegmentLib").glob("*.py")} | {".py"}
    assert listed == on_disk
    for resource in re.findall(r"(Resources/\S+)", cmake):
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "ToothMCLSegment")).is_file(), resource
    assert "ctkMacroCompilePythonScript" in cmake and "TARGET_NAME ToothMCLCore" in cmake


def test_module_icon_is_a_128_pixel_png():
    """The module and extension icons are 128x128 PNG images with transparency."""
    from PIL import Image

    for path in (MODULE_DIR / "Resources" / "Icons" / "ToothMCLSegment.png", REPO / "Resources" / "Icons" / "ToothMCL.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128) and image.mode == "RGBA"
