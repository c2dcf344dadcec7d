"""Methods, registered by name: one file per method in this package, imported here so that each
registers itself (a new method is one new file)."""

import importlib
import pkgutil

from ..networks.router import ModalityRouter
from .base import Method
from .registry import METHODS, build_inference_network, build_method, get_method, register_method

_INFRASTRUCTURE = {"base", "registry"}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name not in _INFRASTRUCTURE and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Method", "ModalityRouter", "build_inference_network", "build_method", "get_method", "register_method"]
