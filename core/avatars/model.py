"""Canonical Gaussians per person, bound to their SMPL-X rig and posed by linear blend skinning.

Conventions: the canonical space is the rig's rest pose (``rig.vertices`` / ``rig.joints``, zero
pose, no translation), as ``splats.ply`` stores it; the posed world frame is the bundle's
(``bundle.forward_kinematics``: metres, +Y up). Quaternions w,x,y,z; scales are log scales,
opacities logits, colours SH coefficients (``sh[:, 0]`` is DC). Skin weights are top-k
(``bundle.SPLAT_SKIN_K``) joint ids and weights per Gaussian.

Torch versions of ``bundle.forward_kinematics`` / ``skin_points`` live here (batched over
frames and people, differentiable in the poses, so poses can be refined while the Gaussians are
fitted); a Gaussian's orientation follows the blend of its joints' rotations (a weighted
quaternion average).

Everything here runs once per optimisation step, so it is written for few tensor operations
(each one is a kernel launch on a GPU): constants are built once per device and cached, forward
kinematics composes the tree by pointer jumping (4 rounds for SMPL-X's depth of 10, not one
round per level), and each Gaussian gathers its joints' transforms and rotations in one index.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import bundle
from .raster import rgb_to_sh0

# --------------------------------------------------------------------------------------
# Constants, built once per (dtype, device)
# --------------------------------------------------------------------------------------


# Candidate r of a rotation matrix's quaternion (w, x, y, z), scaled by 4 q_r: "+1+00" = 1 + m[0][0].
_QUAT_CANDIDATES = (
    ("+1+00+11+22", "+21-12", "+02-20", "+10-01"),
    ("+21-12", "+1+00-11-22", "+01+10", "+02+20"),
    ("+02-20", "+01+10", "+1-00+11-22", "+12+21"),
    ("+10-01", "+02+20", "+12+21", "+1-00-11+22"),
)
# The Hamilton product as a bilinear form: (a * b)_k = sum_ij a_i b_j C[i, j, k]; (i, j, sign) per k.
_QUAT_PRODUCT = (
    ((0, 0, 1), (1, 1, -1), (2, 2, -1), (3, 3, -1)),
    ((0, 1, 1), (1, 0, 1), (2, 3, 1), (3, 2, -1)),
    ((0, 2, 1), (1, 3, -1), (2, 0, 1), (3, 1, 1)),
    ((0, 3, 1), (1, 2, 1), (2, 1, -1), (3, 0, 1)),
)


@functools.lru_cache(maxsize=64)
def _const(name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if name == "eye3":
        out = torch.eye(3, dtype=torch.float64)
    elif name == "eye4":
        out = torch.eye(4, dtype=torch.float64)
    elif name == "corner":  # homogeneous 1 of a 4x4 transform
        out = torch.zeros(4, 4, dtype=torch.float64)
        out[3, 3] = 1
    elif name == "conj":
        out = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    elif name == "quat_cands":  # (m00..m22, 1) (10,) -> the four scaled quaternion candidates (4x4 flattened)
        out = torch.zeros(10, 16, dtype=torch.float64)
        for r, row in enumerate(_QUAT_CANDIDATES):
            for c, expr in enumerate(row):
                for sign, term in re.findall(r"([+-])(\d+)", expr):
                    row = 9 if term == "1" else 3 * int(term[0]) + int(term[1])
                    out[row, 4 * r + c] = 1 if sign == "+" else -1
    elif name == "quat_product":  # outer product a b^T (16,) -> a * b (4,)
        out = torch.zeros(4, 4, 4, dtype=torch.float64)
        for k, terms in enumerate(_QUAT_PRODUCT):
            for i, j, sign in terms:
                out[i, j, k] = sign
        out = out.reshape(16, 4)
    else:
        raise KeyError(name)
    return out.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues: [..., 3] axis-angle -> [..., 3, 3] (smooth at zero).

    R = cos(t) I + sin(t)/t [v]x + (1 - cos t)/t^2 v v^T with t = |v|; both ratios are sinc
    functions, which torch differentiates at 0."""
    theta = torch.linalg.vector_norm(rotvec, dim=-1, keepdim=True)[..., None]  # [...,1,1]
    a = torch.sinc(theta * (1 / math.pi))  # sin t / t
    b = torch.sinc(theta * (0.5 / math.pi)).square() * 0.5  # (1 - cos t) / t^2
    eye = _const("eye3", rotvec.dtype, rotvec.device)
    skew = torch.linalg.cross(eye.expand(rotvec.shape[:-1] + (3, 3)), rotvec[..., None, :])  # rows e_i x v: [v]x
    outer = rotvec[..., :, None] * rotvec[..., None, :]
    return torch.cos(theta) * eye + a * skew + b * outer


def matrix_to_quat(m: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions w,x,y,z (w >= 0)."""
    flat = F.pad(m.flatten(-2), (0, 1), value=1.0)  # [..., 10]: the entries and a constant 1
    # Four candidate (scaled) quaternions; take the best conditioned one (largest diagonal) per matrix.
    cands = (flat @ _const("quat_cands", m.dtype, m.device)).unflatten(-1, (4, 4))
    best = cands.diagonal(dim1=-2, dim2=-1).argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    return F.normalize(q, dim=-1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of w,x,y,z quaternions (rotation b first, then a)."""
    outer = (a[..., :, None] * b[..., None, :]).flatten(-2)  # [..., 16]
    return outer @ _const("quat_product", outer.dtype, outer.device)


def quat_conjugate(q: Tensor) -> Tensor:
    """Inverse rotation of unit w,x,y,z quaternions."""
    return q * _const("conj", q.dtype, q.device)


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4] (w,x,y,z)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * torch.linalg.cross(u, v)
    return v + w * t + torch.linalg.cross(u, t)


# --------------------------------------------------------------------------------------
# Forward kinematics and skinning (torch twins of bundle.forward_kinematics / skin_points)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TreePlan:
    """Index tensors of one kinematic tree on one device."""

    offsets: Tensor  # [J, J]: joints -> offsets from the parent (the root keeps its position)
    rounds: tuple[Tensor, ...]  # per pointer-jumping round: [J+1] ancestor 2^r levels up (J = none)


@functools.lru_cache(maxsize=16)
def _tree_plan(parents: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> _TreePlan:
    num_j = len(parents)
    offsets = np.eye(num_j)
    for j, p in enumerate(parents):
        if p >= 0:
            if p >= j:
                raise ValueError(f"parents[{j}] = {p}: a parent must come before its child")
            offsets[j, p] = -1.0
    anc = np.array([p if p >= 0 else num_j for p in parents] + [num_j])
    rounds = []
    while (anc[:num_j] < num_j).any():
        rounds.append(torch.as_tensor(anc, device=device))
        anc = anc[anc]
    return _TreePlan(torch.as_tensor(offsets, dtype=dtype, device=device), tuple(rounds))


def forward_kinematics(
    joints: Tensor, parents: np.ndarray, rotvecs: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor]:
    """World joints and skinning transforms, as ``bundle.forward_kinematics`` (differentiable).

    Batched over any leading dimensions (frames, people). The world transform of joint j is the
    product of the local transforms on its path to the root; pointer jumping composes each joint
    with its ancestor 1, 2, 4, 8 levels up, so the whole tree takes ceil(log2(depth + 1)) rounds.

    Args:
        joints: [..., J, 3] rest joint positions.
        parents: (J,) parent index, -1 for the root, parents[j] < j (shared by the batch).
        rotvecs: [..., J, 3] local axis-angle rotations.
        trans: [..., 3] root translation (SMPL-X ``transl``).

    Returns:
        world joints [..., J, 3] and transforms [..., J, 4, 4] mapping rest points bound to
        joint j to their posed world positions.
    """
    dt, dev = rotvecs.dtype, rotvecs.device
    plan = _tree_plan(tuple(int(p) for p in np.asarray(parents).reshape(-1)), dt, dev)
    num_j = plan.offsets.shape[0]
    eye4 = _const("eye4", dt, dev)
    local_t = plan.offsets @ joints  # [..., J, 3]: offset from the parent (root: its position)
    local = F.pad(axis_angle_to_matrix(rotvecs), (0, 1, 0, 1)) + F.pad(local_t[..., None], (3, 0, 0, 1))
    local = local + _const("corner", dt, dev)  # [..., J, 4, 4]
    # Slot J holds the identity: the "ancestor" of joints whose path to the root is complete.
    world = torch.cat([local, eye4.expand(local.shape[:-3] + (1, 4, 4))], -3)
    for anc in plan.rounds:
        world = world[..., anc, :, :] @ world
    world = world[..., :num_j, :, :]
    # Skinning transform: undo the rest position first (x - rest_j), then the world transform.
    unbind = eye4 - F.pad(joints[..., None], (3, 0, 0, 1))
    shift = F.pad(trans[..., None, :, None], (3, 0, 0, 1))  # [..., 1, 4, 4]: the root translation
    skin = world @ unbind + shift
    return world[..., :3, 3] + trans[..., None, :], skin


def joint_table(transforms: Tensor) -> Tensor:
    """Per joint, what a Gaussian bound to it needs: [..., J, 4, 4] skinning transforms ->
    [..., J, 16]: the transform's top 3 rows (12, row-major) and its rotation as a quaternion."""
    return torch.cat([transforms[..., :3, :].flatten(-2), matrix_to_quat(transforms[..., :3, :3])], -1)


def skin_gaussians(
    means: Tensor,  # [N, 3] canonical
    quats: Tensor,  # [N, 4] canonical, wxyz (any norm)
    joint_ids: Tensor,  # [N, k] long, rows of ``table``
    weights: Tensor,  # [N, k], rows sum to 1
    table: Tensor,  # [T, J, 16] from joint_table (or [T, J, 4, 4] skinning transforms)
) -> tuple[Tensor, Tensor, Tensor]:
    """Pose Gaussians by linear blend skinning at T poses.

    Returns posed means [T, N, 3] (exactly ``bundle.skin_points``), posed quats [T, N, 4] and the
    blended joint rotations [T, N, 4] (posed = blend * canonical). Quaternions are w,x,y,z and
    not normalised (the rasteriser normalises): the blend is the weighted sum of the joints'
    quaternions with signs aligned to the first joint's.
    """
    if table.shape[-2:] == (4, 4):
        table = joint_table(table)
    rows = table.index_select(-2, joint_ids.flatten()).unflatten(-2, joint_ids.shape)  # [T, N, k, 16]
    mat, jq = rows.split([12, 4], -1)
    w = weights[..., None]  # [N, k, 1]
    blended = (w * mat).sum(-2).unflatten(-1, (3, 4))  # [T, N, 3, 4]
    posed = (blended * F.pad(means, (0, 1), value=1.0)[:, None, :]).sum(-1)
    sign = torch.where((jq * jq[..., :1, :]).sum(-1, keepdim=True) < 0, -w, w)
    blend = (sign * jq).sum(-2)  # [T, N, 4]
    return posed, quat_multiply(blend, quats), blend


# --------------------------------------------------------------------------------------
# Initialisation on the body surface
# --------------------------------------------------------------------------------------


@dataclass
class SurfaceSamples:
    """Points sampled on a person's rest-pose mesh (numpy, canonical space)."""

    points: np.ndarray  # (N,3)
    normals: np.ndarray  # (N,3) unit face normals
    quats: np.ndarray  # (N,4) wxyz: local z axis along the normal (flat splats)
    log_scales: np.ndarray  # (N,3) tangent, tangent, normal
    skin_joints: np.ndarray  # (N,k) int
    skin_weights: np.ndarray  # (N,k)


def sample_surface(rig: bundle.Rig, count: int, rng: np.random.Generator, k: int = bundle.SPLAT_SKIN_K,
                   flatness: float = 0.2) -> SurfaceSamples:  # fmt: skip
    """``count`` points spread over the rest mesh by area, oriented flat along the surface.

    Each splat's tangent scale is the spacing that covers the surface
    (sqrt(area / count)), its normal scale ``flatness`` times that; skin weights are the
    barycentric blend of the face's vertex weights, reduced to top-k.
    """
    v = np.asarray(rig.vertices, np.float64)
    f = np.asarray(rig.faces, np.int64)
    if len(f) == 0:
        raise ValueError("rig.faces is empty: cannot place Gaussians on the body surface")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        raise ValueError("rig mesh has zero area")
    face = rng.choice(len(f), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    tri = v[f[face]]  # (N,3,3)
    points = np.einsum("nk,nkd->nd", bary, tri)
    normals = cross[face] / np.maximum(np.linalg.norm(cross[face], axis=1, keepdims=True), 1e-12)
    # Frame: x along an edge, z along the normal.
    ex = tri[:, 1] - tri[:, 0]
    ex -= normals * np.sum(ex * normals, 1, keepdims=True)
    ex /= np.maximum(np.linalg.norm(ex, axis=1, keepdims=True), 1e-12)
    ey = np.cross(normals, ex)
    rot = np.stack([ex, ey, normals], axis=2)  # columns
    quats = matrix_to_quat(torch.from_numpy(rot)).numpy()
    spacing = np.sqrt(area.sum() / count)
    log_scales = np.log(np.array([spacing, spacing, spacing * flatness]))[None].repeat(count, 0)
    w = np.asarray(rig.weights, np.float64)
    dense = np.einsum("nk,nkj->nj", bary, w[f[face]])
    ids, top = bundle.dense_to_topk(dense, k)
    return SurfaceSamples(points, normals, quats, log_scales, ids.astype(np.int64), top.astype(np.float64))


def nearest_vertex_skin(
    rig: bundle.Rig, points: np.ndarray, k: int = bundle.SPLAT_SKIN_K
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k skin weights of canonical points from their nearest rest-mesh vertex."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(np.asarray(rig.vertices)).query(np.asarray(points), k=1)
    return bundle.dense_to_topk(np.asarray(rig.weights)[idx], k)


def project_colors(
    points_world: np.ndarray,  # (F, N, 3) posed positions at F frames
    normals_world: np.ndarray,  # (F, N, 3)
    frames: np.ndarray,  # (F, H, W, 3) uint8
    person_masks: np.ndarray,  # (F, H, W) bool: this person's visible pixels
    K: np.ndarray,  # (F, 3, 3)
    world_to_cam: np.ndarray,  # (F, 4, 4)
    default: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Colour of each point from the frames where it is best seen.

    A point counts in a frame when it projects inside the image onto this person's mask and its
    normal faces the camera; its colour is the facing-weighted mean over those frames.
    Returns colours (N,3) in [0,1] and the number of frames that saw each point (N,).
    """
    nf, n = points_world.shape[:2]
    h, w = frames.shape[1:3]
    acc = np.zeros((n, 3))
    wsum = np.zeros(n)
    seen = np.zeros(n, np.int64)
    for i in range(nf):
        r, t = world_to_cam[i, :3, :3], world_to_cam[i, :3, 3]
        pc = points_world[i] @ r.T + t
        cam_centre = -r.T @ t
        view = cam_centre - points_world[i]
        view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-9)
        facing = np.sum(view * normals_world[i], 1)
        uvw = pc @ K[i].T
        z = uvw[:, 2]
        ok = z > 1e-3
        u = np.floor(uvw[:, 0] / np.where(ok, z, 1)).astype(np.int64)
        v = np.floor(uvw[:, 1] / np.where(ok, z, 1)).astype(np.int64)
        ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h) & (facing > 0.1)
        ok[ok] = person_masks[i][v[ok], u[ok]]
        acc[ok] += facing[ok, None] * frames[i][v[ok], u[ok]].astype(np.float64) / 255.0
        wsum[ok] += facing[ok]
        seen += ok
    col = np.where(wsum[:, None] > 0, acc / np.maximum(wsum, 1e-9)[:, None], np.asarray(default)[None])
    return col, seen


def init_sh(colors: np.ndarray, sh_degree: int) -> np.ndarray:
    """(N,3) colours -> (N,(d+1)^2,3) SH coefficients with only the DC term set."""
    sh = np.zeros((len(colors), (sh_degree + 1) ** 2, 3), np.float32)
    sh[:, 0] = rgb_to_sh0(torch.as_tensor(colors, dtype=torch.float32)).numpy()
    return sh
