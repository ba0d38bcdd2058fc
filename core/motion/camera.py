"""The camera: intrinsics when no metadata gives them, static or moving, and a moving camera's path.

- ``choose_focal`` / ``search_fov``: a field-of-view search scored by how well the people, as
  upright figures standing on one floor, explain the keypoints (the horizon and the vertical
  vanishing point they imply), with a prior around ``inputs.DEFAULT_HFOV_DEG``.
- ``background_motion``: how far background corners (people masked out, dilated) move between
  frames; below ``STATIC_PX`` the camera is static.
- ``solve_path``: structure from motion on the background with COLMAP (``pycolmap``), the known
  intrinsics fixed: background corners tracked frame to frame (people masked out) give the
  matches (``track_background``); COLMAP's SIFT with sequential matching is the second attempt.
  Every path must pass ``check_path`` (no stalls and jumps, nothing at absurd distances, most
  frames registered) or the camera is treated as static; frames COLMAP does not register are
  interpolated. The path comes out up to scale; ``core.motion.solve`` takes the metric scale
  from the people.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ..pipeline import JobError
from .fit import FitConfig
from .inputs import DEFAULT_HFOV_DEG, MotionInputs, focal_from_hfov

log = logging.getLogger("troupe.motion")

STATIC_PX = 0.3  # median background motion (px per frame, at 640 px width) below which the camera is static


@dataclass
class CameraSolve:
    kind: str  # "static" | "moving"
    cam_to_scene: np.ndarray | None  # [T, 4, 4] camera-to-scene, translation up to scale (moving only)
    motion_px: float  # measured background motion (px per sampled frame pair, at 640 px width)
    scale_note: str = ""  # how the path's metric scale is found
    points: np.ndarray | None = None  # [N, 3] background points of the reconstruction (scene frame)
    path_info: PathSolve | None = None  # what structure from motion found (moving, or a path that failed its check)


@dataclass
class FovSearch:
    """What the field-of-view search found (``search_fov``)."""

    hfov_deg: float  # chosen horizontal field of view
    focal_px: float  # the same as a focal length (working px)
    source: str  # "people" (the standing-people geometry decided) or "default: <why not>"
    grid_deg: np.ndarray  # [G] horizontal FOVs scored
    score: np.ndarray  # [G] negative log-likelihood of the people's geometry (0 at the best) plus the prior
    pitch_deg: float  # camera pitch below the horizon at the chosen FOV
    roll_deg: float  # camera roll at the chosen FOV
    segments: int  # person-frames (ankles and shoulders or hips seen) that entered


FOV_GRID_DEG = np.arange(20.0, 110.1, 2.5)  # horizontal FOVs the search scores
FOV_PRIOR_SD_DEG = 20.0  # spread of the prior around DEFAULT_HFOV_DEG (keeps weak evidence near it)
FOV_MIN_SEGMENTS = 20  # fewer usable person-frames than this: keep the default FOV
SEGMENT_WINDOW = 9  # frames averaged per segment (evens out the gait's sway and keypoint noise)
UPPER_PAIRS = ((5, 6), (11, 12))  # COCO-17 mid-shoulder and mid-hip, each above the mid-ankle (15, 16)
HEIGHT_SD = 0.07  # spread of people's heights around the scene's mean (log scale)


def standing_segments(keypoints: np.ndarray, min_conf: float, window: int = SEGMENT_WINDOW) -> tuple[np.ndarray, ...]:
    """People's 2D keypoints as standing figures: per person-frame whose ankles are seen, the
    mid-ankle point (on a plane parallel to the floor) and the points above it (``UPPER_PAIRS``),
    each averaged over ``window`` frames. keypoints [P, T, 17, 3] -> person [S], lower [S, 2],
    upper [S, K, 2] (px), upper_seen [S, K] bool; person-frames with no upper point are left out."""
    from scipy.ndimage import uniform_filter1d

    seen = (keypoints[..., 2] >= min_conf).astype(np.float64)  # [P, T, 17]
    xy = keypoints[..., :2] * seen[..., None]
    if window > 1:
        num = uniform_filter1d(xy, window, axis=1, mode="nearest")
        den = uniform_filter1d(seen, window, axis=1, mode="nearest")
        xy = num / np.maximum(den, 1e-9)[..., None]
        seen = (den > 0.6).astype(np.float64)  # most of the window saw it

    def middle(i: int, j: int) -> tuple[np.ndarray, np.ndarray]:  # midpoint of a left/right pair, both seen
        return (xy[..., i, :] + xy[..., j, :]) / 2, (seen[..., i] > 0) & (seen[..., j] > 0)

    lower, lower_seen = middle(15, 16)  # [P, T, 2]
    ups = [middle(i, j) for i, j in UPPER_PAIRS]
    upper, upper_seen = np.stack([u for u, _ in ups], 2), np.stack([s for _, s in ups], 2)  # [P, T, K, 2], [P, T, K]
    p, t = np.nonzero(lower_seen & upper_seen.any(-1))
    return p, lower[p, t], upper[p, t], upper_seen[p, t]


def _level_rotation(pitch: float, roll: float) -> np.ndarray:
    """[3, 3] world-to-cam rotation (world +Y up, OpenCV camera) of a camera looking along world
    +Z, pitched down by ``pitch`` and rolled by ``roll`` (rad)."""
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1.0, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1.0]])
    return rz @ rx @ np.diag([1.0, -1.0, 1.0])


def _figure_residuals(x, focal, num_k, person, lower, upper, upper_seen, centre, size_px):  # type: ignore[no-untyped-def]
    """Standing figures seen by a camera 1 above the ankles' plane: the ray through each lower
    point meets that plane, the figure's upper point k stands ``heights[k] * exp(dh[person])``
    straight above it and is projected back; errors in units of the figure's size in pixels,
    then the heights' prior. x = pitch, roll, heights [K], dh [P]."""
    rot = _level_rotation(x[0], x[1])
    heights, dh = x[2 : 2 + num_k], x[2 + num_k :]
    rays = np.concatenate([(lower - centre) / focal, np.ones((len(lower), 1))], 1) @ rot  # world directions
    ground = rays / np.maximum(-rays[:, 1:2], 1e-3)  # on the plane y = -1 (camera at 0); rays above the horizon: far
    pts = np.repeat(ground[:, None], num_k, 1)  # [S, K, 3]
    pts[..., 1] = heights[None] * np.exp(dh[person])[:, None] - 1.0
    cam = pts @ rot.T
    pix = focal * cam[..., :2] / np.maximum(cam[..., 2:], 1e-3) + centre  # [S, K, 2]
    res = (pix - upper) * upper_seen[..., None] / size_px[:, None, None]
    return np.concatenate([res.ravel(), dh / HEIGHT_SD])


def search_fov(
    keypoints: np.ndarray,
    image_size: tuple[int, int],
    min_conf: float = 0.2,
    grid_deg: np.ndarray = FOV_GRID_DEG,
) -> FovSearch:
    """The horizontal FOV under which the people stand upright on one floor.

    keypoints [P, T, 17, 3] COCO-17 (working px, confidence). For every FOV of ``grid_deg`` a
    small least-squares fit finds the camera's pitch and roll and how tall each person is (one
    mean per upper point, people spread ``HEIGHT_SD`` around it) so that the figures of
    ``standing_segments``, standing where their ankles meet the floor, reproject best. The FOV
    shows in two places at once: where the people's heights shrink to nothing with distance (the
    horizon, ``f * tan(pitch)`` from the centre) and where their upright lines converge (the
    vertical vanishing point, ``f / tan(pitch)``), so a tilted camera and people at several
    distances pin it down; a level camera or one distance leaves it to the prior around
    ``DEFAULT_HFOV_DEG``. (Depth from body size alone cannot tell: scaling the focal length
    scales every depth alike and keeps the floor flat.)
    """
    from scipy.optimize import least_squares

    width = image_size[0]
    grid_deg = np.asarray(grid_deg, np.float64)
    person, lower, upper, upper_seen = standing_segments(keypoints, min_conf)
    num_s, num_k = upper_seen.shape
    if num_s < FOV_MIN_SEGMENTS:
        why = f"default: only {num_s} person-frames show ankles and shoulders or hips"
        return FovSearch(DEFAULT_HFOV_DEG, focal_from_hfov(width, DEFAULT_HFOV_DEG), why, grid_deg,
                         np.zeros(len(grid_deg)), 0.0, 0.0, num_s)  # fmt: skip
    num_p = keypoints.shape[0]
    centre = np.asarray(image_size, np.float64) / 2
    first_up = upper[np.arange(num_s), np.argmax(upper_seen, 1)]
    size_px = np.maximum(np.linalg.norm(first_up - lower, axis=1), 1.0)
    x = np.concatenate([[0.1, 0.0], np.linspace(0.6, 0.4, num_k), np.zeros(num_p)])
    lo = np.concatenate([[-1.2, -0.5], np.full(num_k, 0.01), np.full(num_p, -1.0)])
    hi = np.concatenate([[1.2, 0.5], np.full(num_k, 3.0), np.full(num_p, 1.0)])
    costs, params = [], []
    for hfov in grid_deg:
        f = focal_from_hfov(width, hfov)
        r = least_squares(_figure_residuals, x, args=(f, num_k, person, lower, upper, upper_seen, centre, size_px),
                          bounds=(lo, hi), loss="soft_l1", f_scale=0.03)  # fmt: skip
        costs.append(2 * r.cost)
        params.append(r.x)
        x = r.x  # warm start the next FOV
    costs = np.asarray(costs)
    # Gaussian negative log-likelihood with the noise level of the best fit; neighbouring frames
    # share SEGMENT_WINDOW frames (and a gait), so they count as one
    sigma2 = costs.min() / (2 * num_s)
    nll = (costs - costs.min()) / (2 * sigma2 * SEGMENT_WINDOW)
    score = nll + 0.5 * ((grid_deg - DEFAULT_HFOV_DEG) / FOV_PRIOR_SD_DEG) ** 2
    score -= score.min()
    i = int(np.argmin(score))
    pitch, roll = np.degrees(params[i][:2])
    if i in (0, len(score) - 1):
        # The evidence pushes past the searched range even against the prior: the one-floor,
        # upright model does not explain these people (someone on a box or a stair, people
        # leaning or lying), so its answer is not trusted.
        why = f"default: the people's geometry points past the searched {grid_deg[0]:.0f}-{grid_deg[-1]:.0f} deg"
        return FovSearch(DEFAULT_HFOV_DEG, focal_from_hfov(width, DEFAULT_HFOV_DEG), why, grid_deg, score,
                         float(pitch), float(roll), num_s)  # fmt: skip
    hfov = float(grid_deg[i])
    a, b, c = score[i - 1 : i + 2]  # a parabola through the best and its neighbours (i is inside)
    if a - 2 * b + c > 0:
        hfov += 0.5 * (a - c) / (a - 2 * b + c) * float(grid_deg[i + 1] - grid_deg[i])
    return FovSearch(hfov, focal_from_hfov(width, hfov), "people", grid_deg, score, float(pitch), float(roll), num_s)


def choose_focal(inputs: MotionInputs, cfg: FitConfig | None = None) -> FovSearch:
    """The field of view of a video without camera metadata (``search_fov``), logged; its
    ``focal_px`` is in working pixels and ``source`` says whether the people gave it."""
    found = search_fov(inputs.keypoints, inputs.image_size, cfg.min_confidence if cfg else 0.2)
    log.info(
        "fov search: %.1f deg horizontal (%s; %d person-frames, camera pitch %.1f deg, roll %.1f deg)",
        found.hfov_deg, found.source, found.segments, found.pitch_deg, found.roll_deg,
    )  # fmt: skip
    return found


def background_mask(labels: np.ndarray, size: tuple[int, int], dilate_frac: float = 0.02) -> np.ndarray:
    """uint8 [H, W] 255 where no person is (label map resized to ``size`` and people dilated)."""
    people = cv2.resize((np.asarray(labels) > 0).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    k = max(3, int(dilate_frac * max(size)) | 1)
    people = cv2.dilate(people, np.ones((k, k), np.uint8))
    return np.where(people > 0, 0, 255).astype(np.uint8)


def background_motion(frames: Sequence[np.ndarray], labels: np.ndarray | None, samples: int = 12) -> float:
    """Median displacement (px at 640 px width) of background corners from sampled frames to
    their successors a few frames on; 0 when the background has no texture to track."""
    num_t = len(frames)
    if num_t < 2:
        return 0.0
    step = max(1, min(5, num_t // 4))
    starts = np.linspace(0, num_t - 1 - step, min(samples, max(1, num_t - step))).round().astype(int)
    moves = []
    for t in starts:
        a = cv2.cvtColor(frames[t], cv2.COLOR_BGR2GRAY)
        b = cv2.cvtColor(frames[t + step], cv2.COLOR_BGR2GRAY)
        h, w = a.shape
        mask = None
        if labels is not None:
            mask = background_mask(np.maximum(labels[t], labels[t + step]), (w, h))
        pts = cv2.goodFeaturesToTrack(a, 300, 0.01, max(4, w // 80), mask=mask)
        if pts is None or len(pts) < 8:
            continue
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(21, 21), maxLevel=3)
        ok = ok.reshape(-1).astype(bool)
        if ok.sum() < 8:
            continue
        d = np.linalg.norm((nxt - pts).reshape(-1, 2)[ok], axis=1)
        moves.append(float(np.median(d)) * 640.0 / w / step)
    return float(np.median(moves)) if moves else 0.0


def solve_camera(
    frames: Sequence[np.ndarray],
    inputs: MotionInputs,
    K: np.ndarray,
    mode: str = "auto",
    progress: Callable[[float, str], None] | None = None,
) -> CameraSolve:
    """Static or moving (``mode`` auto decides from the background), and a moving camera's path.
    A path that fails ``check_path`` is never returned: the camera is then treated as static,
    with a warning that says why."""
    if mode not in ("auto", "static", "moving"):
        raise JobError(f"motion setting 'camera' is {mode!r}; expected auto, static or moving")
    if len(frames) != inputs.num_frames:
        raise JobError(f"ingest has {len(frames)} frames but the people stage has {inputs.num_frames}: re-run both")
    labels = inputs.labels
    motion = background_motion(frames, labels) if mode != "static" else 0.0
    moving = mode == "moving" or (mode == "auto" and motion > STATIC_PX)
    log.info("background motion %.2f px/frame -> %s camera", motion, "moving" if moving else "static")
    if not moving:
        return CameraSolve("static", None, motion)
    solved = solve_path(frames, labels, K[0], progress=progress)
    if solved is None or not solved.check.ok:
        why = "no reconstruction" if solved is None else "; ".join(solved.attempts)
        log.warning("structure from motion found no usable camera path (%s); fitting as a static camera", why)
        note = f"structure from motion failed ({why}): treated as static"
        return CameraSolve("static", None, motion, note, path_info=solved)
    note = "metric scale from the people's feet on the reconstructed floor"
    if solved.method == "rotation":
        note = "turning in place (no structure from motion baseline): rotation only"
    return CameraSolve("moving", solved.cam_to_scene, motion, note, solved.points, path_info=solved)


@dataclass
class PathCheck:
    """Whether a solved path is plausible (``check_path``)."""

    ok: bool
    problems: list[str]  # what is wrong, in words (empty when ok)
    stats: dict[str, float]  # the measures the verdict came from


@dataclass
class PathSolve:
    """A moving camera's path from structure from motion (``solve_path``)."""

    cam_to_scene: np.ndarray  # [T, 4, 4] camera-to-scene at every frame (interpolated), translation up to scale
    points: np.ndarray  # [N, 3] reconstructed background points (scene frame)
    times: np.ndarray  # [K] frames the solver registered (sorted)
    poses: np.ndarray  # [K, 4, 4] their camera-to-scene transforms
    sampled: int  # frames handed to the solver
    method: str  # "tracks" (KLT tracks into COLMAP) or "sift" (COLMAP's own features and matching)
    check: PathCheck  # the verdict on this path
    attempts: list[str]  # every attempt and its verdict, in order


# Path check thresholds (``check_path``).
MIN_REGISTERED = 0.7  # fewer registered frames than this share of the sampled ones: the path is not trusted
STEP_RATIO = 6.0  # a step this many times longer (jump) or shorter (stall, while turning) than its neighbours'
STEP_FLOOR = 0.002  # steps below this share of the scene's depth per frame count as standing still
TURN_FLOOR_DEG = 0.05  # turning slower than this (deg per frame) is not turning
ROT_JUMP_DEG = 1.0  # a rotation step (deg per frame) above STEP_RATIO x its neighbours' and this is a jump
FAR = 100.0  # camera centres or points beyond this many times the scene's depth are absurd
MAX_STALLS = 0.05  # more than this share of stalling steps fails the path (one jump does)


def _neighbour_median(x: np.ndarray, half: int = 4) -> np.ndarray:
    """[N] median of x over the ``half`` entries on each side of every entry (itself excluded)."""
    out = np.empty(len(x))
    for i in range(len(x)):
        near = np.concatenate([x[max(0, i - half) : i], x[i + 1 : i + 1 + half]])
        out[i] = np.median(near) if len(near) else x[i]
    return out


def check_path(times: np.ndarray, poses: np.ndarray, points: np.ndarray, sampled: int) -> PathCheck:
    """Is a solved path plausible? times [K] (sorted frames), poses [K, 4, 4] camera-to-scene,
    points [N, 3] the reconstruction's points, ``sampled`` frames handed to the solver.

    Degenerate reconstructions (a repeating texture matched to the wrong copy, a bad initial pair)
    show as camera centres that stand still while the view turns and then jump, centres or points
    at absurd distances, or few registered frames. Step lengths are compared with their
    neighbours' (the speed of a real camera changes smoothly) and with the scene's depth (the
    median distance from the cameras to the points), so the check needs no metric scale."""
    problems: list[str] = []
    num = len(times)
    stats: dict[str, float] = {"registered": float(num), "sampled": float(sampled)}
    if num < max(3, MIN_REGISTERED * sampled):
        problems.append(f"registered {num} of {sampled} sampled frames")
    if num < 3:
        return PathCheck(False, problems, stats)
    if not (np.isfinite(poses).all() and np.isfinite(points).all()):
        return PathCheck(False, problems + ["non-finite poses or points"], stats)
    centres = poses[:, :3, 3]
    mid = np.median(centres, axis=0)
    depth = float(np.median(np.linalg.norm(points - mid, axis=1))) if len(points) else 0.0
    stats["depth"] = depth
    if depth <= 0:
        return PathCheck(False, problems + ["no reconstructed points"], stats)
    far_centre = float(np.linalg.norm(centres - mid, axis=1).max()) / depth
    far_points = float((np.linalg.norm(points - mid, axis=1) > FAR * depth).mean())
    stats.update(far_centre=far_centre, far_points=far_points)
    if far_centre > FAR:
        problems.append(f"a camera centre {far_centre:.3g} x the scene's depth away")
    if far_points > 0.05:
        problems.append(f"{100 * far_points:.0f} % of the points beyond {FAR:g} x the scene's depth")
    dt = np.diff(times).astype(np.float64)
    speed = np.linalg.norm(np.diff(centres, axis=0), axis=1) / dt / depth  # scene depths per frame
    rel = np.einsum("kji,kjl->kil", poses[:-1, :3, :3], poses[1:, :3, :3])
    turn = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))) / dt  # deg per frame
    near_speed, near_turn = _neighbour_median(speed), _neighbour_median(turn)
    jump = speed > STEP_RATIO * np.maximum(near_speed, STEP_FLOOR)
    stall = (speed * STEP_RATIO < near_speed) & (near_speed > STEP_FLOOR) & (turn > TURN_FLOOR_DEG)
    spin = turn > STEP_RATIO * near_turn + ROT_JUMP_DEG
    stats.update(
        jumps=float(jump.sum()), stalls=float(stall.sum()), rotation_jumps=float(spin.sum()),
        speed_median=float(np.median(speed)), speed_max=float(speed.max()), turn_median_deg=float(np.median(turn)),
    )  # fmt: skip
    if jump.any() or spin.any() or stall.mean() > MAX_STALLS:
        problems.append(
            f"{int(jump.sum())} jumps, {int(stall.sum())} stalls while turning and {int(spin.sum())} rotation jumps "
            f"in {len(speed)} steps"
        )
    return PathCheck(not problems, problems, stats)


# Background tracks (``track_background``).
TRACK_POINTS = 800  # corners kept alive per frame
TRACK_SPACING = 10  # px between corners (at the tracking resolution)
TRACK_FB_PX = 0.5  # forward-backward disagreement above which a track ends
TRACK_MAX_SIDE = 960  # frames are tracked at most this large (longer side, px)
_LK = {"winSize": (21, 21), "maxLevel": 3, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}


def track_background(
    frames: Sequence[np.ndarray],
    labels: np.ndarray | None,
    keep: np.ndarray,
    points: int = TRACK_POINTS,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Background corners tracked through every frame with pyramidal Lucas-Kanade (people masked
    out when ``labels`` [T, h, w] are given), kept at the frames ``keep`` [K] (sorted).

    Returns per kept frame (points [n, 2] float32 in frame pixels, track ids [n] int64): the same id
    in two frames is the same background point. Tracking frame to frame cannot confuse two
    copies of a repeating texture the way matching descriptors between distant frames does; a
    track ends where its forward and backward flow disagree, where it leaves the frame or lands
    on a person, and new corners fill the gaps."""
    h, w = frames[0].shape[:2]
    scale = min(1.0, TRACK_MAX_SIDE / max(h, w))
    size = (round(w * scale), round(h * scale))
    spacing = max(3, round(TRACK_SPACING * max(size) / 640))
    keep_set = {int(t): k for k, t in enumerate(keep)}
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))] * len(keep)
    pts, ids, next_id, prev = np.zeros((0, 2), np.float32), np.zeros(0, np.int64), 0, None
    for t in range(int(keep[0]), int(keep[-1]) + 1):
        img = frames[t]
        gray = cv2.cvtColor(img if scale == 1 else cv2.resize(img, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        mask = background_mask(labels[t], size) if labels is not None else np.full(size[::-1], 255, np.uint8)
        if prev is not None and len(pts):
            nxt, ok, _ = cv2.calcOpticalFlowPyrLK(prev, gray, pts.reshape(-1, 1, 2), None, **_LK)
            back, ok2, _ = cv2.calcOpticalFlowPyrLK(gray, prev, nxt, None, **_LK)
            nxt = nxt.reshape(-1, 2)
            good = ok.ravel().astype(bool) & ok2.ravel().astype(bool)
            good &= np.linalg.norm(back.reshape(-1, 2) - pts, axis=1) < TRACK_FB_PX
            good &= (nxt >= 0).all(1) & (nxt[:, 0] < size[0] - 1) & (nxt[:, 1] < size[1] - 1)
            xi, yi = np.clip(nxt.round().astype(int), 0, [size[0] - 1, size[1] - 1]).T
            good &= mask[yi, xi] > 0
            pts, ids = nxt[good], ids[good]
        if len(pts) < points:
            free = mask.copy()
            for x, y in pts:
                cv2.circle(free, (int(x), int(y)), spacing, 0, -1)
            new = cv2.goodFeaturesToTrack(gray, points - len(pts), 0.01, spacing, mask=free)
            if new is not None:
                new = new.reshape(-1, 2).astype(np.float32)
                pts = np.concatenate([pts, new])
                ids = np.concatenate([ids, np.arange(next_id, next_id + len(new))])
                next_id += len(new)
        if t in keep_set:
            out[keep_set[t]] = ((pts / scale).astype(np.float32), ids.copy())
        prev = gray
    return out


PAIR_GAPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # sampled-frame gaps matched with the tracks


def _mapper_options():  # type: ignore[no-untyped-def]
    """COLMAP incremental mapping with the intrinsics held fixed, one model, one thread and a
    fixed seed (a rerun gives the same path)."""
    import pycolmap

    opts = pycolmap.IncrementalPipelineOptions()
    opts.ba_refine_focal_length = False
    opts.ba_refine_principal_point = False
    opts.ba_refine_extra_params = False
    opts.mapper.abs_pose_refine_focal_length = False  # default on: registering a frame would move the shared focal
    opts.mapper.abs_pose_refine_extra_params = False
    opts.multiple_models = False
    opts.num_threads = 1
    opts.random_seed = 0
    opts.mapper.init_min_tri_angle = 8.0  # the default 16 deg fails on a short orbit and is then relaxed, after a long search
    return opts


def _matches_from_tracks(root: Path, names: list[str], tracks: list[tuple[np.ndarray, np.ndarray]], reader) -> None:  # type: ignore[no-untyped-def]
    """COLMAP database ``root/database.db`` with the images ``names`` (in ``root/images``), the
    tracked points as their keypoints and, for frames ``PAIR_GAPS`` apart, the tracks they share
    as matches, verified geometrically (two-view geometry with the known intrinsics)."""
    import pycolmap

    db = root / "database.db"
    pycolmap.Database.open(db).close()  # import_images wants the file to exist
    pycolmap.import_images(db, root / "images", camera_mode=pycolmap.CameraMode.SINGLE, image_names=names,
                           options=reader)  # fmt: skip
    database = pycolmap.Database.open(db)
    image_id = {im.name: im.image_id for im in database.read_all_images()}
    for name, (pts, _) in zip(names, tracks, strict=True):
        database.write_keypoints(image_id[name], pts)
    pairs = []
    for a in range(len(names)):
        for b in (a + gap for gap in PAIR_GAPS if a + gap < len(names)):
            _, ia, ib = np.intersect1d(tracks[a][1], tracks[b][1], assume_unique=True, return_indices=True)
            if len(ia) >= 15:  # COLMAP's least for a verified pair
                database.write_matches(image_id[names[a]], image_id[names[b]], np.stack([ia, ib], 1).astype(np.uint32))
                pairs.append(f"{names[a]} {names[b]}")
    database.close()
    (root / "pairs.txt").write_text("\n".join(pairs) + "\n")
    verify = pycolmap.TwoViewGeometryOptions()
    verify.ransac.random_seed = 0
    verify.ransac.max_error = 2.0  # tracked corners are sub-pixel
    pycolmap.verify_matches(db, root / "pairs.txt", verify)


def _matches_from_sift(root: Path, names: list[str], masks: list[np.ndarray] | None, reader) -> None:  # type: ignore[no-untyped-def]
    """COLMAP database ``root/database.db``: SIFT outside the people (``masks`` uint8 [H, W], 255
    = background, per image) and sequential matching, single-threaded (a rerun gives the same)."""
    import pycolmap

    if masks is not None:
        (root / "masks").mkdir()
        for name, mask in zip(names, masks, strict=True):
            cv2.imwrite(str(root / "masks" / (name + ".png")), mask)  # COLMAP reads <image name>.png
        reader.mask_path = str(root / "masks")
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    pycolmap.extract_features(root / "database.db", root / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)  # fmt: skip
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = 10
    pairing.quadratic_overlap = False  # frames far apart match a repeating texture's wrong copy
    matching = pycolmap.FeatureMatchingOptions()
    matching.guided_matching = True
    matching.num_threads = 1
    pycolmap.match_sequential(root / "database.db", pairing_options=pairing, matching_options=matching,
                              device=pycolmap.Device.cpu)  # fmt: skip


def _colmap(
    root: Path,
    frames: Sequence[np.ndarray],
    labels: np.ndarray | None,
    K: np.ndarray,
    idx: np.ndarray,
    method: str,
    progress: Callable[[float, str], None] | None,
    tracks: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One COLMAP run in the empty folder ``root`` on frames ``idx``, matched by ``method``
    ("tracks": ``tracks``, ``track_background`` at ``idx``; "sift": COLMAP's features). Returns the registered frames
    [K], their camera-to-scene poses [K, 4, 4] and the points [N, 3] of the largest model, or None."""
    import pycolmap

    pycolmap.set_random_seed(0)
    (root / "images").mkdir(parents=True)
    names = [f"{t:06d}.jpg" for t in idx]
    for t, name in zip(idx, names, strict=True):
        cv2.imwrite(str(root / "images" / name), frames[t], [cv2.IMWRITE_JPEG_QUALITY, 95])
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(str(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    if progress:
        progress(0.06, f"camera: matching ({method})")
    if method == "tracks":
        _matches_from_tracks(root, names, tracks if tracks is not None else track_background(frames, labels, idx), reader)
    else:
        sizes = [frames[t].shape[1::-1] for t in idx]
        masks = None if labels is None else [background_mask(labels[t], sz) for t, sz in zip(idx, sizes, strict=True)]
        _matches_from_sift(root, names, masks, reader)
    if progress:
        progress(0.12, "camera: mapping")
    recs = pycolmap.incremental_mapping(root / "database.db", root / "images", root / "sparse", options=_mapper_options())
    if not recs:
        return None
    rec = max(recs.values(), key=lambda r: r.num_reg_images())
    known_t, known = [], []
    for image in rec.images.values():
        if image.has_pose:
            w2c = np.eye(4)
            w2c[:3, :4] = image.cam_from_world().matrix()
            known_t.append(int(Path(image.name).stem))
            known.append(np.linalg.inv(w2c))
    if not known_t:
        return None
    order = np.argsort(known_t)
    points = np.array([p.xyz for p in rec.points3D.values()], np.float64).reshape(-1, 3)
    return np.asarray(known_t)[order], np.asarray(known)[order], points


SFM_METHODS = ("tracks", "sift", "rotation")  # solve_path's attempts, in order


ROTATION_PX = 3.0  # median error (px at 640 px width) within which a pure turn must explain the background tracks: a hand-held
# camera's small sway is accepted (better than no turn at all once structure from motion found no baseline), a walk past the scene is not
ROTATION_MIN_TRACKS = 30  # background tracks two neighbouring sampled frames must share


def solve_rotation(
    tracks: list[tuple[np.ndarray, np.ndarray]], K: np.ndarray, idx: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """A camera that turns in place (a pan or tilt from a tripod or a steady hand): structure from
    motion has no baseline to start from, but every background point then moves by the same
    homography ``K R K^-1``. Between neighbouring frames of ``idx`` the tracked background corners
    (``track_background`` at ``idx``; frames ``width`` px wide) give the homography (RANSAC), its nearest rotation R, and the error
    with which R alone moves the tracks; R is chained along the clip.

    Returns (times [K], camera-to-scene poses [K, 4, 4] with the centre fixed at the origin), or a
    sentence saying why the camera does not just turn (too few tracks, or parallax: R leaves the
    tracks more than ``ROTATION_PX`` off, so the camera also moves)."""
    k_inv = np.linalg.inv(K)
    tol = ROTATION_PX * width / 640
    w2c = [np.eye(3)]
    errors = []
    for k in range(1, len(idx)):
        (pa, ia), (pb, ib) = tracks[k - 1], tracks[k]
        common, ja, jb = np.intersect1d(ia, ib, return_indices=True)
        if len(common) < ROTATION_MIN_TRACKS:
            return f"{len(common)} background tracks between frames {idx[k - 1]} and {idx[k]}"
        a, b = pa[ja].astype(np.float64), pb[jb].astype(np.float64)
        hom, inl = cv2.findHomography(a, b, cv2.RANSAC, 2.0 * tol)
        if hom is None:
            return f"no homography between frames {idx[k - 1]} and {idx[k]}"
        inl = inl.ravel().astype(bool)  # tracks on something that moves itself (an unmasked person) drop out
        if inl.mean() < 0.7:
            return f"no one motion moves most of the background between frames {idx[k - 1]} and {idx[k]}"
        u, _, vt = np.linalg.svd(k_inv @ hom @ K)
        rot = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt  # the nearest rotation
        moved = (K @ rot @ k_inv @ np.concatenate([a[inl], np.ones((int(inl.sum()), 1))], 1).T).T
        err = np.linalg.norm(moved[:, :2] / moved[:, 2:] - b[inl], axis=1)
        errors.append(float(np.median(err)))
        if errors[-1] > tol:
            return f"the background moves with parallax between frames {idx[k - 1]} and {idx[k]} ({errors[-1]:.1f} px off a pure turn)"
        w2c.append(rot @ w2c[-1])  # directions in camera k = rot @ directions in camera k-1
    poses = np.tile(np.eye(4), (len(idx), 1, 1))
    poses[:, :3, :3] = np.transpose(np.stack(w2c), (0, 2, 1))
    turn = Rotation.from_matrix(poses[-1, :3, :3] @ poses[0, :3, :3].T).magnitude()
    log.info("camera turning in place: %.1f deg over the clip, tracks within %.2f px of a pure turn", np.degrees(turn), max(errors, default=0.0))
    return idx.astype(np.int64), poses


def solve_path(
    frames: Sequence[np.ndarray],
    labels: np.ndarray | None,
    K: np.ndarray,
    max_images: int = 60,
    methods: Sequence[str] = SFM_METHODS,
    progress: Callable[[float, str], None] | None = None,
) -> PathSolve | None:
    """A moving camera's path by structure from motion on the background (COLMAP via pycolmap,
    the intrinsics K [3, 3] held fixed), on up to ``max_images`` frames spread over the clip;
    the other frames are interpolated. labels [T, h, w] (people > 0) or None.

    Each of ``methods`` is tried in turn until one gives a path that passes ``check_path``:
    "tracks" (background corners tracked frame to frame, their shared tracks the matches),
    "sift" (COLMAP's SIFT features, sequential matching) and "rotation" (a camera turning in place,
    ``solve_rotation``: no structure from motion, accepted when a pure turn explains the tracks).
    Returns the first path that passes, else
    the last one found (``check.ok`` False: not to be used), or None when nothing registered."""
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        raise JobError(
            "a moving camera needs the Python package 'pycolmap' (pip install pycolmap==4.2.1); "
            "or pass the motion setting camera=static"
        ) from None
    num_t = len(frames)
    idx = np.unique(np.linspace(0, num_t - 1, min(num_t, max_images)).round().astype(int))
    found: PathSolve | None = None
    attempts: list[str] = []
    tracks: list[tuple[np.ndarray, np.ndarray]] | None = None  # tracked once for "tracks" and "rotation"
    for method in methods:
        if method in ("tracks", "rotation") and tracks is None:
            tracks = track_background(frames, labels, idx)
        if method == "rotation":
            turned = solve_rotation(tracks, K, idx, frames[0].shape[1])  # type: ignore[arg-type]  # set just above
            if isinstance(turned, str):
                attempts.append(f"rotation: {turned}")
                log.info("camera turning in place: %s", turned)
                continue
            times, poses = turned
            points = np.zeros((0, 3))
            check = PathCheck(True, [], {"registered": float(len(times)), "sampled": float(len(idx))})
        else:
            with tempfile.TemporaryDirectory(prefix="troupe_sfm_") as tmp:
                solved = _colmap(Path(tmp), frames, labels, K, idx, method, progress, tracks)
            if solved is None:
                attempts.append(f"{method}: no reconstruction")
                log.info("structure from motion (%s): no reconstruction", method)
                continue
            times, poses, points = solved
            check = check_path(times, poses, points, len(idx))
        attempts.append(f"{method}: " + ("ok" if check.ok else "; ".join(check.problems)))
        log.info("structure from motion (%s) registered %d of %d sampled frames, %d points: %s",
                 method, len(times), len(idx), len(points), attempts[-1])  # fmt: skip
        path = interpolate_poses(times, poses, num_t) if len(times) >= 2 else np.tile(poses[0], (num_t, 1, 1))
        found = PathSolve(path, points, times, poses, len(idx), method, check, attempts)  # attempts: shared, grows
        if check.ok:
            break
    return found


def path_errors(cam_to_scene: np.ndarray, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """How far a solved path [T, 4, 4] (camera-to-scene, any scale) is from the true one [T, 4, 4]
    (camera-to-world): per frame the rotation error in degrees after the one world rotation that
    fits all frames best, and the camera centre's error in the truth's units after the similarity
    (scale, rotation, shift; Umeyama) that fits all centres best; and the true path's length."""
    pred_r, gt_r = cam_to_scene[:, :3, :3], cam_to_world[:, :3, :3]
    u, _, vt = np.linalg.svd(np.einsum("tij,tkj->ik", gt_r, pred_r))
    align = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt  # gt ~ align @ pred
    rel = np.einsum("tji,jk,tkl->til", gt_r, align, pred_r)
    rot = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    p, g = cam_to_scene[:, :3, 3], cam_to_world[:, :3, 3]
    p, g = p - p.mean(0), g - g.mean(0)
    var = (p**2).sum() / len(p)
    if var < 1e-18:  # every centre alike: only shifted
        centre = np.linalg.norm(g, axis=1)
    else:
        u, sv, vt = np.linalg.svd(g.T @ p / len(p))
        d = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
        centre = np.linalg.norm(np.trace(np.diag(sv) @ d) / var * p @ (u @ d @ vt).T - g, axis=1)
    return rot, centre, float(np.linalg.norm(np.diff(cam_to_world[:, :3, 3], axis=0), axis=1).sum())


def interpolate_poses(times: np.ndarray, poses: np.ndarray, num_t: int) -> np.ndarray:
    """[T, 4, 4] poses at every frame from poses [K, 4, 4] at sorted ``times`` (slerp + lerp,
    held constant beyond the ends)."""
    t_all = np.clip(np.arange(num_t), times[0], times[-1])
    rots = Slerp(times, Rotation.from_matrix(poses[:, :3, :3]))(t_all).as_matrix()
    out = np.tile(np.eye(4), (num_t, 1, 1))
    out[:, :3, :3] = rots
    for c in range(3):
        out[:, c, 3] = np.interp(t_all, times, poses[:, c, 3])
    return out
