"""Packaging check: every module and library file is listed or globbed by the extension's CMake files.

Slicer's CMake macros (``slicerMacroBuildScriptedModule``, ExtensionCPack) are not available
without a Slicer build tree, so the CMake files are checked by reading them.
"""

from __future__ import annotations

import fnmatch
import re

from Testing.slicer.conftest import REPO

TOP = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE = (REPO / "MultiModalSeg" / "CMakeLists.txt").read_text(encoding="utf-8")


def _set(name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", MODULE, re.S)
    assert match, name
    return match.group(1).split()


def test_extension_metadata_and_subdirectory():
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', TOP), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in TOP
    assert "add_subdirectory(MultiModalSeg)" in TOP
    assert "${Slicer_EXTENSION_CPACK}" in TOP
    icon = re.search(r'EXTENSION_ICONURL "[^"]*/main/(.*?)"', TOP).group(1)
    shot = re.search(r'EXTENSION_SCREENSHOTURLS "[^"]*/main/(.*?)"', TOP).group(1)
    assert (REPO / icon).is_file() and (REPO / shot).is_file()


def test_every_module_file_is_packaged():
    scripts = [s.replace("${MODULE_NAME}", "MultiModalSeg") for s in _set("MODULE_PYTHON_SCRIPTS")]
    assert "slicerMacroBuildScriptedModule(" in MODULE and "RESOURCES ${MODULE_PYTHON_RESOURCES}" in MODULE
    assert re.search(r"file\(GLOB_RECURSE MODULE_PYTHON_RESOURCES.*?Resources/\*", MODULE, re.S)
    module_dir = REPO / "MultiModalSeg"
    for path in module_dir.rglob("*"):
        rel = path.relative_to(module_dir).as_posix()
        if path.is_dir() or "__pycache__" in rel or rel in ("CMakeLists.txt", "README.md"):
            continue
        assert rel in scripts or rel.startswith("Resources/"), f"{rel} is not packaged by MultiModalSeg/CMakeLists.txt"
    assert all((module_dir / s).is_file() for s in scripts)


def test_every_library_file_and_resource_is_installed_beside_the_module():
    patterns = re.findall(r'PATTERN "([^"]+)"', re.search(r"set\(MMSEG_LIBRARY_PATTERNS(.*?)\)", MODULE).group(1))
    assert "install(DIRECTORY ${MMSEG_SOURCE_ROOT}/MultiModalSegLib DESTINATION ${_dest}" in MODULE
    assert "set(_dest ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR})" in MODULE
    for path in (REPO / "MultiModalSegLib").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert any(fnmatch.fnmatch(path.name, p) for p in patterns), f"{path} is not installed"
    # the library reads Resources/ beside itself: manifest, every model the manifest names, schemas
    for needed in ("${MMSEG_SOURCE_ROOT}/Resources/Models.json", "${MMSEG_SOURCE_ROOT}/Resources/Models",
                   "${MMSEG_SOURCE_ROOT}/Resources/Schemas", "Resources/SampleData/abdomen_ct_01"):
        assert needed in MODULE, needed


def test_only_the_module_file_is_at_the_top_of_the_module_folder():
    """Slicer's scripted-module factory loads every top-level .py of the folder as a module."""
    top = sorted(p.name for p in (REPO / "MultiModalSeg").glob("*.py"))
    assert top == ["MultiModalSeg.py"]
    package = REPO / "MultiModalSeg" / "MultiModalSegModuleLib"
    assert (package / "__init__.py").is_file() and (package / "segmentation_logic.py").is_file()
    assert not (package / "MultiModalSegLib").exists()  # no clash with the library's name


def test_extension_depends_on_pytorch_and_registers_the_self_test():
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', TOP)
    assert re.search(r"if\(BUILD_TESTING\)\s*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)\s*endif\(\)", MODULE)
    scripts = [s.replace("${MODULE_NAME}", "MultiModalSeg") for s in _set("MODULE_PYTHON_SCRIPTS")]
    package = sorted(p.relative_to(REPO / "MultiModalSeg").as_posix()
                     for p in (REPO / "MultiModalSeg" / "MultiModalSegModuleLib").glob("*.py"))
    assert sorted(s for s in scripts if "/" in s) == package
