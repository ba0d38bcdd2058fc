# SPDX-License-Identifier: GPL-3.0-or-later
"""Troupe Blender extension entry: register/unregister live in ``addon``."""

from .addon import register, unregister

__all__ = ["register", "unregister"]
