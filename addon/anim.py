# SPDX-License-Identifier: GPL-3.0-or-later
"""Keyframes written in bulk: ``keyframe_points.add`` + ``foreach_set``, never per-frame inserts."""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np

from . import compat

_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}
_KEY_TYPES = {"KEYFRAME": 0, "BREAKDOWN": 1, "MOVING_HOLD": 2, "EXTREME": 3, "JITTER": 4, "GENERATED": 5}
HIDE_PATHS = ("hide_viewport", "hide_render")  # object properties keyed where a person is not seen


def write_curve(
    fcurve: bpy.types.FCurve,
    frames: np.ndarray,
    values: np.ndarray,
    interpolation: str = "LINEAR",
    key_types: np.ndarray | None = None,
) -> None:
    """Replace ``fcurve``'s keys with (frames[i], values[i]) in one go.

    key_types: optional (T,) ints (``_KEY_TYPES``), e.g. to mark frames where a person is hidden.
    """
    frames = np.asarray(frames, np.float32)
    count = len(frames)
    points: Any = fcurve.keyframe_points
    if len(points):
        points.clear()
    points.add(count)
    co = np.empty(2 * count, np.float32)
    co[0::2] = frames
    co[1::2] = np.asarray(values, np.float32)
    points.foreach_set("co", co)
    points.foreach_set("interpolation", np.full(count, _INTERPOLATION[interpolation], np.int32))
    if key_types is not None:
        points.foreach_set("type", np.asarray(key_types, np.int32))
    fcurve.update()


def key_vector(
    factory: compat.FCurveFactory,
    data_path: str,
    frames: np.ndarray,
    values: np.ndarray,
    group: str = "",
    interpolation: str = "LINEAR",
    key_types: np.ndarray | None = None,
) -> list[bpy.types.FCurve]:
    """Key every component of a (T,C) array on ``data_path`` indices 0..C-1."""
    values = np.asarray(values).reshape(len(frames), -1)
    curves = []
    for i in range(values.shape[1]):
        fc = factory.new(data_path, index=i, group=group)
        write_curve(fc, frames, values[:, i], interpolation, key_types)
        curves.append(fc)
    return curves


def key_types_for(visibility: np.ndarray | None, count: int) -> np.ndarray | None:
    """Keyframe types marking frames where a person is not seen (visibility 0) as GENERATED."""
    if visibility is None:
        return None
    vis = np.asarray(visibility).reshape(count)
    return np.where(vis > 0, _KEY_TYPES["KEYFRAME"], _KEY_TYPES["GENERATED"]).astype(np.int32)


def visibility_changes(frames: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a person appears or disappears: (K,) scene frames and (K,) 1.0 = hidden from there on.

    The first frame always starts a run; ``visibility`` (T,) > 0 counts as seen. None when the
    person is seen in every frame (nothing to key).
    """
    seen = np.asarray(visibility).reshape(-1) > 0
    if seen.all():
        return None
    starts = np.flatnonzero(np.r_[True, seen[1:] != seen[:-1]])
    return np.asarray(frames, np.float64)[starts], (~seen[starts]).astype(np.float32)


def key_hidden(factory: compat.FCurveFactory, frames: np.ndarray, visibility: np.ndarray, group: str = "Troupe") -> None:
    """Key ``hide_viewport`` and ``hide_render`` of the factory's object: hidden on the frames where
    ``visibility`` is 0, shown elsewhere. Only the changes are keyed, with constant interpolation."""
    changes = visibility_changes(frames, visibility)
    if changes is None:
        return
    for path in HIDE_PATHS:
        write_curve(factory.new(path, group=group), changes[0], changes[1], "CONSTANT")


def hide_where_unseen(obj: bpy.types.Object, frames: np.ndarray, visibility: np.ndarray) -> None:
    """``key_hidden`` for an object without animation of its own (a new action "<name> visibility");
    an object seen in every frame gets no action."""
    if visibility_changes(frames, visibility) is not None:
        key_hidden(compat.new_action(obj, f"{obj.name} visibility"), frames, visibility)
