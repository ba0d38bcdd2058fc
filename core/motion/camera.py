"""The camera: intrinsics when no metadata gives them, static or moving, and a moving camera's path.

- ``choose_focal`` / ``search_fov``: a field-of-view search scored by how well the people, as
  upright figures standing on one floor, explain the keypoints (the horizon and the vertical
  vanishing point they imply), with a prior around ``inputs.DEFAULT_HFOV_DEG``.
- ``background_motion``: how far background corners (people masked out, dilated) move between
  frames; below ``STATIC_PX`` the camera is static.
- ``solve_path``: structure from motion on the background with COLMAP (``pycolmap``): SIFT
  features outside the people masks, sequential matching, incremental mapping with the known
  intrinsics fixed; frames COLMAP does not register are interpolated. The path comes out up to
  scale; ``core.motion.solve.path_scale`` takes the metric scale from the people.
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
    """Static or moving (``mode`` auto decides from the background), and a moving camera's path."""
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
    if solved is None:
        log.warning("structure from motion found no camera path; fitting as a static camera")
        return CameraSolve("static", None, motion, "structure from motion failed: treated as static")
    path, points = solved
    return CameraSolve("moving", path, motion, "metric scale from the people's feet on the reconstructed floor", points)


def solve_path(
    frames: Sequence[np.ndarray],
    labels: np.ndarray | None,
    K: np.ndarray,
    max_images: int = 80,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """[T, 4, 4] camera-to-scene transforms (unscaled) from COLMAP on the background and the
    reconstructed points [N, 3], or None."""
    try:
        import pycolmap
    except ImportError:
        raise JobError(
            "a moving camera needs the Python package 'pycolmap' (pip install pycolmap==4.2.1); "
            "or pass the motion setting camera=static"
        ) from None
    num_t = len(frames)
    idx = np.unique(np.linspace(0, num_t - 1, min(num_t, max_images)).round().astype(int))
    with tempfile.TemporaryDirectory(prefix="troupe_sfm_") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for t in idx:
            img = frames[t]
            name = f"{t:06d}.jpg"
            cv2.imwrite(str(root / "images" / name), img)
            if labels is not None:
                h, w = img.shape[:2]
                cv2.imwrite(str(root / "masks" / (name + ".png")), background_mask(labels[t], (w, h)))
        db = root / "database.db"
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "PINHOLE"
        reader.camera_params = ",".join(str(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        if labels is not None:
            reader.mask_path = str(root / "masks")
        if progress:
            progress(0.06, "camera: features")
        pycolmap.extract_features(
            db, root / "images", camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader, device=pycolmap.Device.cpu
        )
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = 10
        if progress:
            progress(0.09, "camera: matching")
        pycolmap.match_sequential(db, pairing_options=pairing, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.ba_refine_focal_length = False
        opts.ba_refine_principal_point = False
        opts.ba_refine_extra_params = False
        opts.multiple_models = False
        if progress:
            progress(0.12, "camera: mapping")
        recs = pycolmap.incremental_mapping(db, root / "images", root / "sparse", options=opts)
        if not recs:
            return None
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        known_t, known = [], []
        for image in rec.images.values():
            if not image.has_pose:
                continue
            t = int(Path(image.name).stem)
            w2c = np.eye(4)
            w2c[:3, :4] = image.cam_from_world().matrix()
            known_t.append(t)
            known.append(np.linalg.inv(w2c))
        points = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
    if len(known_t) < 2:
        return None
    order = np.argsort(known_t)
    log.info("structure from motion registered %d of %d sampled frames, %d points", len(known_t), len(idx), len(points))
    return interpolate_poses(np.asarray(known_t)[order], np.asarray(known)[order], num_t), points


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
