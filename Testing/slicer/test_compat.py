"""Supported Slicer versions: 5.10 and later. An older Slicer (5.8 runs Python 3.9) can still import
the module file and its version check, and its panel shows one sentence instead of a traceback."""

from __future__ import annotations

import ast

from MultiModalSegModuleLib import compat

from Testing.slicer.conftest import REPO

IMPORTED_BY_AN_OLD_SLICER = (REPO / "MultiModalSeg" / "MultiModalSeg.py",
                             REPO / "MultiModalSeg" / "MultiModalSegModuleLib" / "__init__.py",
                             REPO / "MultiModalSeg" / "MultiModalSegModuleLib" / "compat.py")


def test_what_an_old_slicer_imports_is_python_39_syntax():
    for path in IMPORTED_BY_AN_OLD_SLICER:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_module_file_imports_the_logic_only_after_the_version_check():
    tree = ast.parse(IMPORTED_BY_AN_OLD_SLICER[0].read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    imported = {alias.name for node in top_level for alias in node.names}
    assert "compat" in imported
    assert not imported & {"segmentation_logic", "train_logic", "dependencies", "MultiModalSegLib"}


def test_unsupported_reason():
    assert compat.unsupported_reason((3, 12, 10), (5, 10)) is None
    assert compat.unsupported_reason((3, 12, 10), None) is None  # outside Slicer: the Python decides
    assert compat.unsupported_reason((3, 9, 10), (5, 8)) == (
        "MultiModalSeg needs 3D Slicer 5.10 or later; this is Slicer 5.8: install a newer Slicer from download.slicer.org.")
    assert "Python 3.9" in compat.unsupported_reason((3, 9, 10), None)


def test_running_slicer_version():
    app = type("App", (), {"majorVersion": 5, "minorVersion": 10})()
    assert compat.running_slicer_version(type("slicer", (), {"app": app})) == (5, 10)
    assert compat.running_slicer_version(object()) is None
