"""Multi-person SMPL-X fitting to 2D keypoints (and masks) over a whole clip, batched.

Every person and frame is one row of a batch: parameters are tensors ``[P, T, ...]`` and
each step poses all P*T bodies at once (``SparseBody``), so the same code runs on CPU and GPU
(``device``). Stages:

1. ``rigid``: per frame, root rotation + translation from the torso and face keypoints, for
   four yaw hypotheses at once; a Viterbi pass over frames picks one per frame (left/right
   labels and the face say which way a person faces).
2. ``pose``: body pose, one shape per person, rotation and translation, with priors and
   temporal smoothness, in the frame given by the cameras (the camera frame at first).
3. ``ground``: the floor plane from the lowest foot points, then the bodies and cameras are
   moved into the world frame (+Y up, floor y = 0).
4. ``world``: everything again with floor, foot-contact, between-people (interpenetration,
   depth order from masks) and silhouette terms; the cameras move only by one tilt and height
   correction against the floor, its tilt held toward the first floor estimate.

Convention: cameras are OpenCV (x right, y down, +z forward), ``K [T,3,3]`` in pixels,
``world_to_cam [T,4,4]``. Keypoints ``[P, T, 17, 3]`` are COCO-17 (x, y, confidence) in pixels
(``core.keypoints``), confidence 0 where missing.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import median_filter
from smplx.lbs import batch_rodrigues

from .. import keypoints as kp_names
from .body import BodyOutput, SparseBody
from .pose_prior import load_pose_prior
from .priors import Priors, first_difference, gmof, second_difference

log = logging.getLogger("troupe.motion")

# COCO-17 indices used to place and orient a body before its pose is known.
TORSO = (5, 6, 11, 12)  # shoulders, hips
RIGID = (0, 1, 2, 3, 4, 5, 6, 11, 12)  # face + torso
DEPTH_WINDOW = 9  # frames whose median torso-size depth starts each frame (init_translation)
TRAVEL_SIGMA = 4.0  # frames over which the pelvis path gives the direction of travel (Gaussian sigma of its local line fit)
ORDER_GAP = 0.1  # m the pelvis of a person in front is nearer the camera, at least (depth order)
ORDER_MIN = 0.03  # share of a body's surface samples hidden by another that is no evidence yet (fit noise)
MASK_SAMPLES = 64  # pixels drawn from each person's mask per frame for the coverage half of the silhouette term
# Weight of each COCO-17 keypoint in the fit: SMPL-X hip joints sit higher and further in
# than annotated hips (core.keypoints), so they count less.
KEYPOINT_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.5, 1, 1, 1, 1], np.float32)
# Weight of each foot keypoint (heels, big toes: core.keypoints.FOOT_NAMES) where the detector gives them.
FOOT_KEYPOINT_WEIGHT = 1.0
# Left/right COCO-17 pairs a turned body hides one side of (eyes, ears, shoulders, hips): where a
# detector sees one and not the other, the seen one is probably the nearer (``Fitter.rigid_frame_costs``).
SIDE_PAIRS = ((1, 2), (3, 4), (5, 6), (11, 12))
SIDE_BEHIND = 0.08  # m: a seen point this far behind its missing partner contradicts the detector (half the cost)
SIDE_DEPTH = 0.02  # m over which that contradiction goes from none to full
PELVIS, NECK = 0, 12  # SMPL-X joint indices
TORSO_SWING_SIGMA = 0.05  # rad per frame (about 3 degrees) from which the torso's swing costs less than quadratically
W_SIDE = 0.05  # cost of one pair seen the wrong way round, in the rigid stage's per-frame keypoint-cost units


@dataclass
class FitConfig:
    """Weights and iteration counts of the fit (``quality`` presets scale the iterations)."""

    iters_rigid: int = 40  # root-only iterations per yaw hypothesis
    iters_limbs: int = 40  # limb-only iterations per starting pose (root held), 0 = start from relaxed limbs
    iters_heading: int = 100  # full-body iterations of each turned copy when choosing start headings (0: rigid heading kept)
    iters_pose: int = 300  # full-body iterations in the camera frame (depth converges slowly)
    iters_world: int = 2000  # most iterations in the world frame with floor / contact / people terms (it stops at world_tol)
    world_tol: float = 0.0025  # the world stage's phases end once 20 iterations lower the loss by less than this share (0: all iterations)
    lr: float = 0.04  # Adam learning rate (radians, metres, betas)
    # robust scale of keypoint residuals, as a fraction of the person's size in pixels: a wrong
    # keypoint pays a bounded price, yet a whole person drifted a body's size off their keypoints
    # is still pulled back (at 0.3 the world stage's other terms carried three of six dancers of
    # the dance class 100-200 px off them; docs/motion.md)
    kp_sigma: float = 1.0
    w_kp: float = 1.0  # reprojection
    w_limits: float = 10.0  # joint limits (radians^2 beyond the range)
    w_pose: float = 1e-2  # L2 of the body pose
    w_shape: float = 5e-3  # L2 of betas
    # a learned pose prior (``core.motion.pose_prior``: a mixture over the body pose, built from
    # motion capture; "" = none) and its weight per frame
    pose_prior: str = ""
    w_pose_prior: float = 1e-4
    w_smooth: float = 3.0  # joint acceleration (m/frame^2)^2
    w_smooth_pose: float = 0.05  # pose velocity (rad/frame)^2
    w_smooth_rot: float = 1.0  # angular acceleration of the root (squared Frobenius norm of its rotation's second difference)
    w_torso_speed: float = 10.0  # the pelvis-to-neck direction swinging from frame to frame (robust; turning about it is free)
    w_floor: float = 20.0  # lowest foot point to the floor (robust: jumps pay less)
    w_ground: float = 100.0  # points below the floor
    w_contact: float = 100.0  # foot sliding / lifting while in contact (m^2)
    w_people: float = 100.0  # interpenetration between people (m^2 of sphere overlap)
    w_depth_order: float = 10.0  # who is in front where masks say so (m^2 of pelvis depth out of order, times the share of the body hidden)
    depth_order_inside: float = 0.05  # a point counts as hidden by another person's mask this far inside it (share of the person's size)
    w_silhouette: float = 1.0  # body surface outside the person's (or an occluder's) mask (mean over points)
    contact_height: float = 0.05  # a foot point this close to the person's lowest one (m) may be in contact
    contact_speed: float = 0.4  # and moving slower than this (m/s, over a few frames)
    contact_still: float = 0.008  # an ankle keypoint drifting slower than this against the camera's own motion (share of the person's size per frame) marks its foot as planted (0: off)
    contact_turn: float = 0.25  # what turning a planted foot about where it stands costs, against sliding it as far (1: every foot point held in place)
    w_cam_tilt: float = 1.0  # the world stage's camera tilt away from the first floor estimate (rad^2 per frame)
    w_hold_ends: float = 1.0  # near the clip's ends, turning a body away from the heading the world stage started from (per frame, 2(1 - cos), times how one-sided the stage's cues are there)
    w_heading: float = 0.1  # facing away from the direction of travel (robust, per frame)
    heading_speed: float = 0.6  # m/s of travel from which the direction counts fully (half of it: not at all)
    min_confidence: float = 0.2  # keypoints below this confidence are ignored
    foot_keypoints: bool = True  # fit the detector's heels and big toes where the observations have them
    snap_to_floor: bool = True  # before the world stage, slide each person along the rays onto the shared floor
    # A person whom the world stage carries off their keypoints (mean reprojection error, as a
    # share of their size, above world_guard_ratio times the camera-frame fit's and worse by
    # world_guard_share) is fitted again with their keypoints weighted world_guard_boost times (1: off)
    world_guard_ratio: float = 3.0
    world_guard_share: float = 0.05
    world_guard_boost: float = 10.0
    optimizer: str = "lbfgs"  # lbfgs (20 inner iterations per outer step) | adam
    device: str = "cpu"
    # on CUDA, record a stage's loss evaluation (forward and backward) once as a CUDA graph and
    # replay it: the same kernels without launching each from Python (docs/motion.md, Time)
    cuda_graphs: bool = True


# One loss evaluation with its gradients: (find the silhouette's nearest points anew) -> loss, terms
Evaluation = Callable[[bool], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Observations:
    """What the fit is given (numpy; the fitter moves it to the device).

    keypoints: [P, T, 17, 3] COCO-17 x, y (pixels), confidence.
    K: [T, 3, 3]; world_to_cam: [T, 4, 4] (identity for "camera frame").
    labels: optional [T, h, w] int person-index map (0 = background, p+1 = person p) at a
        reduced resolution; ``label_scale`` = h / image height. fps: frames per second.
    foot_keypoints: optional [P, T, 4, 3] heels and big toes (``core.keypoints.FOOT_NAMES``),
        x, y, confidence; they join the keypoint term and show the foot's pitch.
    """

    keypoints: np.ndarray
    K: np.ndarray
    world_to_cam: np.ndarray
    image_size: tuple[int, int]
    labels: np.ndarray | None = None
    label_scale: float = 1.0
    fps: float = 30.0  # frames per second (speeds in m/s)
    foot_keypoints: np.ndarray | None = None

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[1])


@dataclass
class FitState:
    """Fitted parameters (numpy). Rotations as matrices; ``transl`` is SMPL-X's."""

    betas: np.ndarray  # [P, nb]
    global_rot: np.ndarray  # [P, T, 3, 3]
    body_pose: np.ndarray  # [P, T, 63]
    transl: np.ndarray  # [P, T, 3]
    world_to_cam: np.ndarray  # [T, 4, 4]


# ------------------------------------------------------------------------------------------
# small geometry helpers
# ------------------------------------------------------------------------------------------


def relaxed_pose() -> np.ndarray:
    """[63] body pose to start from: arms down by the sides (the rest pose is a T-pose)."""
    pose = np.zeros((21, 3))
    pose[15, 2] = -1.2  # left shoulder (joint 16): arm down
    pose[16, 2] = 1.2  # right shoulder (joint 17)
    return pose.reshape(63)


def yaw_rotation(yaw: float) -> np.ndarray:
    """[3, 3] rotation by ``yaw`` about +y (a body's own vertical)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def facing_rotation(yaw: float) -> np.ndarray:
    """Body-to-camera rotation of an upright person facing the camera, turned by ``yaw`` about
    their own vertical axis (OpenCV camera: body +y up -> camera -y, body +z forward -> camera -z)."""
    return np.diag([1.0, -1.0, -1.0]) @ yaw_rotation(yaw)


@functools.lru_cache(maxsize=32)
def on_device(values: tuple[float, ...], device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` (indices, or constants of ``dtype``) as a tensor on ``device``, made once: a list
    or tuple turned into a tensor is copied to the GPU at every use, which a CUDA graph cannot
    record."""
    return torch.as_tensor(values, dtype=dtype, device=device)


def nearest_index(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, M, D] points, [B, N, D] targets -> [B, M] index of each point's nearest target (no gradients)."""
    with torch.no_grad():  # the nearest by squared distance less |point|^2 (the same for every target of a point)
        sq = torch.baddbmm((targets * targets).sum(-1)[:, None, :], points, targets.transpose(1, 2), alpha=-2.0)
        return sq.min(-1).indices


def nearest_distance(points: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """[B, M, D] points, [B, N, D] targets -> [B, M] distance from each point to its nearest target
    (or to the target ``idx`` [B, M] names, from ``nearest_index`` at an earlier position).

    The same value and gradient as ``torch.cdist(points, targets).min(-1)`` (a minimum passes its
    gradient to the nearest target only), but the nearest one is found without gradients and only
    those M distances are differentiated: cdist's backward over all M x N pairs was two thirds of
    the world stage's time on the CPU. The search uses the matrix-product form of the squared
    distance, as cdist does for batches this size, and skips cdist's square root; the distances
    returned are exact."""
    if idx is None:
        idx = nearest_index(points, targets)  # [B, M]
    nearest = torch.gather(targets, 1, idx[..., None].expand(*idx.shape, targets.shape[-1]))
    return torch.linalg.vector_norm(points - nearest, dim=-1)


def person_scale(kps: np.ndarray, min_conf: float) -> np.ndarray:
    """[P, T, 17, 3] -> [P, T] size of each person in pixels (diagonal of the confident
    keypoints' box, at least 10), filled over time where fewer than 3 keypoints are seen."""
    vis = kps[..., 2] >= min_conf
    lo = np.where(vis[..., None], kps[..., :2], np.inf).min(-2)
    hi = np.where(vis[..., None], kps[..., :2], -np.inf).max(-2)
    size = np.where(vis.sum(-1) >= 3, np.linalg.norm(np.where(np.isfinite(hi - lo), hi - lo, 0.0), axis=-1), np.nan)
    out = np.stack([_fill_nan_1d(size[p], default=100.0) for p in range(size.shape[0])])
    return np.maximum(out, 10.0)


def _fill_nan_1d(a: np.ndarray, default: float) -> np.ndarray:
    """Linear interpolation over NaNs, nearest value at the ends, ``default`` if all NaN."""
    ok = np.isfinite(a)
    if not ok.any():
        return np.full_like(a, default)
    idx = np.arange(len(a))
    return np.interp(idx, idx[ok], a[ok])


def init_translation(
    kps: np.ndarray, K: np.ndarray, rest_joints: np.ndarray, rest_coco: np.ndarray, min_conf: float
) -> np.ndarray:
    """Pelvis positions in the camera frame from the torso's size in pixels.

    Args:
        kps: [P, T, 17, 3]; K: [T, 3, 3]; rest_joints: [55, 3] mean-shape rest joints;
        rest_coco: [17, 3] COCO points of the mean shape at rest.

    Returns:
        [P, T, 3] pelvis positions (camera frame), interpolated over frames without a torso.
    """
    # Shoulder-to-hip lengths do not shrink when a person turns, the diagonals shrink a little and
    # the widths a lot (to nothing in profile): the first group with a pair seen decides.
    groups = (((5, 11), (6, 12)), ((5, 12), (6, 11)), ((5, 6), (11, 12)))
    num_p, num_t = kps.shape[:2]
    out = np.full((num_p, num_t, 3), np.nan)
    f = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    for p in range(num_p):
        for t in range(num_t):
            k = kps[p, t]
            ratios: list[float] = []
            for group in groups:
                for a, b in group:
                    l2d = float(np.linalg.norm(k[a, :2] - k[b, :2]))
                    if k[a, 2] >= min_conf and k[b, 2] >= min_conf and l2d > 2:
                        ratios.append(float(np.linalg.norm(rest_coco[a] - rest_coco[b])) / l2d)
                if ratios:
                    break
            if not ratios:
                continue
            z = f[t] * float(np.mean(ratios)) if group is not groups[-1] else f[t] * max(ratios)
            seen = [i for i in (11, 12, 5, 6) if k[i, 2] >= min_conf]
            hips = [i for i in (11, 12) if k[i, 2] >= min_conf]
            use = hips or seen
            uv = k[use, :2].mean(0)
            ray = np.linalg.solve(K[t], np.array([uv[0], uv[1], 1.0]))
            centre = ray * z
            if not hips:  # only shoulders: the pelvis is about a torso length below
                centre = centre + np.array([0.0, rest_joints[12, 1] - rest_joints[0, 1], 0.0]) * 0.8
            out[p, t] = centre
        for c in range(3):
            out[p, :, c] = _fill_nan_1d(out[p, :, c], default=[0.0, 0.0, 4.0][c])
        # people do not jump in depth: each frame's distance along its ray is the median of its
        # neighbours' (one frame's torso is a few dozen pixels, noisy, and dropped or foreshortened)
        z = out[p, :, 2]
        zmed = median_filter(z, size=min(DEPTH_WINDOW, num_t), mode="nearest")
        out[p] *= (zmed / np.maximum(z, 1e-6))[:, None]
    return out


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotation matrices [..., 3, 3]."""
    tr = np.einsum("...ij,...ij->...", a, b)
    return np.arccos(np.clip((tr - 1) / 2, -1, 1))


def viterbi(cost: np.ndarray, switch: np.ndarray) -> np.ndarray:
    """Pick one state per frame: ``cost`` [T, H] per-frame costs, ``switch`` [T-1, H, H] costs
    of going from state i at t to j at t+1. Returns [T] state indices."""
    num_t, num_h = cost.shape
    acc = cost[0].copy()
    back = np.zeros((num_t, num_h), np.int64)
    for t in range(1, num_t):
        tot = acc[:, None] + switch[t - 1]
        back[t] = np.argmin(tot, 0)
        acc = tot[back[t], np.arange(num_h)] + cost[t]
    states = np.zeros(num_t, np.int64)
    states[-1] = int(np.argmin(acc))
    for t in range(num_t - 1, 0, -1):
        states[t - 1] = back[t, states[t]]
    return states


def rigid_transform_bodies(
    rest_pelvis: np.ndarray, global_rot: np.ndarray, transl: np.ndarray, g_rot: np.ndarray, g_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move SMPL-X bodies by x -> g_rot x + g_t.

    SMPL-X rotates about the rest pelvis ``J0`` then adds ``transl``, so the new parameters are
    ``R' = g_rot R`` and ``transl' = g_rot (J0 + transl) + g_t - J0``.

    Args:
        rest_pelvis: [P, 3]; global_rot: [P, T, 3, 3]; transl: [P, T, 3];
        g_rot: [3, 3] or [T, 3, 3]; g_t: [3] or [T, 3].
    """
    g_rot = np.broadcast_to(g_rot, (global_rot.shape[1], 3, 3))
    g_t = np.broadcast_to(g_t, (global_rot.shape[1], 3))
    new_rot = np.einsum("tab,ptbc->ptac", g_rot, global_rot)
    j0 = rest_pelvis[:, None, :]
    new_t = np.einsum("tab,ptb->pta", g_rot, j0 + transl) + g_t[None] - j0
    return new_rot, new_t


# ------------------------------------------------------------------------------------------
# The fitter
# ------------------------------------------------------------------------------------------


class Fitter:
    """Holds the parameters of P tracks over T frames and runs the optimisation stages."""

    def __init__(self, body: SparseBody, obs: Observations, config: FitConfig, state: FitState) -> None:
        self.body = body
        self.cfg = config
        self.obs = obs
        dev = torch.device(config.device)
        self.device = dev
        f32 = dict(dtype=torch.float32, device=dev)
        kps = obs.keypoints.astype(np.float32)
        weights = KEYPOINT_WEIGHTS
        # With foot keypoints the keypoint term reads 21 points a body: COCO-17, then the feet.
        self.has_feet = obs.foot_keypoints is not None and config.foot_keypoints
        if self.has_feet:
            assert obs.foot_keypoints is not None
            kps = np.concatenate([kps, obs.foot_keypoints.astype(np.float32)], axis=2)
            weights = np.concatenate([weights, np.full(len(kp_names.FOOT_NAMES), FOOT_KEYPOINT_WEIGHT, np.float32)])
        conf = kps[..., 2] * (kps[..., 2] >= config.min_confidence) * weights
        self.kp_xy = torch.as_tensor(kps[..., :2], **f32)
        self.kp_w = torch.as_tensor(conf, **f32)  # [P,T,17 or 21] (``boost_keypoints`` scales a person's rows)
        self.scale = torch.as_tensor(person_scale(obs.keypoints, config.min_confidence), **f32)  # [P,T]
        self.K = torch.as_tensor(obs.K, **f32)
        self.w2c_init = torch.as_tensor(state.world_to_cam, **f32)
        # Correction of the camera against the floor, shared by all frames: tilt about world x and
        # z (radians) and height (m) -- the floor found from the first fit is refined with the people;
        # the tilt is held toward that first estimate (``w_cam_tilt``), as the feet of one person
        # walking a line say little about it and noise alone rolled the camera by degrees.
        self.cam_delta = torch.zeros(3, **f32).requires_grad_(True)
        self.steps_run = 0  # optimiser steps the last ``run`` took (L-BFGS: 20 iterations each)
        self.num_p, self.num_t = kps.shape[:2]
        # how sure a path's slope is at each frame (1 inside, falling toward the clip's ends, where
        # ``time_slope`` is one-sided): the world stage's heading cue and end hold read it
        self.slope_sure = torch.as_tensor(slope_precision(self.num_t, TRAVEL_SIGMA), **f32)
        self.betas = torch.as_tensor(state.betas, **f32).requires_grad_(True)
        self.rot_base = torch.as_tensor(state.global_rot, **f32)
        self.d_rot = torch.zeros(self.num_p, self.num_t, 3, **f32).requires_grad_(True)
        self.body_pose = torch.as_tensor(state.body_pose, **f32).requires_grad_(True)
        self.transl = torch.as_tensor(state.transl, **f32).requires_grad_(True)
        self.priors = Priors(dev)
        self.pose_prior = load_pose_prior(config.pose_prior, str(dev)) if config.pose_prior else None
        # [P] height (m) of the level each person stands on: 0 the floor, more a rooftop or a stage
        self.level = torch.zeros(self.num_p, **f32)
        self._graphs_failed = False  # a CUDA graph could not be recorded: evaluate kernel by kernel from then on
        self.labels = None
        if obs.labels is not None:
            self.labels = torch.as_tensor(obs.labels.astype(np.int64), device=dev)  # [T,h,w]
            self._prepare_masks()

    def boost_keypoints(self, people: np.ndarray, factor: float) -> None:
        """Weight the keypoints of ``people`` (indices) ``factor`` times against the other terms."""
        self.kp_w[torch.as_tensor(people, dtype=torch.long, device=self.device)] *= factor

    # -- forward -------------------------------------------------------------------------

    def global_rot(self) -> torch.Tensor:
        d = batch_rodrigues(self.d_rot.reshape(-1, 3)).reshape(self.num_p, self.num_t, 3, 3)
        return self.rot_base @ d

    def pose_bodies(self, surface: bool = True) -> BodyOutput:
        p, t = self.num_p, self.num_t
        betas = self.betas[:, None].expand(p, t, -1).reshape(p * t, -1)
        rot = self.global_rot().reshape(-1, 3, 3)
        out = self.body(betas, rot, self.body_pose.reshape(-1, 63), self.transl.reshape(-1, 3), surface=surface)
        return BodyOutput(*(x.reshape(p, t, *x.shape[1:]) for x in (out.joints, out.coco, out.feet, out.surface, out.foot_keypoints)))

    @property
    def w2c(self) -> torch.Tensor:
        """[T, 4, 4] world-to-camera with the floor correction: world_to_cam_init @ inv(E), E = the
        camera's move in the world (rotation about the origin, then up by the height change)."""
        d = self.cam_delta
        zero = torch.zeros((), dtype=d.dtype, device=d.device)
        rot = batch_rodrigues(torch.stack([d[0], zero, d[1]])[None])[0]
        e_inv = torch.eye(4, dtype=d.dtype, device=d.device)
        e_inv = torch.cat([torch.cat([rot.T, (-rot.T @ torch.stack([zero, d[2], zero]))[:, None]], 1), e_inv[3:]], 0)
        return self.w2c_init @ e_inv

    def to_camera(self, pts: torch.Tensor) -> torch.Tensor:
        """[P, T, N, 3] world points -> camera frame."""
        w2c = self.w2c
        r = w2c[:, :3, :3]
        tr = w2c[:, :3, 3]
        return torch.einsum("tab,ptnb->ptna", r, pts) + tr[None, :, None]

    def project(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[P, T, N, 3] world points -> pixels [P, T, N, 2] and depth [P, T, N]."""
        pc = self.to_camera(pts)
        z = pc[..., 2]
        zc = torch.clamp(z, min=0.05)
        uvw = torch.einsum("tab,ptnb->ptna", self.K, pc)
        return uvw[..., :2] / zc[..., None], z

    # -- loss terms -------------------------------------------------------------------------

    def keypoint_residuals(self, out: BodyOutput) -> torch.Tensor:
        """[P, T, 17] confidence-weighted robust reprojection error of each keypoint (normalised
        by person size), plus a penalty for points behind the camera; [P, T, 21] with the feet."""
        uv, z = self.project(torch.cat([out.coco, out.foot_keypoints], dim=2) if self.has_feet else out.coco)
        res = ((uv - self.kp_xy) ** 2).sum(-1) / self.scale[..., None] ** 2
        behind = torch.relu(0.1 - z) ** 2 * 100  # keep points in front of the camera
        return self.kp_w * gmof(res, self.cfg.kp_sigma) + behind

    def keypoint_term(self, out: BodyOutput, subset: tuple[int, ...] | None = None) -> torch.Tensor:
        """[P, T] confidence-weighted robust reprojection error (normalised by person size)."""
        res = self.keypoint_residuals(out)
        if subset is not None:
            res = res[..., on_device(subset, self.device)]
        return res.sum(-1)

    def smooth_term(self, out: BodyOutput) -> torch.Tensor:
        """[P] joint acceleration, pose velocity and the root's angular acceleration."""
        c = self.cfg
        j = out.joints[:, :, :22]
        zero = j.sum((1, 2, 3)) * 0
        if self.num_t < 3:
            vel = (first_difference(self.body_pose) ** 2).sum((-1, -2)) if self.num_t > 1 else zero
            return c.w_smooth_pose * vel
        acc = (second_difference(j) ** 2).sum((-1, -2, -3))
        vel = (first_difference(self.body_pose) ** 2).sum((-1, -2))
        rot = (second_difference(self.global_rot()) ** 2).sum((-1, -2, -3))
        return c.w_smooth * acc + c.w_smooth_pose * vel + c.w_smooth_rot * rot + c.w_torso_speed * self.torso_swing(j)

    def torso_swing(self, joints: torch.Tensor) -> torch.Tensor:
        """[P] how far the pelvis-to-neck direction swings from one frame to the next (squared
        change of the unit vector, robust: a fast bow or fall pays a bounded price).

        The acceleration terms above leave a steady ramp free, and the lean of a body, which the
        keypoints hardly fix (depth along the ray), ramped 5-16 degrees off near the clip's ends where
        only one side holds it; W-MPJPE aligns each person on their first two frames and tilted
        their whole path by it (docs/motion.md). Turning about the torso's own axis costs nothing."""
        torso = joints[:, :, NECK] - joints[:, :, PELVIS]
        torso = torso / torso.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        return gmof((first_difference(torso) ** 2).sum(-1), TORSO_SWING_SIGMA).sum(-1)

    def pose_prior_terms(self) -> torch.Tensor:
        """[P, T, 21] weighted joint-limit and comfort cost of each body joint (a learned pose
        prior's cost of the whole pose shared out evenly)."""
        c = self.cfg
        terms = c.w_limits * self.priors.joint_limit_terms(self.body_pose) + c.w_pose * self.priors.comfort_terms(self.body_pose)
        if self.pose_prior is not None:
            terms = terms + (c.w_pose_prior / 21) * self.pose_prior(self.body_pose)[..., None]
        return terms

    def prior_term(self) -> torch.Tensor:
        per_frame = self.pose_prior_terms().sum(-1)
        return per_frame.sum(-1) + self.cfg.w_shape * self.num_t * self.priors.shape_l2(self.betas)  # [P]

    def floor_terms(self, out: BodyOutput, contact: torch.Tensor | None) -> torch.Tensor:
        """[P] floor (y = 0) terms in the world frame. ``contact`` [P, T, 6] weights of foot points."""
        c = self.cfg
        level = self.level[:, None, None]
        feet_y = out.feet[..., 1] - level
        low = torch.min(feet_y, dim=-1).values
        floor = c.w_floor * gmof(low**2, 0.5).sum(-1)
        below = torch.cat([out.feet[..., 1], out.surface[..., 1], out.joints[:, :, :22, 1]], dim=-1) - level
        ground = c.w_ground * (torch.relu(-below) ** 2).sum((-1, -2))
        total = floor + ground
        if contact is not None and self.num_t > 1:
            vel = first_difference(out.feet)  # [P,T-1,6,3]
            w = torch.minimum(contact[:, 1:], contact[:, :-1])
            # a planted foot holds its place and stays down; turning about the points it stands on
            # (the contact-weighted mean of its horizontal motion taken out) costs contact_turn
            wf = w.reshape(*w.shape[:2], 2, 3)
            vf = vel.reshape(*vel.shape[:2], 2, 3, 3)[..., ::2]  # horizontal (x, z)
            mean = (wf[..., None] * vf).sum(-2, keepdim=True) / wf.sum(-1, keepdim=True)[..., None].clamp(min=1e-6)
            move = (wf * (mean**2).sum(-1)).sum((-1, -2, -3))
            turn = (wf * ((vf - mean) ** 2).sum(-1)).sum((-1, -2, -3))
            slide = move + c.contact_turn * turn + (w * vel[..., 1] ** 2).sum((-1, -2))
            lift = (contact * feet_y**2).sum((-1, -2))
            total = total + c.w_contact * (slide + lift)
        return total

    def heading_term(self, cues: WorldCues) -> torch.Tensor:
        """[P] a person travelling faces where they go (robust: a sidestep pays a bounded price)."""
        off = 1.0 - (facing(self.global_rot()) * cues.travel).sum(-1)  # 0 when aligned, 2 when opposite
        return self.cfg.w_heading * (cues.travel_weight * gmof(off, 0.3)).sum(-1)

    def hold_ends_term(self) -> torch.Tensor:
        """[P] near the clip's ends, what turning a body about the vertical away from the heading
        this fitter started from costs (the camera-frame fit's, in the world stage).

        The world stage reads its contact and heading cues from the fit itself, and within a few
        frames of the clip's ends from one side of it only; there they are least sure and the
        camera-frame fit's heading is the better guess. Left free, they put the first frame of
        people who spin on the spot as the clip starts 21-25 degrees off the truth, where the
        camera-frame fit had them 4-6 degrees off (docs/motion.md). Weighted per frame by how
        unsure the one-sided cues are there, ``1 - slope_precision``: 0.85 on the first and last
        frame, 0 from about ten frames in."""
        turned = 2.0 * (1.0 - (facing(self.global_rot()) * facing(self.rot_base)).sum(-1))  # [P,T] ~ angle^2
        return self.cfg.w_hold_ends * ((1.0 - self.slope_sure) * turned).sum(-1)

    def people_term(self, out: BodyOutput) -> torch.Tensor:
        """Sphere-overlap penalty between every pair of people (same frame)."""
        if self.num_p < 2:
            return torch.zeros((), device=self.device)
        centres, radii = body_spheres(out.joints)
        total = torch.zeros((), device=self.device)
        for a in range(self.num_p):
            for b in range(a + 1, self.num_p):
                d = torch.cdist(centres[a], centres[b])  # [T,S,S]
                overlap = torch.relu(radii[:, None] + radii[None, :] - d)
                total = total + (overlap**2).sum()
        return self.cfg.w_people * total

    # -- masks ------------------------------------------------------------------------------

    def _prepare_masks(self) -> None:
        """Distance (in label pixels) to the region where each person may appear: their own mask
        or any other person's (who may hide them)."""
        import cv2

        labels = self.obs.labels
        assert labels is not None
        num_t, h, w = labels.shape
        field_ = np.zeros((self.num_p, num_t, h, w), np.float32)
        inside = np.zeros((self.num_p, num_t, h, w), np.float32)  # distance to the edge of p's own mask, inside it
        has = np.zeros((self.num_p, num_t), bool)
        m = MASK_SAMPLES
        samples = np.zeros((self.num_p, num_t, m, 2), np.float32)
        rng = np.random.default_rng(0)
        for t in range(num_t):
            people = labels[t] > 0
            for p in range(self.num_p):
                ys, xs = np.nonzero(labels[t] == p + 1)
                has[p, t] = len(xs) > 0
                if has[p, t]:
                    field_[p, t] = cv2.distanceTransform((~people).astype(np.uint8), cv2.DIST_L2, 3)
                    inside[p, t] = cv2.distanceTransform((labels[t] == p + 1).astype(np.uint8), cv2.DIST_L2, 3)
                    pick = rng.integers(0, len(xs), m)
                    samples[p, t, :, 0] = (xs[pick] + 0.5) / self.obs.label_scale
                    samples[p, t, :, 1] = (ys[pick] + 0.5) / self.obs.label_scale
        self.mask_dist = torch.as_tensor(field_, device=self.device)
        self.mask_inside = torch.as_tensor(inside, device=self.device)
        self.mask_has = torch.as_tensor(has, device=self.device)
        self.mask_samples = torch.as_tensor(samples, device=self.device)  # [P,T,M,2] image px inside each mask
        # each sample's nearest body point, found where ``find_near`` is set (an optimiser step's
        # first evaluation, ``run``) and kept through the step; one buffer, so a CUDA graph reads it
        self.near_idx = torch.zeros(self.num_p * num_t, m, dtype=torch.long, device=self.device)
        self.find_near = True

    def _sample(self, grid: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear sample [P, T, h, w] maps at pixel positions uv [P, T, N, 2] (image pixels)."""
        h, w = grid.shape[-2:]
        s = self.obs.label_scale
        gx = (uv[..., 0] * s + 0.5) / w * 2 - 1
        gy = (uv[..., 1] * s + 0.5) / h * 2 - 1
        g = torch.stack([gx, gy], -1).reshape(-1, uv.shape[2], 1, 2)
        # beyond +-1 the border value is read anyway; huge or NaN positions (a body behind or at the
        # camera of a broken camera path) crashed grid_sample's CPU backward (SIGSEGV, torch 2.13)
        g = torch.nan_to_num(g, nan=0.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)
        out = torch.nn.functional.grid_sample(
            grid.reshape(-1, 1, h, w), g, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.reshape(uv.shape[:3])

    def mask_terms(self, out: BodyOutput) -> torch.Tensor:
        """Silhouette (surface projected outside the allowed region) and depth order (where a
        person's surface falls on another person's mask, that person must be in front)."""
        if self.labels is None:
            return torch.zeros((), device=self.device)
        c = self.cfg
        uv, _ = self.project(out.surface)  # [P,T,S,2]
        dist = self._sample(self.mask_dist, uv) / self.obs.label_scale  # in image pixels
        outside = gmof((dist / self.scale[..., None]) ** 2, 0.2).mean(-1)
        # and the other way: every visible part of the mask has some of the body near it
        samples, body_uv = self.mask_samples.reshape(-1, MASK_SAMPLES, 2), uv.reshape(-1, uv.shape[2], 2)
        if self.find_near:  # the nearest body points are found once per optimiser step (``run``)
            self.near_idx.copy_(nearest_index(samples, body_uv))
        near = nearest_distance(samples, body_uv, self.near_idx)
        cover = gmof((near.reshape(self.num_p, self.num_t, -1) / self.scale[..., None]) ** 2, 0.2).mean(-1)
        sil = ((outside + cover) * self.mask_has).sum()
        total = c.w_silhouette * sil
        if self.num_p > 1:
            h, w = self.labels.shape[-2:]
            s = self.obs.label_scale
            ix = (uv[..., 0] * s).long().clamp(0, w - 1)
            iy = (uv[..., 1] * s).long().clamp(0, h - 1)
            t_idx = torch.arange(self.num_t, device=self.device)[None, :, None].expand_as(ix)
            lab = self.labels[t_idx, iy, ix]  # [P,T,S] label under each projected point
            # hidden[a][b]: [T] share of a's surface that lands well inside b's mask (b hides it there);
            # only well inside: a body fitted a little wider than its own mask spills onto the mask
            # of whoever stands behind it, which is no evidence
            hidden = [[torch.zeros(self.num_t, device=self.device) for _ in range(self.num_p)] for _ in range(self.num_p)]
            for a in range(self.num_p):
                margin = max(c.depth_order_inside, 1e-6) * self.scale[a][:, None] * self.obs.label_scale
                for b in range(self.num_p):
                    if a != b:
                        deep = self._sample(self.mask_inside[b : b + 1], uv[a : a + 1].detach())[0]  # [T,S]
                        hidden[a][b] = ((lab[a] == b + 1).float() * (deep / margin).clamp(0.0, 1.0)).mean(-1)
            # Where one body hides clearly more of the other than the other way round (by more than
            # ORDER_MIN of its surface), it is in front: its pelvis nearer the camera by ORDER_GAP,
            # paid in proportion to that evidence.
            depth = self.to_camera(out.joints[:, :, :1])[..., 0, 2]  # [P,T] pelvis depth
            order = torch.zeros((), device=self.device)
            for a in range(self.num_p):
                for b in range(a + 1, self.num_p):
                    ev = hidden[a][b] - hidden[b][a]  # > 0: b in front of a
                    behind_b = torch.relu(depth[b] - depth[a] + ORDER_GAP) ** 2
                    behind_a = torch.relu(depth[a] - depth[b] + ORDER_GAP) ** 2
                    order = order + (torch.relu(ev - ORDER_MIN) * behind_b + torch.relu(-ev - ORDER_MIN) * behind_a).sum()
            total = total + c.w_depth_order * order
        return total

    # -- optimisation --------------------------------------------------------------------------

    def run(
        self,
        stage: str,
        iters: int,
        params: list[torch.Tensor],
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, float]:
        """Optimise ``params`` on the ``stage`` loss for at most ``iters`` iterations (L-BFGS:
        steps of 20; Adam: single steps).

        The world stage runs in two phases: its contact and heading cues are read from the fit at
        the start of each and held while it optimises. With L-BFGS a phase ends early once a step
        lowers the loss by less than ``cfg.world_tol`` of it (converged); the second phase gets
        what the first left of the budget. The other stages always use all of ``iters``."""
        cues: WorldCues | None = None
        norm = float(max(self.num_p * self.num_t, 1))
        terms: dict[str, torch.Tensor] = {}
        lbfgs = self.cfg.optimizer == "lbfgs"
        it = 0

        def new_lbfgs() -> torch.optim.Optimizer:
            return torch.optim.LBFGS(params, lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe")

        opt = new_lbfgs() if lbfgs else torch.optim.Adam(params, lr=self.cfg.lr)
        outer = -(-iters // 20) if lbfgs else iters  # 0 iterations: no step
        evals = 0
        budget = max(outer * (25 if lbfgs else 1), 1)  # LBFGS: <= 25 evaluations a step
        world = stage == "world"
        tol = self.cfg.world_tol if world and lbfgs else 0.0
        refresh = outer // 2  # the step that starts the world stage's second phase
        last = math.inf  # the loss at the start of the previous step
        evaluate = self._evaluator(stage, None, norm)
        for it in range(outer):
            if world and it in (0, refresh):  # contacts from the fit so far, held while optimising
                with torch.no_grad():
                    cues = self.world_cues(self.pose_bodies(surface=False))
                evaluate = self._evaluator(stage, cues, norm)
                if it > 0 and lbfgs:  # a new objective: start the curvature history afresh
                    opt = new_lbfgs()
                last = math.inf

            # The silhouette's nearest body point to each mask sample is found at the step's first
            # evaluation and kept through its line search, as ICP keeps correspondences: the same
            # fit on the synthetic benchmark, a tenth less time (docs/motion.md).
            first = True

            def closure(evaluate: Evaluation = evaluate) -> torch.Tensor:
                nonlocal terms, evals, first
                loss, terms = evaluate(first)
                first = False
                evals += 1
                if progress is not None:  # every evaluation: a cancel lands within one
                    progress(min(evals / budget, 1.0))
                return loss

            loss_now = float(opt.step(closure).detach())  # type: ignore[union-attr]  # the loss at the step's start
            if tol > 0 and last - loss_now < tol * abs(loss_now):  # the previous step barely helped
                if it >= refresh:
                    break
                refresh = it + 1  # the second phase starts now, with what is left of the budget
            last = loss_now
        self.steps_run = it + 1 if outer else 0
        if progress is not None:
            progress(1.0)
        return {k: float(v.detach().sum()) / norm for k, v in terms.items()}

    def _evaluator(self, stage: str, cues: WorldCues | None, norm: float) -> Evaluation:
        """One evaluation of the ``stage`` loss (divided by ``norm``) and its gradients (into the
        parameters' ``.grad``); its argument says whether the silhouette's nearest body points are
        found anew.

        On CUDA (``cuda_graphs``) each variant is recorded once as a CUDA graph and then replayed:
        an evaluation launches some 1600 small kernels, and launching them from Python took ten
        times as long as the GPU took to run them (docs/motion.md, Time). The graph replays the same
        kernels on the same buffers: the parameters are changed in place by the optimiser, and the
        cues, masks and keypoints stay put while it runs."""
        leaves = [self.betas, self.d_rot, self.body_pose, self.transl, self.cam_delta]
        world = stage == "world"

        def evaluate(find_near: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            self.find_near = find_near
            for p in leaves:
                p.grad = None
            terms = self.loss_terms(stage, self.pose_bodies(surface=world), cues)
            loss = sum(terms.values()) / norm
            loss.backward()
            return loss, terms

        if not (self.cfg.cuda_graphs and self.device.type == "cuda"):
            return evaluate
        graphs: dict[bool, tuple[torch.cuda.CUDAGraph, torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor | None]]] = {}

        def replay(find_near: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if self._graphs_failed:
                return evaluate(find_near)
            key = find_near and self.labels is not None  # without masks there is nothing to find
            if key not in graphs:
                try:
                    graphs[key] = self._capture(evaluate, key, leaves)
                except Exception as e:  # out of GPU memory, or an operation a graph cannot hold
                    # the fit goes on kernel by kernel: slower, the same numbers
                    log.warning("could not record the %s stage's evaluation as a CUDA graph (%s: %s); "
                                "evaluating without graphs", stage, type(e).__name__, str(e).splitlines()[0] if str(e) else "")  # fmt: skip
                    self._graphs_failed = True
                    torch.cuda.synchronize(self.device)
                    return evaluate(find_near)
            graph, loss, terms, grads = graphs[key]
            graph.replay()
            for p, g in zip(leaves, grads):  # each graph wrote its own gradient buffers
                p.grad = g
            return loss.detach().clone(), terms  # (the next replay overwrites the recorded loss)

        return replay

    def _capture(
        self, evaluate: Evaluation, find_near: bool, leaves: list[torch.Tensor]
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor | None]]:
        """Record ``evaluate(find_near)`` as a CUDA graph (after two warm-up runs on a side stream,
        as CUDA graph capture requires); its loss, terms and gradients are the graph's buffers."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                evaluate(find_near)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, terms = evaluate(find_near)
        # kept detached: the recorded autograd graph is not needed again, and holding it would
        # keep its gradient accumulators, tied to this capture's stream, for the next capture
        return graph, loss.detach(), {k: v.detach() for k, v in terms.items()}, [p.grad for p in leaves]

    def loss_terms(self, stage: str, out: BodyOutput, cues: WorldCues | None) -> dict[str, torch.Tensor]:
        c = self.cfg
        if stage == "rigid":
            return {"keypoints": c.w_kp * self.keypoint_term(out, RIGID).sum()}
        if stage == "rigid_smooth":
            return {"keypoints": c.w_kp * self.keypoint_term(out, RIGID).sum(), "smooth": self.smooth_term(out).sum()}
        if stage == "limbs":  # frames independent (no temporal terms): hypotheses are chosen per frame
            return {"keypoints": c.w_kp * self.keypoint_term(out).sum(), "prior": self.prior_term().sum()}
        terms = {
            "keypoints": c.w_kp * self.keypoint_term(out).sum(),
            "prior": self.prior_term().sum(),
            "smooth": self.smooth_term(out).sum(),
        }
        if stage == "world":
            terms["floor"] = self.floor_terms(out, None if cues is None else cues.contact).sum()
            if cues is not None:
                terms["heading"] = self.heading_term(cues).sum()
            terms["people"] = self.people_term(out)
            terms["masks"] = self.mask_terms(out)
            terms["hold_ends"] = self.hold_ends_term().sum()
            terms["camera"] = c.w_cam_tilt * self.num_t * (self.cam_delta[:2] ** 2).sum()
        return terms

    def world_cues(self, out: BodyOutput) -> WorldCues:
        """What the world stage holds fixed while it optimises, read from the current fit (world
        frame, paths smoothed over a few frames so the fit's frame-to-frame noise does not read
        as motion):

        - contact [P, T, 6]: soft contact of each foot point: near the person's lowest foot point,
          near the floor, and slow;
        - travel [P, T, 3]: the horizontal direction the pelvis travels in, and travel_weight
          [P, T] in [0, 1]: 0 below ``heading_speed`` / 2, 1 above ``heading_speed`` (m/s), times
          how sure the direction is (``slope_precision``: a few frames from the clip's ends, it is
          read from one side only)."""
        c = self.cfg
        fps = self.obs.fps
        feet = out.feet.detach()  # [P,T,6,3]
        if self.num_t < 3:
            zero = torch.zeros(self.num_p, self.num_t, device=self.device)
            return WorldCues(torch.zeros(feet.shape[:3], device=self.device), torch.zeros(*zero.shape, 3, device=self.device), zero)
        horizontal = torch.tensor([1.0, 0.0, 1.0], device=self.device)
        speed = torch.linalg.vector_norm(time_slope(feet, 1.5) * horizontal, dim=-1) * fps  # [P,T,6]
        y = feet[..., 1] - self.level[:, None, None]  # above the person's level
        above_lowest = y - y.min(-1, keepdim=True).values
        lowest = torch.exp(-((above_lowest / c.contact_height) ** 2))  # near the person's lowest foot point
        near = lowest * torch.sigmoid((2 * c.contact_height - y) / 0.02)  # and near the floor
        slow = torch.exp(-((speed / c.contact_speed) ** 2))
        if c.contact_still > 0:
            # the image sees a planted foot as an ankle keypoint that moves only with the camera:
            # steadier than the fit's own foot speed, whose depth wanders from frame to frame
            tracks = self.obs.keypoints[:, :, [15, 16]]  # ankles, then (with the feet) heels and big toes
            fitted = out.coco[:, :, 15:17].detach().cpu().numpy().astype(np.float64)
            if self.has_feet:
                assert self.obs.foot_keypoints is not None
                tracks = np.concatenate([tracks, self.obs.foot_keypoints], axis=2)
                fitted = np.concatenate([fitted, out.foot_keypoints.detach().cpu().numpy().astype(np.float64)], axis=2)
            w2c = self.w2c.detach().cpu().numpy().astype(np.float64)
            scale = person_scale(self.obs.keypoints, c.min_confidence)
            still, seen = still_points(tracks, scale, c.min_confidence, c.contact_still, fitted, self.obs.K, w2c)
            side = [0, 0, 0, 1, 1, 1]  # FOOT_VERTICES (left toes and heel, then right): their ankle
            if self.has_feet:
                # a heel or big toe keypoint says which part of the foot stands: a foot rolling over
                # its toes (heel rising, ankle moving) keeps its toes planted and lifts its heel
                own = [3, 3, 2, 5, 5, 4]  # FOOT_VERTICES: their own part's track (2 + FOOT_NAMES' index)
                still = np.where(seen[:, :, own], still[:, :, own], still[:, :, side])
                seen = seen[:, :, own] | seen[:, :, side]
            else:
                still, seen = still[:, :, side], seen[:, :, side]
            told = torch.as_tensor(seen, device=self.device)
            slow = torch.where(told, torch.as_tensor(still, dtype=slow.dtype, device=self.device), slow)
            # where the image says planted, the foot is down whatever the fit's height says
            near = torch.where(told, lowest, near)
        contact = near * slow
        v = time_slope(out.joints[:, :, 0].detach(), TRAVEL_SIGMA) * horizontal * fps  # [P,T,3] pelvis velocity
        vn = torch.linalg.vector_norm(v, dim=-1)
        travel = v / vn[..., None].clamp(min=1e-6)
        weight = ((vn - 0.5 * c.heading_speed) / (0.5 * c.heading_speed)).clamp(0.0, 1.0)
        # near the clip's ends the path's slope is fitted from one side and is several times
        # noisier (a depth drift there reads as travel): the cue counts by how sure it is
        return WorldCues(contact, travel, weight * self.slope_sure)

    def frame_costs(self) -> np.ndarray:
        """[P, T] keypoint and pose-prior cost of each person and frame (no gradients)."""
        c = self.cfg
        with torch.no_grad():
            kp = self.keypoint_term(self.pose_bodies(surface=False))
            return (c.w_kp * kp + self.pose_prior_terms().sum(-1)).cpu().numpy()

    def rigid_frame_costs(self) -> np.ndarray:
        """[P, T] what the rigid start chooses its hypotheses by (no gradients): the normalised
        keypoint loss of the face and torso plus the cost of contradicting what the detector did
        not see.

        A body turned away from the camera hides the far ear, eye, shoulder or hip. With few
        keypoints (a back or three-quarter view without the face) the seen ones fit a body turned
        either way about the viewing direction equally well; the side the detector missed says which.
        Every pair of ``SIDE_PAIRS`` with one point seen and the other not costs up to ``W_SIDE``
        where the state puts the seen point clearly behind the missing one (a sigmoid of their
        depth difference, half at ``SIDE_BEHIND``, over ``SIDE_DEPTH``). A pair about level (a
        frontal view, where a miss is the detector's noise) costs nothing, so the cue only
        separates a body from its turned-around twin."""
        with torch.no_grad():
            out = self.pose_bodies(surface=False)
            z = self.to_camera(out.coco)[..., 2]  # [P,T,17]
            seen = self.kp_w > 0
            side = torch.zeros(self.num_p, self.num_t, device=self.device)
            for a, b in SIDE_PAIRS:
                for near, far in ((a, b), (b, a)):
                    only = (seen[..., near] & ~seen[..., far]).float()
                    side = side + only * torch.sigmoid((z[..., near] - z[..., far] - SIDE_BEHIND) / SIDE_DEPTH)
            return (self.keypoint_term(out, RIGID) + W_SIDE * side).cpu().numpy()

    def state(self) -> FitState:
        with torch.no_grad():
            return FitState(
                betas=self.betas.detach().cpu().numpy().astype(np.float64),
                global_rot=self.global_rot().cpu().numpy().astype(np.float64),
                body_pose=self.body_pose.detach().cpu().numpy().astype(np.float64),
                transl=self.transl.detach().cpu().numpy().astype(np.float64),
                world_to_cam=self.w2c.detach().cpu().numpy().astype(np.float64),
            )


@dataclass
class WorldCues:
    """Held fixed during an optimisation run of the world stage (``Fitter.world_cues``)."""

    contact: torch.Tensor  # [P, T, 6] soft contact of the foot points (body.FOOT_VERTICES)
    travel: torch.Tensor  # [P, T, 3] unit horizontal direction of travel of the pelvis
    travel_weight: torch.Tensor  # [P, T] how much the direction of travel counts (0 when standing)


def still_points(
    tracks: np.ndarray,
    scale: np.ndarray,
    min_conf: float,
    still: float,
    fitted: np.ndarray | None = None,
    K: np.ndarray | None = None,
    world_to_cam: np.ndarray | None = None,
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """How still in the world each tracked point is, read from its keypoints [P, T, N, 3] (x, y,
    confidence) -> weight [P, T, N] in [0, 1] and seen [P, T, N] (the keypoint was seen at t and
    over most of the frames around it; elsewhere the weight says nothing). ``scale`` [P, T] is
    the person's size in pixels.

    A point planted on the floor stays put in the world, so its keypoint moves in the image only
    as far as the camera's motion moves a fixed point. With ``fitted`` [P, T, N, 3] (the fit's
    points, world frame) and the cameras (``K`` [T, 3, 3], ``world_to_cam`` [T, 4, 4]), the
    keypoints of the frames around t are compared with where frame t's fitted point would appear
    in them if it stayed put; without them (a static camera) with each other. The drift of that
    difference (a Gaussian-weighted straight-line fit over about ``sigma`` frames, as a share of
    the person's size in pixels per frame) gives the weight: 1 well below ``still``, 0 at a few
    ``still``."""
    num_p, num_t, num_n = tracks.shape[:3]
    pts = tracks.astype(np.float64)
    seen = pts[..., 2] >= min_conf  # [P,T,N]
    r = min(int(math.ceil(2.5 * sigma)), num_t - 1)
    frames = np.arange(num_t)
    s0, s1, s2, full = (np.zeros((num_p, num_t, num_n)) for _ in range(4))
    sx, skx = np.zeros((num_p, num_t, num_n, 2)), np.zeros((num_p, num_t, num_n, 2))
    for k in range(-r, r + 1):
        src = frames + k
        inside = (src >= 0) & (src < num_t)
        src = src.clip(0, num_t - 1)
        g = math.exp(-0.5 * (k / sigma) ** 2) * inside[None, :, None]
        w = g * seen[:, src]
        x = pts[:, src, :, :2]  # [P,T,N,2] the keypoints of frame t+k
        if fitted is not None and K is not None and world_to_cam is not None:
            cam = np.einsum("tab,ptsb->ptsa", world_to_cam[src, :3, :3], fitted) + world_to_cam[src][None, :, None, :3, 3]
            uvw = np.einsum("tab,ptsb->ptsa", K[src], cam)
            x = x - uvw[..., :2] / np.maximum(uvw[..., 2:], 1e-6)  # minus where frame t's point appears then
        full += np.broadcast_to(g, full.shape)
        s0 += w
        s1 += w * k
        s2 += w * k * k
        sx += w[..., None] * x
        skx += (w * k)[..., None] * x
    den = np.maximum(s0 * s2 - s1 * s1, 1e-9)[..., None]
    slope = (s0[..., None] * skx - s1[..., None] * sx) / den  # [P,T,N,2] px per frame
    speed = np.linalg.norm(slope, axis=-1) / scale[..., None]
    return np.exp(-((speed / still) ** 2)), seen & (s0 > 0.5 * full)


def _slope_window(sigma: float, num_t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame offsets and Gaussian weights of ``time_slope``'s local straight-line fit."""
    r = min(int(math.ceil(2.5 * sigma)), num_t - 1)
    k = np.arange(-r, r + 1)
    return k, np.exp(-0.5 * (k / sigma) ** 2)


def facing(rot: torch.Tensor) -> torch.Tensor:
    """[..., 3] the horizontal unit direction a body faces (its +z) from root rotations [..., 3, 3]."""
    f = torch.stack([rot[..., 0, 2], torch.zeros_like(rot[..., 1, 2]), rot[..., 2, 2]], -1)
    return f / torch.linalg.vector_norm(f, dim=-1, keepdim=True).clamp(min=1e-6)


def time_slope(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Rate of change per frame of [P, T, ...] along T: a local straight-line fit with Gaussian
    weights (``sigma`` frames), one-sided at the ends (so a steady motion keeps its speed there)."""
    num_t = x.shape[1]
    sums = [torch.zeros_like(x) for _ in range(5)]  # S0, S1, S2, Sx, Skx
    idx = torch.arange(num_t, device=x.device)
    shape = (1, num_t) + (1,) * (x.dim() - 2)
    offsets, weights = _slope_window(sigma, num_t)
    for k, g in zip(offsets.tolist(), weights.tolist()):
        src = (idx + k).clamp(0, num_t - 1)
        valid = ((idx + k >= 0) & (idx + k < num_t)).to(x.dtype).reshape(shape)
        w = g * valid
        xk = x[:, src]
        for i, term in enumerate((w, w * k, w * k * k, w * xk, w * k * xk)):
            sums[i] = sums[i] + term
    s0, s1, s2, sx, skx = sums
    return (s0 * skx - s1 * sx) / (s0 * s2 - s1 * s1).clamp(min=1e-9)


def slope_precision(num_t: int, sigma: float) -> np.ndarray:
    """[T] how sure ``time_slope`` is at each frame, against a frame whose window lies inside the
    clip: the inverse of the slope's variance under independent noise, relative. 1 away from the
    ends; about 0.15 on the first and last frame for ``sigma`` = 4, where the fit is one-sided."""
    k, g = _slope_window(sigma, max(num_t, 2))

    def variance(inside: np.ndarray) -> float:
        kk, w = k[inside], g[inside]
        d = kk - (w * kk).sum() / w.sum()
        return float((w**2 * d**2).sum() / max(float((w * d**2).sum()) ** 2, 1e-12))

    full = variance(np.ones(len(k), bool))
    return np.array([min(full / max(variance((t + k >= 0) & (t + k < num_t)), 1e-12), 1.0) for t in range(num_t)])


# Spheres that fill a body roughly, at joints and bone midpoints:
# (joint a, joint b, fraction from a to b, radius in metres)
SPHERES = (
    (0, 0, 0, 0.12), (3, 3, 0, 0.12), (6, 6, 0, 0.12), (9, 9, 0, 0.12), (15, 15, 0, 0.1), (12, 12, 0, 0.06),
    (1, 4, 0.5, 0.08), (2, 5, 0.5, 0.08), (4, 4, 0, 0.06), (5, 5, 0, 0.06), (4, 7, 0.5, 0.06), (5, 8, 0.5, 0.06),
    (16, 18, 0.5, 0.05), (17, 19, 0.5, 0.05), (18, 18, 0, 0.045), (19, 19, 0, 0.045),
    (18, 20, 0.5, 0.04), (19, 21, 0.5, 0.04), (20, 20, 0, 0.04), (21, 21, 0, 0.04),
)  # fmt: skip


def body_spheres(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spheres that fill a body roughly (``SPHERES``).

    Args:
        joints: [P, T, 55, 3].

    Returns:
        centres [P, T, S, 3], radii [S] (metres).
    """
    a, b, f, r = zip(*SPHERES)
    dev, dt = joints.device, joints.dtype
    a, b, f, radii = on_device(a, dev), on_device(b, dev), on_device(f, dev, dt)[:, None], on_device(r, dev, dt)
    return joints[..., a, :] * (1 - f) + joints[..., b, :] * f, radii
