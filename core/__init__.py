"""Troupe reconstruction core. Never imports bpy.

Importing the package is cheap: heavy dependencies (torch, smplx, opencv) are imported by the
modules that need them, so ``core.bundle`` works with numpy alone.
"""

__version__ = "0.1.0"
