# SPDX-License-Identifier: GPL-3.0-or-later
"""Every Blender API that differs between the versions Troupe supports (4.2 LTS .. 5.x).

Nothing else in the add-on checks ``bpy.app.version``. Differences handled here:
    - animation: 4.2 keeps F-curves on ``Action.fcurves``; 4.4 introduced layered actions
      (slots, layers, strips, channelbags) and 5.0 removed ``Action.fcurves``;
    - the EEVEE engine id: ``BLENDER_EEVEE_NEXT`` in 4.2 - 4.x, ``BLENDER_EEVEE`` again in 5.0;
    - material transparency: ``surface_render_method`` (4.2+) replaces ``blend_method``;
    - path properties accept a blend-relative ``//`` only with ``PATH_SUPPORTS_BLEND_RELATIVE``
      (an option 4.5 added; older versions accept ``//`` without it and reject the option).
"""

from __future__ import annotations

from typing import Any

import bpy

LAYERED_ACTIONS = hasattr(bpy.types, "ActionSlot")


# options= of a path property that may start with //. A version test: the option is only
# checked when the class registers (4.2 then fails with ValueError), so creating one proves nothing.
BLEND_RELATIVE_PATH: set[str] = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


class FCurveFactory:
    """Creates F-curves of one action for one ID, whatever the action layout."""

    def __init__(self, action: bpy.types.Action, collection: Any, channelbag: Any | None):
        self.action = action
        self._fcurves = collection
        self._channelbag = channelbag
        self._groups: dict[str, Any] = {}

    def new(self, data_path: str, index: int = 0, group: str = "") -> bpy.types.FCurve:
        if self._channelbag is None:
            return self._fcurves.new(data_path, index=index, action_group=group)
        fcurve = self._fcurves.new(data_path, index=index)
        if group:
            grp = self._groups.get(group)
            if grp is None:
                grp = self._groups[group] = self._channelbag.groups.new(group)
            fcurve.group = grp
        return fcurve


def new_action(owner: Any, name: str) -> FCurveFactory:
    """A new action assigned to ``owner`` (an object), and the factory for its F-curves."""
    action = bpy.data.actions.new(name)
    anim = owner.animation_data or owner.animation_data_create()
    if not LAYERED_ACTIONS:
        anim.action = action
        return FCurveFactory(action, action.fcurves, None)
    act: Any = action
    slot = act.slots.new(id_type=owner.id_type, name=owner.name)
    layer = act.layers.new("Layer")
    strip = layer.strips.new(type="KEYFRAME")
    channelbag = strip.channelbag(slot, ensure=True)
    anim.action = action
    anim_any: Any = anim
    anim_any.action_slot = slot
    return FCurveFactory(action, channelbag.fcurves, channelbag)


def fcurves_of(owner: Any) -> list[bpy.types.FCurve]:
    """The F-curves animating ``owner`` through its assigned action (empty if none)."""
    anim = owner.animation_data
    if anim is None or anim.action is None:
        return []
    action: Any = anim.action
    if not LAYERED_ACTIONS:
        return list(action.fcurves)
    slot = getattr(anim, "action_slot", None)
    out: list[bpy.types.FCurve] = []
    for layer in action.layers:
        for strip in layer.strips:
            channelbag = strip.channelbag(slot) if slot is not None else None
            if channelbag is not None:
                out.extend(channelbag.fcurves)
    return out


def eevee_engine() -> str:
    """The EEVEE render engine id of this Blender."""
    items = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items  # type: ignore[attr-defined]
    ids = {item.identifier for item in items}
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in ids else "BLENDER_EEVEE"


def set_alpha_blended(material: bpy.types.Material, blended: bool = False) -> None:
    """Let alpha (Transparent BSDF mixes) show in EEVEE: dithered by default (order-independent,
    right for thousands of overlapping splats), or blended. Cycles needs nothing."""
    mat: Any = material
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED" if blended else "DITHERED"
    else:  # pragma: no cover - before 4.2
        mat.blend_method = "BLEND" if blended else "HASHED"


def use_nodes(material: bpy.types.Material) -> None:
    """Materials always use nodes from 5.0 on (``use_nodes`` is deprecated there)."""
    mat: Any = material
    if mat.node_tree is None:
        mat.use_nodes = True
