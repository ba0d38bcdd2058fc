# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender side of Troupe. Uses bpy and numpy only; never imports torch.

Reaches the shared bundle module as ``from ..core import bundle``.
"""

from __future__ import annotations

_modules: list = []


def register() -> None:
    import importlib

    _modules.clear()
    for name in _MODULES:
        mod = importlib.import_module(f"{__package__}.{name}")
        mod.register()
        _modules.append(mod)


def unregister() -> None:
    for mod in reversed(_modules):
        mod.unregister()
    _modules.clear()


# Modules with register()/unregister(), in registration order.
_MODULES: list[str] = ["prefs", "panel", "ops_run", "ops_import"]
