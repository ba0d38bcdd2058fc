"""The whole fit of a clip: rigid start, full pose, floor, world frame, joint refinement.

``fit_motion`` is the one entry point the stage, the benchmarks and the tests call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import bundle
from .body import SparseBody
from .fit import (
    NECK,
    PELVIS,
    FitConfig,
    FitState,
    Fitter,
    Observations,
    facing_rotation,
    init_translation,
    person_scale,
    relaxed_pose,
    rigid_transform_bodies,
    rotation_angle,
    viterbi,
    yaw_rotation,
)

log = logging.getLogger("troupe.motion")

YAWS = tuple(np.arange(8) * np.pi / 4)  # starting headings of the rigid start (0 = facing the camera)
# How hard the floor normal is held to the people's mean up direction (m^2, against the spread of the
# foot points): a few people on a few metres of floor do not pin a plane's tilt on their own.
UP_PULL = 0.3
# People stand on different levels (a rooftop, a stage) where their feet are more than this many
# metres apart in height, plus LEVEL_SLOPE (tan 10 degrees) times their distance across the floor.
LEVEL_STEP = 0.4
LEVEL_SLOPE = 0.18


@dataclass
class Ground:
    """The floor plane in the fitting frame: points x with ``normal . x + offset = 0``."""

    normal: np.ndarray  # [3], unit, pointing up (from the feet to the head)
    offset: float
    residual: float  # robust spread (m) of the foot points about the plane
    # [P] height (m) above this floor of the level each person stands on: 0 for the floor, more (or
    # less) for a person on a rooftop, a stage or a box whom the others' floor cannot hold (``floor_levels``)
    levels: np.ndarray

    def off_floor(self, ids: list[str]) -> dict[str, float]:
        """The people (by id) standing on another level than the floor, and its height (m)."""
        return {pid: float(h) for pid, h in zip(ids, self.levels) if h != 0}


@dataclass
class MotionResult:
    state: FitState  # in the world frame (+Y up, floor y = 0)
    ground: Ground  # the floor as found in the fitting (camera) frame; residual = final floor spread
    reprojection_px: np.ndarray  # [P, T] mean keypoint error in pixels (NaN where not seen)
    foot_reprojection_px: np.ndarray | None = None  # [P, T] the same over the foot keypoints, where the detector gave them
    guard: WorldGuard | None = None  # set where the world stage carried people off their keypoints


@dataclass
class WorldGuard:
    """People the world stage carried off their keypoints and what refitting them did: mean
    reprojection errors as shares of each person's size."""

    people: np.ndarray  # [N] person indices
    camera_frame: np.ndarray  # [N] after the camera-frame fit (or the given world start)
    world: np.ndarray  # [N] after the world stage
    retry: np.ndarray  # [N] after the world stage again with their keypoints weighted more
    kept: str  # "retry" or "first"


def rest_points(body: SparseBody, num_betas: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean-shape rest joints [55, 3] and COCO-17 points [17, 3]."""
    with torch.no_grad():
        dev = body.j_template.device
        z = torch.zeros(1, num_betas, device=dev)
        out = body(z, torch.eye(3, device=dev)[None], torch.zeros(1, 63, device=dev), torch.zeros(1, 3, device=dev))
    return out.joints[0].cpu().numpy(), out.coco[0].cpu().numpy()


def posed_points(body: SparseBody, state: FitState, device: str) -> dict[str, np.ndarray]:
    """A state's bodies without their surface samples (numpy, [P, T, N, 3] each): ``joints``
    (55), ``feet`` (the 6 sole points), ``coco`` (COCO-17) and ``foot_keypoints`` (4)."""
    p, t = state.transl.shape[:2]
    f32 = dict(dtype=torch.float32, device=device)
    with torch.no_grad():
        betas = torch.as_tensor(state.betas, **f32)[:, None].expand(p, t, -1).reshape(p * t, -1)
        out = body(
            betas,
            torch.as_tensor(state.global_rot, **f32).reshape(-1, 3, 3),
            torch.as_tensor(state.body_pose, **f32).reshape(-1, 63),
            torch.as_tensor(state.transl, **f32).reshape(-1, 3),
            surface=False,
        )
    parts = {"joints": out.joints, "feet": out.feet, "coco": out.coco, "foot_keypoints": out.foot_keypoints}
    return {k: x.cpu().numpy().astype(np.float64).reshape(p, t, *x.shape[1:]) for k, x in parts.items()}


def body_points(body: SparseBody, state: FitState, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints [P,T,55,3], feet [P,T,6,3] and COCO [P,T,17,3] of a state (numpy)."""
    pts = posed_points(body, state, device)
    return pts["joints"], pts["feet"], pts["coco"]


def lowest_points(feet: np.ndarray, up: np.ndarray) -> np.ndarray:
    """[..., 6, 3] foot points -> [..., 3] the lowest along ``up``."""
    idx = np.argmin(feet @ up, axis=-1)[..., None, None]
    return np.take_along_axis(feet, np.broadcast_to(idx, (*idx.shape[:-2], 1, 3)), axis=-2)[..., 0, :]


def estimate_ground(joints: np.ndarray, feet: np.ndarray, weight: np.ndarray) -> Ground:
    """Floor plane from the lowest foot point of every person and frame.

    The plane's normal is pulled toward the people's mean up direction (pelvis to neck), so a
    clip where feet points span no area (one person in place) still gets a sensible floor.

    Args:
        joints: [P, T, 55, 3]; feet: [P, T, 6, 3]; weight: [P, T] how much each frame counts.
    """
    w = weight.reshape(-1).astype(np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    up = (joints[:, :, NECK] - joints[:, :, PELVIS]).reshape(-1, 3)
    up = (up * w[:, None]).sum(0)
    up /= np.linalg.norm(up) + 1e-12
    low_pt = lowest_points(feet, up)  # [P, T, 3] lowest foot point per person and frame
    main = floor_levels(low_pt, weight, up) == 0
    if main.any() and not main.all():  # the floor is the main level's; the others stand on levels of their own
        w = (weight * main[:, None]).reshape(-1).astype(np.float64)
    low = low_pt.reshape(-1, 3)
    n = up.copy()
    rw = w.copy()
    for _ in range(10):
        c = (low * rw[:, None]).sum(0) / rw.sum()
        d = low - c
        cov = (d * rw[:, None]).T @ d / rw.sum()
        n = np.linalg.solve(cov + UP_PULL * np.eye(3), up)
        n /= np.linalg.norm(n)
        r = low @ n - np.median(low @ n)
        rw = w / (1.0 + (r / 0.05) ** 2)
    heights = low @ n
    offset = -float(np.average(heights, weights=rw))
    resid = float(np.sqrt(np.average((heights + offset) ** 2, weights=w)))
    levels = np.zeros(feet.shape[0])
    for p in np.flatnonzero(~main):  # each other level's height above the floor
        seen = weight[p] > 0
        levels[p] = float(np.median(low_pt[p][seen] @ n)) + offset if seen.any() else 0.0
    return Ground(normal=n, offset=offset, residual=resid, levels=levels)


def floor_levels(low: np.ndarray, weight: np.ndarray, up: np.ndarray) -> np.ndarray:
    """[P] which level each person stands on: 0 = the floor, 1, 2, ... = others, such as a
    rooftop, a stage or a box. The floor is the lowest level seen at least a third as often
    (person-frames) as the most seen one: the ground is what people most often stand above, but
    one person seen a few times below a crowd does not move the crowd's floor.

    From the lowest foot points ``low`` [P, T, 3] and the people's mean ``up``: two people share a
    level where their median feet heights along ``up`` differ by less than ``LEVEL_STEP`` plus the
    slope of ``LEVEL_SLOPE`` over the distance between them (the fitted bodies' up direction is a
    few degrees off, and one person's size error shifts their feet along the viewing rays by a
    few tenths of a metre). A level holds people who all share it pairwise (no chaining through
    someone in between)."""
    num_p = low.shape[0]
    seen = weight > 0
    height = np.zeros(num_p)
    where = np.zeros((num_p, 3))
    for p in range(num_p):
        if seen[p].any():
            height[p] = float(np.median(low[p][seen[p]] @ up))
            where[p] = np.median(low[p][seen[p]], axis=0)
    flat = where - (where @ up)[:, None] * up  # positions across the floor
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    same = np.abs(height[:, None] - height[None]) <= LEVEL_STEP + LEVEL_SLOPE * dist
    frames = seen.sum(-1)
    group = -np.ones(num_p, np.int64)
    for p in np.argsort(-frames, kind="stable"):  # the most seen first; a level takes whom all its people agree with
        for g in np.unique(group[group >= 0]):
            if same[p, group == g].all():
                group[p] = g
                break
        else:
            group[p] = p
    ids = np.unique(group)
    seen_g = np.array([frames[group == g].sum() for g in ids])
    low_g = np.array([height[group == g].mean() for g in ids])
    main = ids[np.argmin(np.where(seen_g * 3 >= seen_g.max(), low_g, np.inf))]
    order = [main] + [g for g in ids[np.argsort(-seen_g, kind="stable")] if g != main]
    return np.array([order.index(g) for g in group], np.int64)


def world_from_ground(ground: Ground, centre: np.ndarray, forward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` (rows = world axes in fitting-frame coordinates) and origin ``o`` of the
    world frame: +Y = floor normal, origin = ``centre`` dropped onto the floor, and the camera's
    ``forward`` direction seen along world -Z (the view a Blender user expects)."""
    y = ground.normal
    z = -(forward - (forward @ y) * y)
    if np.linalg.norm(z) < 1e-6:  # camera looking straight down
        z = np.cross(np.array([1.0, 0, 0]), y)
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    rot = np.stack([x, y, z])
    origin = centre - (centre @ y + ground.offset) * y
    return rot, origin


def to_world(state: FitState, rest_pelvis: np.ndarray, rot: np.ndarray, origin: np.ndarray) -> FitState:
    """Re-express a state (bodies and cameras) in the frame x_w = rot (x - origin)."""
    new_rot, new_t = rigid_transform_bodies(rest_pelvis, state.global_rot, state.transl, rot, -rot @ origin)
    w2f = np.eye(4)
    w2f[:3, :3] = rot.T
    w2f[:3, 3] = origin
    return replace(state, global_rot=new_rot, transl=new_t, world_to_cam=state.world_to_cam @ w2f)


def hypotheses(obs: Observations, num_h: int) -> Observations:
    """``obs`` with its people repeated ``num_h`` times (one copy per start hypothesis), no masks."""
    feet = obs.foot_keypoints
    return replace(obs, keypoints=np.tile(obs.keypoints, (num_h, 1, 1, 1)), labels=None,
                   foot_keypoints=None if feet is None else np.tile(feet, (num_h, 1, 1, 1)))  # fmt: skip


def observed_weight(keypoints: np.ndarray, min_conf: float) -> np.ndarray:
    """[P, T] share of confident keypoints per frame."""
    return (keypoints[..., 2] >= min_conf).mean(-1)


def drop_depth_outliers(transl: np.ndarray, window: int = 9, tol: float = 0.15) -> np.ndarray:
    """[T, 3] camera-frame translations of one person: frames whose depth strays more than
    ``tol`` (relative) from the running median are replaced by interpolating their neighbours
    (a per-frame rigid fit that ran off, e.g. to a far-away minimum)."""
    from scipy.ndimage import median_filter

    z = transl[:, 2]
    med = median_filter(z, size=min(window, len(z)), mode="nearest")
    bad = np.abs(z - med) > tol * np.abs(med)
    if not bad.any() or bad.all():
        return transl
    out = transl.copy()
    idx = np.arange(len(z))
    for c in range(3):
        out[bad, c] = np.interp(idx[bad], idx[~bad], transl[~bad, c])
    return out


def rigid_start(
    body: SparseBody,
    obs: Observations,
    cfg: FitConfig,
    num_betas: int,
    progress: Callable[[float], None] | None = None,
) -> FitState:
    """Root rotation and translation per person and frame (camera frame), ``YAWS`` hypotheses
    optimised at once and chosen by a Viterbi pass over frames on their keypoint and hidden-side
    costs (``Fitter.rigid_frame_costs``)."""
    num_p, num_t = obs.num_people, obs.num_frames
    num_h = len(YAWS)
    rest_j, rest_coco = rest_points(body, num_betas)
    pelvis = init_translation(obs.keypoints, obs.K, rest_j, rest_coco, cfg.min_confidence)  # [P,T,3]
    rots = np.stack([np.broadcast_to(facing_rotation(y), (num_p, num_t, 3, 3)) for y in YAWS])  # [H,P,T,3,3]
    hyp_obs = hypotheses(obs, num_h)
    init = FitState(
        betas=np.zeros((num_h * num_p, num_betas)),
        global_rot=rots.reshape(num_h * num_p, num_t, 3, 3),
        body_pose=np.broadcast_to(relaxed_pose(), (num_h * num_p, num_t, 63)).copy(),
        transl=np.tile(pelvis - rest_j[0], (num_h, 1, 1)),
        world_to_cam=obs.world_to_cam,
    )
    fitter = Fitter(body, hyp_obs, cfg, init)
    fitter.run("rigid", cfg.iters_rigid, [fitter.d_rot, fitter.transl], progress)
    err = fitter.rigid_frame_costs().reshape(num_h, num_p, num_t)
    st = fitter.state()
    rot = st.global_rot.reshape(num_h, num_p, num_t, 3, 3)
    tr = st.transl.reshape(num_h, num_p, num_t, 3)
    out_rot = np.empty((num_p, num_t, 3, 3))
    out_tr = np.empty((num_p, num_t, 3))
    for p in range(num_p):
        cost = err[:, p].T  # [T,H]
        if num_t > 1:
            a = rot[:, p, :-1].transpose(1, 0, 2, 3)[:, :, None]  # [T-1,H,1,3,3]
            b = rot[:, p, 1:].transpose(1, 0, 2, 3)[:, None]  # [T-1,1,H,3,3]
            ang = rotation_angle(a, b)
            jump = np.linalg.norm(tr[:, p, :-1].transpose(1, 0, 2)[:, :, None] - tr[:, p, 1:].transpose(1, 0, 2)[:, None], axis=-1)
            # [T-1,H,H]: radians of turn and metres of jump between frames cost like keypoint error
            switch = 0.5 * ang + 2.0 * np.maximum(jump - 0.1, 0.0)
        else:
            switch = np.zeros((0, num_h, num_h))
        states = viterbi(cost, switch)
        out_rot[p] = rot[states, p, np.arange(num_t)]
        out_tr[p] = drop_depth_outliers(tr[states, p, np.arange(num_t)])
    state = FitState(
        betas=np.zeros((num_p, num_betas)),
        global_rot=out_rot,
        body_pose=np.broadcast_to(relaxed_pose(), (num_p, num_t, 63)).copy(),
        transl=out_tr,
        world_to_cam=obs.world_to_cam,
    )
    if num_t < 3:
        return state
    # the chosen roots again, over time: turning and moving smoothly averages the per-frame noise
    fitter = Fitter(body, replace(obs, labels=None), cfg, state)
    fitter.run("rigid_smooth", cfg.iters_rigid, [fitter.d_rot, fitter.transl])
    return fitter.state()


# Limbs whose depth a monocular view leaves two-fold (a knee toward or away from the camera):
# the body joints that move them (SMPL-X joint indices) and the COCO-17 keypoints they carry.
# (joints that move the limb, joints at its knee/elbow and ankle/wrist, COCO-17 keypoints there)
LIMBS: tuple[tuple[tuple[int, int], tuple[int, int], tuple[int, int]], ...] = (
    ((1, 4), (4, 7), (13, 15)),  # left leg: hip, knee
    ((2, 5), (5, 8), (14, 16)),  # right leg
    ((16, 18), (18, 20), (7, 9)),  # left arm: shoulder, elbow
    ((17, 19), (19, 21), (8, 10)),  # right arm
)
NOISE_FRAC = 0.02  # keypoint noise as a share of the person's size: the unit of the limb costs below
LIMB_STEP = 0.08  # m a limb's joints may move between frames (relative to the pelvis) for free
LIMB_JUMP = 0.05  # m beyond that which costs as much as one keypoint off by NOISE_FRAC


def limb_patterns() -> np.ndarray:
    """[H, 63] body poses to start the limbs from: legs straight / thigh forward and knee bent /
    thigh back / high knee; arms down / forward with the elbow bent / back / out. Each hypothesis
    starts both sides the same way (mirrored); every limb then picks its own."""
    from scipy.spatial.transform import Rotation as R

    def rv(axis: str, a: float) -> R:
        return R.from_euler(axis, a)

    legs = [(rv("x", 0.0), 0.15), (rv("x", -0.7), 1.0), (rv("x", 0.35), 0.6), (rv("x", -1.5), 1.8)]
    down = rv("z", -1.2)
    arms = [(down, 0.2), (rv("x", -0.9) * down, 1.3), (rv("x", 0.6) * down, 0.5), (rv("z", 0.3), 1.3)]
    out = np.zeros((len(legs), 21, 3))
    mirror = np.array([1.0, -1.0, -1.0])  # left -> right: x stays, y and z change sign
    for h, ((hip, knee), (shoulder, elbow)) in enumerate(zip(legs, arms)):
        for joint, vec in ((1, hip.as_rotvec()), (4, [knee, 0, 0]), (16, shoulder.as_rotvec()), (18, [0, -elbow, 0])):
            out[h, joint - 1] = vec
            out[h, joint] = np.asarray(vec) * mirror  # the right joint follows its left one in SMPL-X order
    return out.reshape(len(legs), 63)


def limb_start(
    body: SparseBody,
    obs: Observations,
    cfg: FitConfig,
    state: FitState,
    progress: Callable[[float], None] | None = None,
) -> FitState:
    """Body pose per person and frame: every limb from several starting poses with the root held
    (so limbs are independent), each limb's start chosen per frame by its keypoint fit, joint limits
    and continuity (a Viterbi pass: a knee does not jump from in front of the hip to behind it)."""
    num_p, num_t = obs.num_people, obs.num_frames
    patterns = limb_patterns()
    num_h = len(patterns)
    hyp_obs = hypotheses(obs, num_h)
    init = FitState(
        betas=np.tile(state.betas, (num_h, 1)),
        global_rot=np.tile(state.global_rot, (num_h, 1, 1, 1)),
        body_pose=np.broadcast_to(patterns[:, None, None], (num_h, num_p, num_t, 63)).reshape(num_h * num_p, num_t, 63).copy(),
        transl=np.tile(state.transl, (num_h, 1, 1)),
        world_to_cam=obs.world_to_cam,
    )
    fitter = Fitter(body, hyp_obs, cfg, init)
    mask = torch.zeros(21, 3, device=fitter.device)
    mask[[j - 1 for moving, _, _ in LIMBS for j in moving]] = 1.0
    fitter.body_pose.register_hook(lambda g: g * mask.reshape(63))
    fitter.run("limbs", cfg.iters_limbs, [fitter.body_pose], progress)
    with torch.no_grad():
        out = fitter.pose_bodies(surface=False)
        kp = fitter.keypoint_residuals(out).cpu().numpy().reshape(num_h, num_p, num_t, -1)
        lim = fitter.pose_prior_terms().cpu().numpy().reshape(num_h, num_p, num_t, 21)
        joints = out.joints.cpu().numpy().reshape(num_h, num_p, num_t, 55, 3)
    rel = joints - joints[..., :1, :]  # relative to the pelvis
    body_pose = state.body_pose.copy().reshape(num_p, num_t, 21, 3)
    chosen = fitter.body_pose.detach().cpu().numpy().reshape(num_h, num_p, num_t, 21, 3)
    for moving, ends, kp_ids in LIMBS:
        cost = (kp[..., list(kp_ids)].sum(-1) + lim[..., [j - 1 for j in moving]].sum(-1)) / NOISE_FRAC**2  # [H,P,T]
        pts = rel[..., list(ends), :]  # [H,P,T,2,3]
        for p in range(num_p):
            if num_t > 1:
                a = pts[:, p, :-1].transpose(1, 0, 2, 3)[:, :, None]  # [T-1,H,1,2,3]
                b = pts[:, p, 1:].transpose(1, 0, 2, 3)[:, None]  # [T-1,1,H,2,3]
                move = np.linalg.norm(a - b, axis=-1).mean(-1)  # [T-1,H,H]
                switch = (np.maximum(move - LIMB_STEP, 0.0) / LIMB_JUMP) ** 2
            else:
                switch = np.zeros((0, num_h, num_h))
            states = viterbi(cost[:, p].T, switch)
            for j in moving:
                body_pose[p, :, j - 1] = chosen[states, p, np.arange(num_t), j - 1]
    return replace(state, body_pose=body_pose.reshape(num_p, num_t, 63))


HEADING_OFFSETS = (-0.7, -0.35, 0.35, 0.7)  # radians: turns about the body's own vertical tried by start_poses
HEADING_CHUNK = 15  # frames that take one heading together


def start_poses(
    body: SparseBody,
    obs: Observations,
    cfg: FitConfig,
    state: FitState,
    progress: Callable[[float], None] | None = None,
) -> FitState:
    """Heading and limbs to start the full fit from. The rigid start's heading is only as good as
    the torso and face keypoints say (a three-quarter view leaves it tens of degrees open, and the
    legs then settle in the wrong depth branch to match). So the rigid roots and copies turned
    about each body's own vertical by ``HEADING_OFFSETS`` each get their limbs started
    (``limb_start``) and a short full-body refinement; then every stretch of ``HEADING_CHUNK``
    frames of every person keeps the copy whose keypoint and pose-prior cost is lowest there."""
    num_p, num_t = obs.num_people, obs.num_frames
    turns = [0.0, *HEADING_OFFSETS]
    num_h = len(turns)
    hyp_obs = hypotheses(obs, num_h)
    tiled = FitState(
        betas=np.tile(state.betas, (num_h, 1)),
        global_rot=np.concatenate([state.global_rot @ yaw_rotation(a) for a in turns]),
        body_pose=np.tile(state.body_pose, (num_h, 1, 1)),
        transl=np.tile(state.transl, (num_h, 1, 1)),
        world_to_cam=obs.world_to_cam,
    )

    def part(a: float, b: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress(a + (b - a) * f))

    tiled = limb_start(body, hyp_obs, cfg, tiled, part(0.0, 0.4))
    if cfg.iters_heading > 0:
        fitter = Fitter(body, hyp_obs, cfg, tiled)
        fitter.run("pose", cfg.iters_heading, [fitter.d_rot, fitter.body_pose, fitter.transl], part(0.4, 1.0))
        tiled = fitter.state()
        cost = fitter.frame_costs().reshape(num_h, num_p, num_t)
    else:
        cost = np.zeros((num_h, num_p, num_t))
        cost[1:] = np.inf
    pick = lambda x: x.reshape(num_h, num_p, *x.shape[1:])  # noqa: E731
    rot, pose, tr = pick(tiled.global_rot), pick(tiled.body_pose), pick(tiled.transl)
    out = replace(state, global_rot=rot[0].copy(), body_pose=pose[0].copy(), transl=tr[0].copy())
    for p in range(num_p):
        for t0 in range(0, num_t, HEADING_CHUNK):
            sl = slice(t0, min(num_t, t0 + HEADING_CHUNK))
            c = cost[:, p, sl].sum(-1)
            best = int(np.argmin(c))
            if best > 0 and c[best] < 0.98 * c[0]:
                out.global_rot[p, sl], out.body_pose[p, sl], out.transl[p, sl] = rot[best, p, sl], pose[best, p, sl], tr[best, p, sl]
                log.debug("start: person %d, frames %d-%d turned by %.0f deg", p, sl.start, sl.stop - 1, np.degrees(turns[best]))
    return out


def project_px(points: np.ndarray, K: np.ndarray, world_to_cam: np.ndarray) -> np.ndarray:
    """[P, T, N, 3] world points -> [P, T, N, 2] pixels through cameras ``K`` and
    ``world_to_cam`` ([T, 3, 3], [T, 4, 4])."""
    pc = np.einsum("tab,ptnb->ptna", world_to_cam[:, :3, :3], points) + world_to_cam[None, :, None, :3, 3]
    uvw = np.einsum("tab,ptnb->ptna", K, pc)
    return uvw[..., :2] / np.maximum(uvw[..., 2:3], 1e-6)


def mean_error_px(points: np.ndarray, keypoints: np.ndarray, K: np.ndarray, world_to_cam: np.ndarray, min_conf: float) -> np.ndarray:
    """[P, T] mean pixel error of posed ``points`` [P, T, N, 3] against ``keypoints`` [P, T, N, 3]
    over the confident ones (NaN where none)."""
    err = np.linalg.norm(project_px(points, K, world_to_cam) - keypoints[..., :2], axis=-1)
    vis = keypoints[..., 2] >= min_conf
    with np.errstate(invalid="ignore"):
        return np.where(vis.any(-1), (err * vis).sum(-1) / vis.sum(-1), np.nan)


def reprojection_px(body: SparseBody, state: FitState, obs: Observations, cfg: FitConfig) -> np.ndarray:
    """[P, T] mean pixel error over confident COCO-17 keypoints (NaN where none)."""
    _, _, coco = body_points(body, state, cfg.device)
    return mean_error_px(coco, obs.keypoints, obs.K, state.world_to_cam, cfg.min_confidence)


def snap_to_floor(state: FitState, rest_pelvis: np.ndarray, feet: np.ndarray, ground: Ground, weight: np.ndarray) -> FitState:
    """Slide each person along the camera rays (static camera frame) so that their feet meet the
    shared floor: one factor per person, the median over the frames they are seen in, kept
    within 0.75-1.33. The body keeps its size, so the world stage then trades the person's
    shape against the image: the floor shared by everyone outweighs one person's size prior."""
    n, d = ground.normal, ground.offset
    along = lowest_points(feet, n) @ n  # [P,T] n.x of the lowest foot point; on the floor it is -d
    levels = ground.levels
    transl = state.transl.copy()
    for p in range(feet.shape[0]):
        seen = (weight[p] > 0.3) & (np.abs(along[p]) > 1e-3)
        if not seen.any():
            continue
        s = float(np.clip(np.median((levels[p] - d) / along[p, seen]), 0.75, 1.33))  # onto their level
        transl[p] = s * (rest_pelvis[p] + transl[p]) - rest_pelvis[p]
    return replace(state, transl=transl)


def floor_scale(
    feet_cam: np.ndarray, weight: np.ndarray, cam_path: np.ndarray, points: np.ndarray | None, K: np.ndarray
) -> float | None:
    """Metric scale of an unscaled camera path from the people's feet and the reconstruction.

    Where a foot touches the floor, the floor around it is about as far from the camera as the
    foot. So for every person's lowest foot point of every frame, the median depth of the
    reconstructed background points that project within 6 % of the image width of it (the floor
    nearer and farther than the foot, about evenly) is the floor's depth there in path units; the
    fit gives the foot's depth in metres, and their ratio is the scale. The median over all of
    them is returned (None with too few). (A local plane through those points is worse: a slowly
    moving camera reconstructs them with most of their error along the viewing rays.)

    Args:
        feet_cam: [P, T, 6, 3] foot points in each frame's camera frame (metric, from the fit);
        weight: [P, T]; cam_path: [T, 4, 4] unscaled camera-to-scene; points: [N, 3] scene points;
        K: [T, 3, 3].
    """
    if points is None or len(points) < 30:
        return None
    ratios = []
    radius = 0.06 * 2 * K[0, 0, 2]
    for t in range(cam_path.shape[0]):
        seen = weight[:, t] > 0.3
        if not seen.any():
            continue
        rot, centre = cam_path[t, :3, :3], cam_path[t, :3, 3]
        pc = (points - centre) @ rot  # scene -> camera t (unscaled)
        pc = pc[pc[:, 2] > 1e-6]
        if len(pc) == 0:
            continue
        uv = pc @ K[t].T
        uv = uv[:, :2] / uv[:, 2:3]
        for p in np.flatnonzero(seen):
            foot = feet_cam[p, t, np.argmax(feet_cam[p, t, :, 1])]  # lowest in the image (camera y down)
            if foot[2] <= 0.1:
                continue
            fuv = (K[t] @ foot)[:2] / foot[2]
            near = pc[np.linalg.norm(uv - fuv, axis=1) < radius]
            if len(near) >= 5:
                ratios.append(foot[2] / np.median(near[:, 2]))
    if len(ratios) < 5:
        return None
    return float(np.median(ratios))


def path_scale(pelvis_cam: np.ndarray, weight: np.ndarray, cam_path: np.ndarray, lag: int = 5) -> float:
    """Metric scale of a camera path solved up to scale, from the people seen along it.

    People move smoothly in the world, so with the right scale ``s`` their world paths
    ``X_w(t) = R(t) X_c(t) + s c(t)`` have the least acceleration (taken over ``lag`` frames so
    the slow drift of the camera counts, not the fit's frame-to-frame noise). This is linear in
    ``s``: the least-squares solution is closed form.

    Args:
        pelvis_cam: [P, T, 3] pelvis positions in each frame's camera frame (metric, from the fit).
        weight: [P, T] how much each frame counts (0 = not seen).
        cam_path: [T, 4, 4] camera-to-scene transforms with unscaled translations.
    """
    num_t = pelvis_cam.shape[1]
    lag = max(lag, num_t // 4)  # a camera gliding on a smooth path accelerates little per frame
    if num_t <= 2 * lag:
        lag = max(1, (num_t - 1) // 2)
    if num_t < 3:
        return 1.0
    rot, centre = cam_path[:, :3, :3], cam_path[:, :3, 3]
    a = np.einsum("tab,ptb->pta", rot, pelvis_cam)  # [P,T,3]

    def acc(x: np.ndarray) -> np.ndarray:
        return x[..., 2 * lag :, :] - 2 * x[..., lag:-lag, :] + x[..., : -2 * lag, :]

    aa, cc = acc(a), acc(centre)[None]
    w = np.minimum(np.minimum(weight[:, 2 * lag :], weight[:, lag:-lag]), weight[:, : -2 * lag])[..., None]
    den = float((w * cc * cc).sum())
    if den < 1e-12:
        return 1.0
    return float(max(-(w * aa * cc).sum() / den, 1e-3))


def fit_motion(
    model,  # type: ignore[no-untyped-def]
    obs: Observations,
    cfg: FitConfig,
    *,
    init: FitState | None = None,
    init_world: FitState | None = None,
    init_root: bool = True,
    cam_path: np.ndarray | None = None,
    cam_points: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> MotionResult:
    """Fit every person of a clip and put people and camera into the world frame.

    Args:
        model: a loaded ``core.body.model.BodyModel``.
        obs: keypoints, masks and intrinsics; ``obs.world_to_cam`` is ignored (the fit starts in
            each frame's camera frame).
        init: optional start in the camera frame (from another tool, ``core.motion.init``);
            without it the rigid stage finds one.
        init_root: False when ``init`` knows body pose and shape only: the rigid stage places
            the bodies and the init's pose and betas are kept.
        init_world: optional complete start in a world frame (+Y up, floor y = 0) with its
            cameras (a Troupe bundle): only the joint refinement runs, the cameras stay.
        cam_path: optional [T, 4, 4] camera-to-scene transforms of a moving camera with
            translations known up to scale (``core.motion.camera``); the scale comes from the
            people's feet on the reconstructed floor (``floor_scale``, with ``cam_points``), else
            from their smooth motion (``path_scale``). Without it the camera is static.
        cam_points: [N, 3] the reconstruction's background points (same frame as ``cam_path``).
        progress: ``progress(fraction, message)``.
    """

    def report(f: float, msg: str) -> None:
        if progress is not None:
            progress(f, msg)

    body = SparseBody(model, device=cfg.device)
    nb = model.num_betas
    num_t = obs.num_frames
    weight = observed_weight(obs.keypoints, cfg.min_confidence)
    if init_world is not None:
        state = init_world
        state_before_world = state
        joints, feet, _ = body_points(body, state, cfg.device)
        ground = Ground(normal=np.array([0.0, 1.0, 0.0]), offset=0.0, residual=_floor_spread(feet, weight), levels=np.zeros(obs.num_people))
        fixed_camera = True
    else:
        cam_obs = replace(obs, world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)))
        if init is None or not init_root:
            state = rigid_start(body, cam_obs, cfg, nb, lambda f: report(0.1 * f, "placing people (rigid start)"))
            if init is not None:
                state = replace(state, body_pose=init.body_pose.copy(), betas=init.betas.copy())
            elif cfg.iters_limbs > 0:
                state = start_poses(body, cam_obs, cfg, state, lambda f: report(0.1 + 0.1 * f, "trying headings and limbs"))
        else:
            state = replace(init, world_to_cam=cam_obs.world_to_cam)
        report(0.2, "fitting poses in the camera frame")
        fitter = Fitter(body, replace(cam_obs, labels=None), cfg, state)
        fitter.run(
            "pose",
            cfg.iters_pose,
            [fitter.betas, fitter.d_rot, fitter.body_pose, fitter.transl],
            lambda f: report(0.2 + 0.4 * f, "fitting poses in the camera frame"),
        )
        state = fitter.state()
        state_before_world = state  # what the world stage's guard compares against (camera frame)
        rest_pelvis = fitter.body.rest_joints(fitter.betas.detach())[:, 0].cpu().numpy().astype(np.float64)
        # Into one scene frame: the camera frame (static camera) or the solved camera path.
        if cam_path is not None:
            joints, feet, _ = body_points(body, state, cfg.device)
            scale = floor_scale(feet, weight, cam_path, cam_points, obs.K)
            how = "feet on the reconstructed floor"
            if scale is None:
                scale, how = path_scale(joints[:, :, 0], weight, cam_path), "smooth world motion"
            log.info("camera path scale %.4f m per unit (from the people's %s)", scale, how)
            cam_to_fit = cam_path.copy()
            cam_to_fit[:, :3, 3] *= scale
            rot, tr = rigid_transform_bodies(rest_pelvis, state.global_rot, state.transl, cam_to_fit[:, :3, :3], cam_to_fit[:, :3, 3])
            state = replace(state, global_rot=rot, transl=tr, world_to_cam=np.linalg.inv(cam_to_fit))
        joints, feet, _ = body_points(body, state, cfg.device)
        ground = estimate_ground(joints, feet, weight)
        if cam_path is None and cfg.snap_to_floor:
            state = snap_to_floor(state, rest_pelvis, feet, ground, weight)
            joints, feet, _ = body_points(body, state, cfg.device)
        centre = np.average(joints[:, :, 0].reshape(-1, 3), axis=0, weights=weight.reshape(-1) + 1e-9)
        cam0 = np.linalg.inv(state.world_to_cam[0])
        rot, origin = world_from_ground(ground, centre, cam0[:3, 2])
        state = to_world(state, rest_pelvis, rot, origin)
        log.info("floor: normal %s, spread %.3f m", np.round(ground.normal, 3), ground.residual)
        if np.any(ground.levels != 0):
            log.info("standing above or below the others' floor: %s", ", ".join(f"person {p} {ground.levels[p]:+.2f} m" for p in np.flatnonzero(ground.levels)))
        fixed_camera = False
    levels = ground.levels

    # (reprojections are read with each state's own cameras: obs.world_to_cam does not count)
    before = relative_reprojection(body, state_before_world, obs, cfg)
    world_obs = replace(obs, world_to_cam=state.world_to_cam)
    start = state
    # (the progress leaves the last 5 % to a refit by the guard below, so it never runs backwards)
    state = world_stage(body, world_obs, cfg, start, fixed_camera, levels, None, lambda f: report(0.6 + 0.35 * f, "refining people together in the world frame"))
    after = relative_reprojection(body, state, obs, cfg)
    guard = None
    drifted = np.flatnonzero((after > cfg.world_guard_ratio * before) & (after - before > cfg.world_guard_share))
    if len(drifted) and cfg.world_guard_boost > 1.0:
        # The world stage's floor, contact and between-people terms carried these people off what
        # the image shows (a real dance class had three of six dancers 100-200 px off before
        # kp_sigma was raised; a person on a step or a box is pulled down to the shared floor):
        # the image wins. Fitted again from the same start with their keypoints weighted more.
        log.warning(
            "world stage: %s drifted off their keypoints (%s of their size, against %s in the camera frame); "
            "fitting again with their keypoints weighted %g times",
            ", ".join(f"person {p}" for p in drifted),
            ", ".join(f"{after[p]:.0%}" for p in drifted),
            ", ".join(f"{before[p]:.0%}" for p in drifted),
            cfg.world_guard_boost,
        )
        retry = world_stage(
            body, world_obs, cfg, start, fixed_camera, levels, drifted,
            lambda f: report(0.95 + 0.05 * f, f"fitting again {len(drifted)} people who drifted off their keypoints"),
        )  # fmt: skip
        again = relative_reprojection(body, retry, obs, cfg)
        kept = "retry" if np.nanmean(again[drifted]) < np.nanmean(after[drifted]) else "first"
        if kept == "retry":
            state = retry
        log.info("world stage retry: %s of their size, %s kept", ", ".join(f"{again[p]:.0%}" for p in drifted), kept)
        guard = WorldGuard(people=drifted, camera_frame=before[drifted], world=after[drifted], retry=again[drifted], kept=kept)
    pts = posed_points(body, state, cfg.device)  # the final bodies, posed once for what is reported
    ground = replace(ground, residual=_floor_spread(pts["feet"] - levels[:, None, None, None] * np.array([0.0, 1.0, 0.0]), weight))
    cams = (obs.K, state.world_to_cam, cfg.min_confidence)
    feet_px = None if obs.foot_keypoints is None else mean_error_px(pts["foot_keypoints"], obs.foot_keypoints, *cams)
    return MotionResult(state=state, ground=ground, reprojection_px=mean_error_px(pts["coco"], obs.keypoints, *cams),
                        guard=guard, foot_reprojection_px=feet_px)  # fmt: skip


def world_stage(
    body: SparseBody,
    obs: Observations,
    cfg: FitConfig,
    state: FitState,
    fixed_camera: bool,
    levels: np.ndarray,
    boost: np.ndarray | None,
    progress: Callable[[float], None],
) -> FitState:
    """Everyone refined together in the world frame (floor, contact, between-people terms), each
    person on their level (``levels`` [P], m above the floor); the keypoints of the people
    ``boost`` (indices) weighted ``cfg.world_guard_boost`` times."""
    fitter = Fitter(body, obs, cfg, state)
    fitter.level = torch.as_tensor(levels, dtype=torch.float32, device=fitter.device)
    if boost is not None:
        fitter.boost_keypoints(boost, cfg.world_guard_boost)
    params = [fitter.betas, fitter.d_rot, fitter.body_pose, fitter.transl]
    if not fixed_camera:
        params.append(fitter.cam_delta)
    fitter.run("world", cfg.iters_world, params, progress)
    return fitter.state()


def relative_reprojection(body: SparseBody, state: FitState, obs: Observations, cfg: FitConfig) -> np.ndarray:
    """[P] each person's mean keypoint error over the frames they are seen, as a share of their
    size in the image (NaN where never seen)."""
    err = reprojection_px(body, state, obs, cfg) / person_scale(obs.keypoints, cfg.min_confidence)
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(err)
        return np.where(seen.any(-1), np.where(seen, err, 0.0).sum(-1) / seen.sum(-1), np.nan)


def _floor_spread(feet: np.ndarray, weight: np.ndarray) -> float:
    """RMS height (m) of each person's lowest foot point over the seen frames."""
    low = feet[..., 1].min(-1)
    w = weight + 1e-9
    return float(np.sqrt(np.average(low**2, weights=w)))


def state_to_motions(state: FitState, visibility: np.ndarray, fps: float, gender: str, num_expression: int) -> list[bundle.Motion]:
    """One ``bundle.Motion`` per person (axis-angle, 165-long poses, hands flat)."""
    from scipy.spatial.transform import Rotation

    num_p, num_t = state.transl.shape[:2]
    motions = []
    for p in range(num_p):
        poses = np.zeros((num_t, bundle.NUM_POSE))
        poses[:, :3] = Rotation.from_matrix(state.global_rot[p]).as_rotvec()
        poses[:, 3:66] = state.body_pose[p]
        motions.append(
            bundle.Motion(
                betas=state.betas[p].copy(),
                poses=poses,
                trans=state.transl[p].copy(),
                expression=np.zeros((num_t, num_expression)),
                visibility=visibility[p].astype(np.float32),
                gender=gender,
                fps=fps,
            )
        )
    return motions
