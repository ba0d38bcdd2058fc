# SPDX-License-Identifier: GPL-3.0-or-later
"""Meshes from numpy arrays, and skin weights written into vertex groups in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bpy
import numpy as np


def new_mesh(name: str, vertices: np.ndarray, faces: np.ndarray | None = None) -> bpy.types.Mesh:
    """A mesh from (V,3) vertices and optional (F,3) triangles, written with foreach_set."""
    mesh = bpy.data.meshes.new(name)
    verts = np.ascontiguousarray(vertices, np.float32).reshape(-1, 3)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    if faces is not None and len(faces):
        tris = np.ascontiguousarray(faces, np.int32).reshape(-1, 3)
        mesh.loops.add(tris.size)
        mesh.loops.foreach_set("vertex_index", tris.ravel())
        mesh.polygons.add(len(tris))
        mesh.polygons.foreach_set("loop_start", np.arange(0, tris.size, 3, dtype=np.int32))
    mesh.update()
    return mesh


def set_point_attribute(mesh: bpy.types.Mesh, name: str, values: np.ndarray, data_type: str) -> None:
    """A point-domain attribute from an array: FLOAT (N,), INT (N,), FLOAT_VECTOR (N,3),
    FLOAT_COLOR (N,4)."""
    attributes: Any = mesh.attributes
    attr = attributes.new(name, data_type, "POINT")
    key = {"FLOAT": "value", "INT": "value", "FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color"}[data_type]
    dtype = np.int32 if data_type == "INT" else np.float32
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype).ravel())


def assign_vertex_groups(obj: bpy.types.Object, names: Sequence[str], weights: np.ndarray) -> None:
    """One vertex group per name (in order) holding the (N,J) dense ``weights``; zeros add nothing.

    ``VertexGroup.add`` takes one weight for a list of vertices, so vertices sharing a weight go
    in one call (a Python call costs about a microsecond: one per vertex and joint would cost
    seconds for large meshes; skin weights repeat a lot).
    """
    w = np.asarray(weights, np.float32)
    for j, name in enumerate(names):
        group = obj.vertex_groups.get(name) or obj.vertex_groups.new(name=name)
        idx = np.flatnonzero(w[:, j] > 0)
        if not len(idx):
            continue
        vals = w[idx, j]
        order = np.argsort(vals, kind="stable")
        vals, idx = vals[order], idx[order]
        starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
        ends = np.r_[starts[1:], len(vals)]
        for s, e in zip(starts.tolist(), ends.tolist()):
            group.add(idx[s:e].tolist(), float(vals[s]), "REPLACE")


def dense_weights(joint_ids: np.ndarray, weights: np.ndarray, num_joints: int) -> np.ndarray:
    """(N,k) joint ids and weights (a joint may repeat) -> (N,J) dense weights."""
    ids = np.asarray(joint_ids, np.int64)
    out = np.zeros((ids.shape[0], num_joints), np.float64)
    np.add.at(out, (np.arange(ids.shape[0])[:, None], ids), np.asarray(weights, np.float64))
    return out
