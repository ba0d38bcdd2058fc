"""The camera: intrinsics when no metadata gives them, static or moving, and a moving camera's path.

- ``choose_focal``: a field-of-view search scored by the fit itself (keypoint error of a short
  fit on a few frames plus how flat the floor under everyone's feet comes out), around a
  default of ``inputs.DEFAULT_HFOV_DEG``.
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
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ..pipeline import JobError
from .fit import FitConfig, Observations
from .inputs import DEFAULT_HFOV_DEG, MotionInputs, focal_from_hfov, intrinsics

log = logging.getLogger("troupe.motion")

STATIC_PX = 0.3  # median background motion (px per frame, at 640 px width) below which the camera is static
FOV_CANDIDATES_DEG = (40.0, 50.0, 60.0, 70.0, 85.0)


@dataclass
class CameraSolve:
    kind: str  # "static" | "moving"
    cam_to_scene: np.ndarray | None  # [T, 4, 4] camera-to-scene, translation up to scale (moving only)
    motion_px: float  # measured background motion (px per sampled frame pair, at 640 px width)
    scale_note: str = ""  # how the path's metric scale is found
    points: np.ndarray | None = None  # [N, 3] background points of the reconstruction (scene frame)


def choose_focal(model, inputs: MotionInputs, cfg: FitConfig, max_frames: int = 40) -> float:  # type: ignore[no-untyped-def]
    """Focal length (working px) from a field-of-view search scored by a short fit."""
    from .body import SparseBody
    from .fit import Fitter
    from .solve import body_points, estimate_ground, observed_weight, reprojection_px, rigid_start

    num_t = inputs.num_frames
    idx = np.linspace(0, num_t - 1, min(num_t, max_frames)).round().astype(int)
    kps = inputs.keypoints[:, idx]
    weight = observed_weight(kps, cfg.min_confidence)
    if weight.sum() < 3:
        return focal_from_hfov(inputs.image_size[0], DEFAULT_HFOV_DEG)
    body = SparseBody(model, device=cfg.device)
    quick = replace(cfg, iters_rigid=20, iters_pose=60)
    scores = []
    for hfov in FOV_CANDIDATES_DEG:
        f = focal_from_hfov(inputs.image_size[0], hfov)
        obs = Observations(kps, intrinsics(inputs.image_size, f, len(idx)), np.tile(np.eye(4), (len(idx), 1, 1)), inputs.image_size)
        st = rigid_start(body, obs, quick, model.num_betas)
        fitter = Fitter(body, obs, quick, st)
        fitter.run("pose", quick.iters_pose, [fitter.betas, fitter.d_rot, fitter.body_pose, fitter.transl])
        st = fitter.state()
        err = np.nanmean(reprojection_px(body, st, obs, quick) / fitter.scale.cpu().numpy())
        joints, feet, _ = body_points(body, st, cfg.device)
        # the floor's spread relative to the people's distance: a wider FOV brings everyone
        # closer, which shrinks any spread in metres
        depth = float(np.average(joints[:, :, 0, 2], weights=weight + 1e-9))
        floor = estimate_ground(joints, feet, weight).residual / max(depth, 0.1)
        # a default-FOV prior keeps the choice where the evidence is flat
        score = err / 0.02 + floor / 0.005 + 2.0 * ((hfov - DEFAULT_HFOV_DEG) / 30.0) ** 2
        scores.append(score)
        log.info("fov search: hfov %.0f deg -> keypoints %.4f, floor %.4f of the distance, score %.3f", hfov, err, floor, score)
    best = FOV_CANDIDATES_DEG[int(np.argmin(scores))]
    return focal_from_hfov(inputs.image_size[0], best)


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
