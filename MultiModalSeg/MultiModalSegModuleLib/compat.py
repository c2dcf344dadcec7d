"""Which 3D Slicer (and so which Python) the module supports, checked before anything else loads.

Kept importable by Python 3.9 (Slicer 5.8): an older Slicer gets one sentence, not a traceback.
"""

from __future__ import annotations

import sys

MINIMUM_SLICER = (5, 10)  # the oldest Slicer supported; it ships Python 3.12
MINIMUM_PYTHON = (3, 10)  # what the module's and the library's code needs (Slicer 5.8 has 3.9)


def unsupported_reason(python_version=None, slicer_version=None):
    """One sentence saying why this Slicer cannot run the module, or None when it can.

    ``python_version``: a ``(major, minor, ...)`` tuple (default: this interpreter);
    ``slicer_version``: ``(major, minor)`` of the running Slicer, when known.
    """
    python_version = tuple(python_version or sys.version_info)[:2]
    want = "3D Slicer {}.{} or later".format(*MINIMUM_SLICER)
    if slicer_version is not None and tuple(slicer_version)[:2] < MINIMUM_SLICER:
        return "MultiModalSeg needs {}; this is Slicer {}.{}: install a newer Slicer from download.slicer.org.".format(
            want, *tuple(slicer_version)[:2])
    if python_version < MINIMUM_PYTHON:
        return "MultiModalSeg needs {}; this Slicer runs Python {}.{}: install a newer Slicer from download.slicer.org.".format(
            want, *python_version)
    return None


def running_slicer_version(slicer_module):
    """``(major, minor)`` of the running Slicer application, or None outside it."""
    app = getattr(slicer_module, "app", None)
    try:
        return int(app.majorVersion), int(app.minorVersion)
    except (AttributeError, TypeError, ValueError):
        return None
