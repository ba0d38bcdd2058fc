"""Canonical Gaussians per person, bound to their SMPL-X rig and posed by linear blend skinning.

Conventions: the canonical space is the rig's rest pose (``rig.vertices`` / ``rig.joints``, zero
pose, no translation), as ``splats.ply`` stores it; the posed world frame is the bundle's
(``bundle.forward_kinematics``: metres, +Y up). Quaternions w,x,y,z; scales are log scales,
opacities logits, colours SH coefficients (``sh[:, 0]`` is DC). Skin weights are top-k
(``bundle.SPLAT_SKIN_K``) joint ids and weights per Gaussian.

Torch versions of ``bundle.forward_kinematics`` / ``skin_points`` live here (batched over
frames, differentiable in the poses, so poses can be refined while the Gaussians are fitted);
a Gaussian's orientation follows the blend of its joints' rotations (a normalised weighted
quaternion average).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import bundle
from .raster import rgb_to_sh0

# --------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues: [..., 3] axis-angle -> [..., 3, 3] (smooth at zero)."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp_min(1e-16))
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with their Taylor series near 0 (keeps gradients finite).
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-16))
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(rotvec.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_quat(m: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions w,x,y,z (w >= 0)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate (scaled) quaternions; take the best conditioned one per matrix.
    cands = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                         m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                         m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # fmt: skip
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of w,x,y,z quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quat_conjugate(q: Tensor) -> Tensor:
    """Inverse rotation of unit w,x,y,z quaternions."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4] (w,x,y,z)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


# --------------------------------------------------------------------------------------
# Forward kinematics and skinning (torch twins of bundle.forward_kinematics / skin_points)
# --------------------------------------------------------------------------------------


def _levels(parents: np.ndarray) -> list[np.ndarray]:
    """Joint ids grouped by depth in the tree (root first)."""
    depth = np.zeros(len(parents), np.int64)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [np.nonzero(depth == d)[0] for d in range(depth.max() + 1)]


def forward_kinematics(
    joints: Tensor, parents: np.ndarray, rotvecs: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor]:
    """World joints and skinning transforms, as ``bundle.forward_kinematics`` (differentiable).

    Batched over any leading dimensions (frames, people), one tree level at a time.

    Args:
        joints: [..., J, 3] rest joint positions.
        parents: (J,) parent index, -1 for the root, parents[j] < j (shared by the batch).
        rotvecs: [..., J, 3] local axis-angle rotations.
        trans: [..., 3] root translation (SMPL-X ``transl``).

    Returns:
        world joints [..., J, 3] and transforms [..., J, 4, 4] mapping rest points bound to
        joint j to their posed world positions.
    """
    parents = np.asarray(parents, np.int64)
    num_j = parents.shape[0]
    batch = torch.broadcast_shapes(joints.shape[:-2], rotvecs.shape[:-2], trans.shape[:-1])
    joints = joints.expand(batch + (num_j, 3))
    rot = axis_angle_to_matrix(rotvecs).expand(batch + (num_j, 3, 3))
    par = torch.as_tensor(np.maximum(parents, 0), device=joints.device)
    rel = joints - joints[..., par, :] * (torch.as_tensor(parents >= 0, device=joints.device)[:, None])
    levels = _levels(parents)
    slot = np.zeros(num_j, np.int64)  # position of each joint inside its level
    for ids in levels:
        slot[ids] = np.arange(len(ids))
    r_lv = [rot[..., levels[0], :, :]]
    t_lv = [joints[..., levels[0], :] + trans[..., None, :]]
    for lv in range(1, len(levels)):
        ids = levels[lv]
        ps = torch.as_tensor(slot[parents[ids]], device=joints.device)
        pr, pt = r_lv[-1][..., ps, :, :], t_lv[-1][..., ps, :]
        r_lv.append(pr @ rot[..., ids, :, :])
        t_lv.append((pr @ rel[..., ids, :, None])[..., 0] + pt)
    inv = torch.as_tensor(np.argsort(np.concatenate(levels)), device=joints.device)
    r = torch.cat(r_lv, -3)[..., inv, :, :]
    t = torch.cat(t_lv, -2)[..., inv, :]
    top = torch.cat([r, (t - (r @ joints[..., None])[..., 0])[..., None]], -1)  # [...,J,3,4]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=r.dtype, device=r.device).expand(
        top.shape[:-2] + (1, 4)
    )
    return t, torch.cat([top, bottom], -2)


def skin_gaussians(
    means: Tensor,  # [N, 3] canonical
    quats: Tensor,  # [N, 4] canonical, wxyz
    joint_ids: Tensor,  # [N, k] long
    weights: Tensor,  # [N, k], rows sum to 1
    transforms: Tensor,  # [T, J, 4, 4] from forward_kinematics, or already gathered [T, N, k, 4, 4]
    joint_quats: Tensor | None = None,  # [T, N, k, 4] rotations of the gathered transforms, if known
) -> tuple[Tensor, Tensor]:
    """Pose Gaussians by linear blend skinning: means [T, N, 3] and quats [T, N, 4] (wxyz).

    Positions follow ``bundle.skin_points`` exactly; an orientation is turned by the blend of its
    joints' rotations (weighted average of their quaternions, signs aligned, normalised).
    """
    tr = transforms[:, joint_ids] if transforms.dim() == 4 else transforms  # [T,N,k,4,4]
    blended = (weights[None, :, :, None, None] * tr[..., :3, :]).sum(2)  # [T,N,3,4]
    posed = (blended[..., :3] @ means[None, :, :, None])[..., 0] + blended[..., 3]
    q = matrix_to_quat(tr[..., :3, :3]) if joint_quats is None else joint_quats  # [T,N,k,4]
    sign = torch.where((q * q[:, :, :1]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    q_blend = F.normalize((weights[None, :, :, None] * q * sign).sum(2), dim=-1)
    return posed, quat_multiply(q_blend, F.normalize(quats, dim=-1))


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
