"""The dependency check finds missing packages without importing them and installs only when asked."""

from __future__ import annotations

import pytest

MISSING = {"toothmcl_no_such_package": "toothmcl-no-such-package>=1.0"}


def _never(*args):
    raise AssertionError("must not be called")


def test_installed_packages_pass_without_asking():
    """With torch, MONAI and friends installed, the check passes silently and installs nothing."""
    from ToothMCLSegmentLib.Dependencies import ensureDependencies, missingPackages

    assert missingPackages() == []
    assert ensureDependencies(confirm=_never, installTorch=_never, install=_never) == []


def test_declining_the_install_installs_nothing_and_explains():
    """When the user declines, nothing is installed and the message names the package and what to do."""
    from ToothMCLSegmentLib.Dependencies import ensureDependencies

    from ToothMCLCore.errors import ToothMCLError

    asked = []
    with pytest.raises(ToothMCLError, match="toothmcl-no-such-package>=1.0 not installed.*accept"):
        ensureDependencies(confirm=lambda text: asked.append(text) or False, requirements=MISSING,
                           installTorch=_never, install=_never)
    assert "toothmcl-no-such-package>=1.0" in asked[0]


def test_batch_mode_never_installs():
    """Without a way to ask (batch mode), a missing package stops with instructions, not an install."""
    from ToothMCLSegmentLib.Dependencies import ensureDependencies

    from ToothMCLCore.errors import ToothMCLError

    with pytest.raises(ToothMCLError, match="open the ToothMCL Segment module"):
        ensureDependencies(confirm=None, requirements=MISSING, installTorch=_never, install=_never)


def test_accepted_install_uses_pip_and_reports_a_package_that_still_fails():
    """After the user accepts, pip gets the requirement; if it still cannot import, the user is told."""
    from ToothMCLSegmentLib.Dependencies import ensureDependencies

    from ToothMCLCore.errors import ToothMCLError

    installed = []
    with pytest.raises(ToothMCLError, match="still cannot be imported"):
        ensureDependencies(confirm=lambda text: True, requirements=MISSING, installTorch=_never,
                           install=installed.append)
    assert installed == [["toothmcl-no-such-package>=1.0"]]


def test_missing_torch_is_installed_with_the_torch_installer(monkeypatch):
    """A missing torch goes to the torch installer (PyTorch extension or pip), the rest to pip."""
    import ToothMCLSegmentLib.Dependencies as deps

    from ToothMCLCore.errors import ToothMCLError

    importable = deps.isImportable
    monkeypatch.setattr(deps, "isImportable", lambda name: name != "torch" and importable(name))
    calls = []
    with pytest.raises(ToothMCLError, match="still cannot be imported"):
        deps.ensureDependencies(confirm=lambda text: "PyTorch is large" in text,
                                requirements={"torch": "torch>=2.1", **MISSING},
                                installTorch=lambda: calls.append("torch"), install=calls.append)
    assert calls == ["torch", ["toothmcl-no-such-package>=1.0"]]
