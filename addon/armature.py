# SPDX-License-Identifier: GPL-3.0-or-later
"""Armature objects: bones from joint positions, and their animation from SMPL-X poses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bpy
import numpy as np

from . import anim, compat, rig

VISIBILITY_PROP = "troupe_visibility"  # animated custom property: the bundle's visibility, 0 = not seen


def _ensure_object_mode(context: Any) -> None:
    obj = context.view_layer.objects.active
    if obj is not None and obj.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")


def create_armature(
    name: str,
    heads: np.ndarray,
    parents: np.ndarray,
    names: Sequence[str],
    collection: bpy.types.Collection,
    context: Any | None = None,
) -> tuple[bpy.types.Object, np.ndarray]:
    """An armature object with one bone per joint, linked into ``collection``.

    Args:
        heads: (J,3) rest joint positions in Blender's frame (armature space = world).
        parents: (J,) parent index, -1 for the root.
        names: bone names.
    Returns:
        the object and (J,3,3) rest rotations read back from Blender (``Bone.matrix_local``).
    """
    ctx: Any = context or bpy.context
    tails, z_axis, connected = rig.bone_layout(heads, parents, names)
    data = bpy.data.armatures.new(name)
    data.display_type = "OCTAHEDRAL"
    obj = bpy.data.objects.new(name, data)
    obj.show_in_front = True
    collection.objects.link(obj)
    view_layer = ctx.view_layer
    previous = view_layer.objects.active
    _ensure_object_mode(ctx)
    view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = data.edit_bones
        bones: list[Any] = []
        for j, bone_name in enumerate(names):
            eb = edit_bones.new(bone_name)
            eb.head = heads[j].tolist()
            eb.tail = tails[j].tolist()
            eb.align_roll(z_axis[j].tolist())
            if parents[j] >= 0:
                eb.parent = bones[parents[j]]
                eb.use_connect = bool(connected[j])
            bones.append(eb)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous
    pose: Any = obj.pose
    for pb in pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj, rest_rotations(obj, names)


def rest_rotations(obj: bpy.types.Object, names: Sequence[str]) -> np.ndarray:
    """(J,3,3) rotation part of each bone's ``matrix_local`` (armature space)."""
    arm: Any = obj.data
    return np.array([[list(row)[:3] for row in arm.bones[n].matrix_local][:3] for n in names], np.float64)


def key_pose(
    obj: bpy.types.Object,
    names: Sequence[str],
    frames: np.ndarray,
    quats: np.ndarray,
    root_location: np.ndarray,
    visibility: np.ndarray | None = None,
    hide_unseen: bool = False,
) -> bpy.types.Action:
    """Keyframe an armature: (T,J,4) bone quaternions (w,x,y,z), (T,3) root location.

    Every frame keeps its keys; where ``visibility`` is 0 the keys are marked GENERATED and the
    object's ``troupe_visibility`` custom property is keyed 0 (constant interpolation), so users
    see which frames were not observed. ``hide_unseen`` also keys the object's ``hide_viewport``
    and ``hide_render`` there (``anim.key_hidden``), in the same action.
    """
    factory = compat.new_action(obj, f"{obj.name} motion")
    frames = np.asarray(frames, np.float64)
    key_types = anim.key_types_for(visibility, len(frames))
    for j, name in enumerate(names):
        anim.key_vector(factory, f'pose.bones["{name}"].rotation_quaternion', frames, quats[:, j], name,
                        key_types=key_types)  # fmt: skip
    anim.key_vector(factory, f'pose.bones["{names[0]}"].location', frames, root_location, names[0],
                    key_types=key_types)  # fmt: skip
    if visibility is not None:
        obj[VISIBILITY_PROP] = 1.0
        owner: Any = obj
        ui = owner.id_properties_ui(VISIBILITY_PROP)
        ui.update(min=0.0, max=1.0, description="Troupe: how much of the person is seen in this frame (0 = not seen)")
        vis = np.asarray(visibility, np.float64)
        anim.key_vector(factory, f'["{VISIBILITY_PROP}"]', frames, vis[:, None], "Troupe", "CONSTANT")
        if hide_unseen:
            anim.key_hidden(factory, frames, vis)
    return factory.action
