"""Methods, registered by name: ``individual``, ``joint``, ``ummkd`` (one file each)."""

from . import individual, joint, ummkd  # noqa: F401  (registration)
from .base import Method, ModalityRouter
from .registry import METHODS, build_inference_network, build_method, get_method, register_method

__all__ = ["METHODS", "Method", "ModalityRouter", "build_inference_network", "build_method", "get_method", "register_method"]
