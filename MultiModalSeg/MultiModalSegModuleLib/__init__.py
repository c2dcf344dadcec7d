"""Helpers of the MultiModalSeg Slicer module (no Qt): segmentation and training logic, dependency
installation, the per-user models folder, the supported-version check.

They live in this package, not beside ``MultiModalSeg.py``: Slicer loads every top-level ``.py``
of a module folder as a module of its own.
"""
