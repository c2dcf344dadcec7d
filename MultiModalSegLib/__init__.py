"""MultiModalSegLib: one joint network that segments CT and MR, trained on unpaired scans.

The library has no Slicer or Qt dependency; the Slicer module and the ``mmseg`` command are
thin faces over it.
"""

__version__ = "0.1.0"
