# SPDX-License-Identifier: GPL-3.0-or-later
"""Rig maths of the importer: bone layout, bone-space rotations, quaternions, resampling.

numpy only (no bpy), so every function here is unit-tested without Blender.

Conventions:
    - quaternions are w, x, y, z;
    - ``rotvecs`` are SMPL-X axis-angle rotations in the source frame (+Y up for bundles);
    - a bone's rest rotation ``rest_rot[j]`` is the 3x3 part of Blender's ``Bone.matrix_local``
      (armature space: columns = the bone's x, y (head -> tail) and z axes).

Bone space. Blender poses a bone with ``pose = parent_pose @ parent_rest^-1 @ rest @ basis``,
so a bone's keyed rotation is relative to its own rest orientation. The SMPL-X local rotation
``r`` of joint j acts in the source frame; in Blender's armature frame it is ``C r C^T``
(``C`` the axis conversion), and the keyed quaternion is that rotation seen from the bone:
``basis = R_j^T (C r C^T) R_j`` with ``R_j`` the bone's rest rotation. For the root the world
conversion may differ from the rest conversion (AMASS files are +Z up while the body model is
+Y up), which gives ``basis_0 = R_0^T (C_world r_0 C_rest^T) R_0`` and the location
``R_0^T (C_world (J_0 + trans) - C_rest J_0)``. ``pose_basis`` implements exactly this, and
the tests check it against ``core.bundle.forward_kinematics``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core import bundle
from .axes import AxisConversion

# Joints with several children: the child the bone's tail points at.
PRIMARY_CHILD: dict[str, str] = {
    "pelvis": "spine1",
    "spine3": "neck",
    "left_wrist": "left_middle1",
    "right_wrist": "right_middle1",
}
# Bones whose tail points along the body's forward direction (length in metres).
FORWARD_LEAVES: dict[str, float] = {"jaw": 0.08, "left_eye_smplhf": 0.025, "right_eye_smplhf": 0.025}
# Bones pointing up the body; length relative to the parent bone.
UP_LEAVES: dict[str, float] = {"head": 1.8}
# Other leaf bones continue their parent's direction, this long relative to the parent bone.
LEAF_LENGTH = 0.7
MIN_BONE_LENGTH = 0.005  # metres; Blender deletes zero-length bones


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.asarray(fallback, np.float64)


def body_frame(heads: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Up and forward unit vectors of a rest body, from its hips and spine.

    heads: (J,3) joint positions in Blender's frame. SMPL-X's left is +x of the body, up +y and
    forward +z in model space, so forward = left x up (true in any rotated frame as well).
    """
    idx = {n: i for i, n in enumerate(names)}
    z = np.array([0.0, 0.0, 1.0])
    up = _unit(heads[idx["neck"]] - heads[idx["pelvis"]], z) if "neck" in idx else z
    if "left_hip" in idx and "right_hip" in idx:
        left = heads[idx["left_hip"]] - heads[idx["right_hip"]]
        forward = _unit(np.cross(left, up), np.array([0.0, -1.0, 0.0]))
    else:
        forward = np.array([0.0, -1.0, 0.0])
    return up, forward


def bone_layout(
    heads: np.ndarray, parents: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tails, roll references and connection flags of a skeleton's bones.

    Args:
        heads: (J,3) rest joint positions in Blender's frame (the bone heads).
        parents: (J,) parent index, -1 for the root, parents[j] < j.
        names: J joint names (SMPL-X names pick the primary child and the forward leaves).

    Returns:
        tails (J,3): towards the (primary) child along the limb; leaves continue their parent's
            direction (``LEAF_LENGTH``), the head points up, jaw and eyes forward; never shorter
            than ``MIN_BONE_LENGTH``.
        z_axis (J,3): the direction each bone's local z axis is aligned to (its roll): the body's
            forward direction, or up for bones that themselves point forward (feet, jaw, eyes).
        connected (J,) bool: the bone's head is its parent's tail.
    """
    heads = np.asarray(heads, np.float64)
    parents = np.asarray(parents).astype(np.int64)
    num = len(heads)
    idx = {n: i for i, n in enumerate(names)}
    children: list[list[int]] = [[] for _ in range(num)]
    for j in range(1, num):
        children[parents[j]].append(j)
    up, forward = body_frame(heads, names)
    tails = np.empty_like(heads)
    primary = np.full(num, -1)
    for j in range(num):
        name = names[j]
        kids = children[j]
        if name in PRIMARY_CHILD and PRIMARY_CHILD[name] in idx:
            primary[j] = idx[PRIMARY_CHILD[name]]
        elif len(kids) == 1:
            primary[j] = kids[0]
    for j in range(num):  # parents come first, so a leaf's parent tail is known
        name = names[j]
        p = parents[j]
        if name in FORWARD_LEAVES:
            tails[j] = heads[j] + forward * FORWARD_LEAVES[name]
        elif primary[j] >= 0 and np.linalg.norm(heads[primary[j]] - heads[j]) >= MIN_BONE_LENGTH:
            tails[j] = heads[primary[j]]
        elif p >= 0:
            parent_vec = tails[p] - heads[p]
            length = max(np.linalg.norm(parent_vec) * UP_LEAVES.get(name, LEAF_LENGTH), MIN_BONE_LENGTH)
            tails[j] = heads[j] + (up if name in UP_LEAVES else _unit(parent_vec, up)) * length
        else:
            tails[j] = heads[j] + up * 0.1
        if np.linalg.norm(tails[j] - heads[j]) < MIN_BONE_LENGTH:
            tails[j] = heads[j] + _unit(tails[j] - heads[j], up) * MIN_BONE_LENGTH
    z_axis = np.empty_like(heads)
    for j in range(num):
        direction = _unit(tails[j] - heads[j], up)
        z_axis[j] = up if abs(float(direction @ forward)) > 0.8 else forward
    connected = np.zeros(num, bool)
    for j in range(1, num):
        connected[j] = primary[parents[j]] == j and np.allclose(tails[parents[j]], heads[j], atol=1e-9)
    return tails, z_axis, connected


def rest_rotations(heads: np.ndarray, tails: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
    """(J,3,3) bone rest rotations: y along head -> tail, z as close to ``z_axis`` as y allows.

    This is what Blender builds from head, tail and ``align_roll(z_axis)``; the importer reads
    Blender's own ``Bone.matrix_local`` back rather than trusting this.
    """
    y = tails - heads
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    z = z_axis - np.sum(z_axis * y, axis=1, keepdims=True) * y
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=2)


# --------------------------------------------------------------------------------------
# Quaternions (w, x, y, z)
# --------------------------------------------------------------------------------------


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """(...,3,3) rotation matrices -> (...,4) unit quaternions w,x,y,z with w >= 0."""
    m = np.asarray(m, np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate (scaled) quaternions; take the best conditioned one per matrix.
    cands = np.stack(
        [
            np.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )  # (...,4 candidates,4)
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(...,4) quaternions w,x,y,z (normalised here) -> (...,3,3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


def axis_angle_to_quaternion(rotvec: np.ndarray) -> np.ndarray:
    """(...,3) axis-angle -> (...,4) w,x,y,z."""
    r = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half)/angle, with its limit 1/2 at zero
    scale = np.where(angle > 1e-8, np.sin(half) / np.where(angle > 1e-8, angle, 1.0), 0.5 - angle**2 / 48.0)
    return np.concatenate([np.cos(half), r * scale], axis=-1)


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(...,4) w,x,y,z -> (...,3) axis-angle with angle in [0, pi]."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-8, angle / np.where(sin_half > 1e-8, sin_half, 1.0), 2.0)
    return q[..., 1:] * scale


def make_continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 (time) so consecutive quaternions lie in the same hemisphere.

    q and -q are the same rotation, but Blender interpolates the four curves component-wise:
    without this a sign change between two keys swings the bone through a full turn.
    """
    q = np.asarray(q, np.float64)
    if len(q) < 2:
        return q.copy()
    flips = np.sum(q[1:] * q[:-1], axis=-1) < 0  # (T-1,...): sign change against the original predecessor
    sign = np.concatenate([np.ones_like(flips[:1], float), np.cumprod(np.where(flips, -1.0, 1.0), axis=0)])
    return q * sign[..., None]


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of (...,4) unit quaternions; ``t`` broadcasts against (...)."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------
# Poses in bone space
# --------------------------------------------------------------------------------------


def pose_basis(
    rest_rot: np.ndarray,
    rest_joints: np.ndarray,
    rotvecs: np.ndarray,
    trans: np.ndarray,
    rest_conv: AxisConversion,
    world_conv: AxisConversion | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe values of a pose: bone-space quaternions of every joint and the root location.

    Args:
        rest_rot: (J,3,3) Blender rest rotation of each bone (``Bone.matrix_local``, armature space).
        rest_joints: (J,3) rest joint positions in the source (model) frame.
        rotvecs: (T,J,3) SMPL-X local axis-angle rotations (joint 0 = global orientation).
        trans: (T,3) root translation in the source world frame.
        rest_conv: conversion of the rest skeleton into Blender (the armature was built with it).
        world_conv: conversion of the source world (defaults to ``rest_conv``; AMASS +Z-up
            motion uses the identity while its body model is +Y up).

    Returns:
        quats (T,J,4) w,x,y,z ``PoseBone.rotation_quaternion`` values, continuous over time, and
        root_location (T,3) ``PoseBone.location`` of bone 0. Every other bone's location is 0.
    """
    world_conv = world_conv or rest_conv
    rest_rot = np.asarray(rest_rot, np.float64)
    num_j = rest_rot.shape[0]
    rot = bundle.axis_angle_to_matrix(np.asarray(rotvecs, np.float64).reshape(-1, num_j, 3))  # (T,J,3,3)
    c_rest = rest_conv.matrix
    c_world = world_conv.matrix
    in_armature = np.empty_like(rot)
    in_armature[:, 1:] = c_rest @ rot[:, 1:] @ c_rest.T
    in_armature[:, 0] = c_world @ rot[:, 0] @ c_rest.T
    basis = np.swapaxes(rest_rot, 1, 2)[None] @ in_armature @ rest_rot[None]
    quats = make_continuous(matrix_to_quaternion(basis))
    j0 = np.asarray(rest_joints, np.float64)[0]
    world_root = world_conv.points(j0 + np.asarray(trans, np.float64).reshape(-1, 3))  # (T,3)
    root_location = (world_root - rest_conv.points(j0)) @ rest_rot[0]  # R_0^T v, row-wise
    return quats, root_location


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------


def resample(
    rotvecs: np.ndarray, trans: np.ndarray, src_fps: float, dst_fps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a motion to another frame rate: slerp on rotations, linear on translation.

    Output frame k is at time k / dst_fps; the last output frame is the last one at or before
    the end of the source. Works for any ratio (e.g. 120 -> 29.97).

    Args:
        rotvecs: (T,J,3) axis-angle rotations.
        trans: (T,3).
    Returns:
        rotvecs (T',J,3), trans (T',3).
    """
    rotvecs = np.asarray(rotvecs, np.float64)
    trans = np.asarray(trans, np.float64)
    num_t = rotvecs.shape[0]
    if num_t < 2 or abs(src_fps - dst_fps) < 1e-9:
        return rotvecs.copy(), trans.copy()
    duration = (num_t - 1) / src_fps
    count = int(np.floor(duration * dst_fps + 1e-9)) + 1
    src_pos = np.arange(count) * (src_fps / dst_fps)
    i0 = np.clip(np.floor(src_pos + 1e-9).astype(np.int64), 0, num_t - 1)
    i1 = np.minimum(i0 + 1, num_t - 1)
    frac = np.clip(src_pos - i0, 0.0, 1.0)
    q = axis_angle_to_quaternion(rotvecs)
    out_q = slerp(q[i0], q[i1], np.broadcast_to(frac[:, None], (count, rotvecs.shape[1])))
    out_t = trans[i0] * (1.0 - frac)[:, None] + trans[i1] * frac[:, None]
    return quaternion_to_axis_angle(out_q), out_t
