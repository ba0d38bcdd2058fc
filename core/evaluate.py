"""Compare a predicted result bundle with a ground-truth bundle (e.g. from ``core synth``).

    python -m core eval PRED_BUNDLE GT_BUNDLE [--json OUT]

Prints a table and (with --json) writes every number; see docs/formats.md "Evaluation JSON"
for the exact definition of each metric. In short, over the 22 SMPL-X body joints
(pelvis .. right_wrist) and the frames both people are visible in:

    MPJPE      camera-frame joint error, no alignment (mm)
    MPJPE-P    camera-frame joint error after subtracting each side's pelvis (mm), as HMR papers
    PA-MPJPE   error after a per-frame similarity (Procrustes) alignment (mm)
    W-MPJPE    world joint error after a similarity fitted on the first two frames of every
               100 frames (mm), as WHAM's W-MPJPE100
    WA-MPJPE   world joint error after a similarity fitted on every 100 frames (mm)
    RTE        world pelvis error after one rigid fit of the whole pelvis trajectory (mm)
    jitter     mean norm of the third derivative of world joints (m/s^3), pred and GT
    foot slide mean horizontal foot-joint motion per frame while in ground contact (mm), pred and GT;
               and the prediction's where the truth's feet are in contact (slide-PGT)
    switches   changes of a predicted person's per-frame GT match
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle as bd

BODY_JOINTS = 22  # SMPL-X joints 0..21: pelvis .. right_wrist (no jaw, eyes, fingers)
FOOT_JOINTS = (7, 8, 10, 11)  # left/right ankle, left/right foot
CONTACT_HEIGHT = 0.03  # m above the joint's lowest height in the sequence counted as ground contact
# Matching cost: mean image distance of the projected joints, in units of the GT person's image
# size (the diagonal of their joints' 2D box). Image space, because identity is what the video
# shows: a monocular reconstruction may be off in depth and scale by metres and still be the
# right person. Above this the two never match.
DEFAULT_MAX_MATCH = 0.5
# W-MPJPE and WA-MPJPE align prediction and truth anew every this many frames a person is seen
# (WHAM's W-MPJPE100 / WA-MPJPE100): a long clip is scored as its 100-frame pieces, not by how far
# one alignment on its first frames carries.
WORLD_CHUNK = 100

METRICS = (
    "mpjpe_mm", "mpjpe_pelvis_mm", "pa_mpjpe_mm", "w_mpjpe_mm", "wa_mpjpe_mm", "rte_mm",
    "jitter_pred", "jitter_gt", "foot_slide_pred_mm", "foot_slide_gt_mm", "foot_slide_planted_mm",
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------


def similarity_fit(
    src: np.ndarray, dst: np.ndarray, *, scale: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) mapping ``src`` onto ``dst``.

    Args:
        src, dst: [..., N, 3] corresponding points.
        scale: fit a scale (similarity) or not (rigid).

    Returns:
        s [...], R [..., 3, 3], t [..., 3] with ``dst ≈ s * src @ R.T + t`` (apply with ``similarity_apply``).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s = src.mean(axis=-2, keepdims=True)
    mu_d = dst.mean(axis=-2, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.swapaxes(xd, -1, -2) @ xs / src.shape[-2]  # [..., 3, 3]
    u, sv, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    corr = np.ones(sv.shape)
    corr[..., 2] = d
    rot = (u * corr[..., None, :]) @ vt
    var_s = (xs**2).sum(axis=(-1, -2)) / src.shape[-2]
    if scale:
        s = np.where(var_s > 1e-12, (sv * corr).sum(axis=-1) / np.maximum(var_s, 1e-12), 1.0)
    else:
        s = np.ones(var_s.shape)
    t = mu_d[..., 0, :] - s[..., None] * np.einsum("...ab,...b->...a", rot, mu_s[..., 0, :])
    return s, rot, t


def similarity_apply(s: np.ndarray, rot: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a ``similarity_fit`` result to [..., N, 3] points (broadcast over leading dims)."""
    return np.asarray(s)[..., None, None] * (pts @ np.swapaxes(rot, -1, -2)) + np.asarray(t)[..., None, :]


def _err(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between [..., 3] arrays, in mm (NaN when empty)."""
    if a.size == 0:
        return math.nan
    return float(np.linalg.norm(a - b, axis=-1).mean() * 1000.0)


def jitter(joints: np.ndarray, frames: np.ndarray, dt: float) -> float:
    """Mean norm of the third finite difference of [T, J, 3] positions, in m/s^3.

    Only windows of four frames spaced exactly one step apart (``frames`` are source frame
    numbers, ``dt`` the time of one step) count; NaN when there is none.
    """
    if len(frames) < 4:
        return math.nan
    step = np.diff(frames)
    ok = (step[:-2] == step[1:-1]) & (step[1:-1] == step[2:])
    if not ok.any():
        return math.nan
    d3 = joints[3:] - 3 * joints[2:-1] + 3 * joints[1:-2] - joints[:-3]  # [T-3, J, 3]
    spacing = step[:-2][ok]
    return float((np.linalg.norm(d3[ok], axis=-1) / (spacing[:, None] * dt) ** 3).mean())


def foot_contact(joints: np.ndarray, frames: np.ndarray, min_step: int) -> np.ndarray:
    """[T-1, 4] whether each foot joint (``FOOT_JOINTS``) is in ground contact over each step
    t -> t+1 of [T, J, 3] positions.

    A foot joint is low in a frame when its height is within ``CONTACT_HEIGHT`` of its lowest
    height over the sequence. A step t -> t+1 is in contact when the joint is low in frames
    t-1 .. t+2 (the sequence's first and last frames repeat at its ends), so the lift-off and
    touch-down steps of a walking foot do not count. Only steps of ``min_step`` source frames
    count.
    """
    low = joints[:, FOOT_JOINTS, 1] <= joints[:, FOOT_JOINTS, 1].min(axis=0) + CONTACT_HEIGHT  # [T, 4]
    padded = np.concatenate([low[:1], low, low[-1:]])  # [T+2, 4]
    contact = padded[:-3] & padded[1:-2] & padded[2:-1] & padded[3:]
    return contact & (np.diff(frames) == min_step)[:, None]


def foot_sliding(joints: np.ndarray, frames: np.ndarray, min_step: int, contact_from: np.ndarray | None = None) -> float:
    """Mean horizontal (x, z) displacement of the foot joints per step while in ground contact,
    in mm per step: the contact (``foot_contact``) of ``joints`` themselves, or of
    ``contact_from`` [T, J, 3] when given (the truth's, to measure how far a prediction's feet
    move while the true feet are planted). NaN when there is no contact."""
    if len(frames) < 2:
        return math.nan
    contact = foot_contact(joints if contact_from is None else contact_from, frames, min_step)
    if not contact.any():
        return math.nan
    feet = joints[:, FOOT_JOINTS]  # [T, 4, 3]
    disp = np.linalg.norm((feet[1:] - feet[:-1])[..., [0, 2]], axis=-1)
    return float(disp[contact].mean() * 1000.0)


# --------------------------------------------------------------------------------------
# Bundles on common frames
# --------------------------------------------------------------------------------------


@dataclass
class _Side:
    ids: list[str]
    world: np.ndarray  # [N, C, 22, 3] world joints on the common frames
    cam: np.ndarray  # [N, C, 22, 3] the same joints in that bundle's camera frame
    uv: np.ndarray  # [N, C, 22, 2] the same joints projected by that bundle's camera (pixels)
    present: np.ndarray  # [N, C] visibility > 0


def _side(b: bd.Bundle, index: np.ndarray) -> _Side:
    """Body joints of every person of ``b`` at bundle frames ``index``."""
    n, c = len(b.people), len(index)
    world = np.zeros((n, c, BODY_JOINTS, 3))
    present = np.zeros((n, c), bool)
    w2c = b.camera.world_to_cam[index]  # [C, 4, 4]
    for i, p in enumerate(b.people):
        world[i] = bd.world_joints(p)[index, :BODY_JOINTS]
        present[i] = p.motion.visibility[index] > 0
    cam = np.einsum("cab,ncjb->ncja", w2c[:, :3, :3], world) + w2c[None, :, None, :3, 3]
    pix = np.einsum("cab,ncjb->ncja", b.camera.K[index], cam)
    z = pix[..., 2:]
    uv = np.where(z > 1e-6, pix[..., :2] / np.where(z > 1e-6, z, 1.0), np.nan)  # behind the camera: NaN
    return _Side(ids=[p.id for p in b.people], world=world, cam=cam, uv=uv, present=present)


def _distance_matrix(pred: _Side, gt: _Side) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame matching cost [Np, Ng, C] (``DEFAULT_MAX_MATCH``; NaN where either is absent)
    and the number of shared frames [Np, Ng]."""
    with np.errstate(invalid="ignore"):
        d = np.nanmean(np.linalg.norm(pred.uv[:, None] - gt.uv[None], axis=-1), axis=-1)  # [Np, Ng, C]
        size = np.linalg.norm(np.nanmax(gt.uv, axis=2) - np.nanmin(gt.uv, axis=2), axis=-1)  # [Ng, C]
    both = pred.present[:, None] & gt.present[None] & np.isfinite(d)
    cost = d / np.maximum(size[None], 1.0)
    return np.where(both, cost, np.nan), both.sum(axis=-1)


def _assign(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Hungarian assignment on ``cost`` (NaN/inf = impossible), keeping pairs <= max_cost."""
    from scipy.optimize import linear_sum_assignment

    if cost.size == 0:
        return []
    ok = np.isfinite(cost) & (cost <= max_cost)
    if not ok.any():
        return []
    big = np.where(ok, cost, 1e9)  # forbidden pairs only where the count forces them (then dropped)
    rows, cols = linear_sum_assignment(big)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if ok[r, c]]


def _id_switches(per_frame: np.ndarray, max_dist: float) -> np.ndarray:
    """Per-frame Hungarian matching on [Np, Ng, C] distances; returns switches per pred person."""
    n_pred, _, n_frames = per_frame.shape
    last = [-1] * n_pred
    switches = np.zeros(n_pred, int)
    for c in range(n_frames):
        for r, g in _assign(per_frame[:, :, c], max_dist):
            if last[r] >= 0 and last[r] != g:
                switches[r] += 1
            last[r] = g
    return switches


def _pair_metrics(
    pred: _Side, gt: _Side, i: int, j: int, frames: np.ndarray, dt: float, min_step: int
) -> dict[str, Any]:
    both = pred.present[i] & gt.present[j]
    f = frames[both]
    pc, gc = pred.cam[i, both], gt.cam[j, both]  # [F, 22, 3]
    pw, gw = pred.world[i, both], gt.world[j, both]
    out: dict[str, Any] = {"pred": pred.ids[i], "gt": gt.ids[j], "frames": int(both.sum())}
    out["mpjpe_mm"] = _err(pc, gc)
    out["mpjpe_pelvis_mm"] = _err(pc - pc[:, :1], gc - gc[:, :1])
    if len(f):
        out["pa_mpjpe_mm"] = _err(similarity_apply(*similarity_fit(pc, gc), pc), gc)
    else:
        out["pa_mpjpe_mm"] = math.nan
    if len(f) >= 2:
        # WHAM's protocol: the frames in chunks of WORLD_CHUNK, each aligned on its own (on its
        # first two frames for W-MPJPE, on all of it for WA-MPJPE), the mean over all frames
        w_al, wa_al = np.empty_like(pw), np.empty_like(pw)
        for c0 in range(0, len(f), WORLD_CHUNK):
            c = slice(c0, min(c0 + WORLD_CHUNK, len(f)))
            first = similarity_fit(pw[c][:2].reshape(-1, 3), gw[c][:2].reshape(-1, 3))
            w_al[c] = similarity_apply(*first, pw[c])
            whole = similarity_fit(pw[c].reshape(-1, 3), gw[c].reshape(-1, 3))
            wa_al[c] = similarity_apply(*whole, pw[c])
        out["w_mpjpe_mm"] = _err(w_al, gw)
        out["wa_mpjpe_mm"] = _err(wa_al, gw)
        root = similarity_fit(pw[:, 0], gw[:, 0], scale=False)
        out["rte_mm"] = _err(similarity_apply(*root, pw[:, 0]), gw[:, 0])
    else:
        out["w_mpjpe_mm"] = out["wa_mpjpe_mm"] = out["rte_mm"] = math.nan
    out["jitter_pred"] = jitter(pw, f, dt)
    out["jitter_gt"] = jitter(gw, f, dt)
    out["foot_slide_pred_mm"] = foot_sliding(pw, f, min_step)
    out["foot_slide_gt_mm"] = foot_sliding(gw, f, min_step)
    # the prediction's feet where the true ones are planted: its own contacts also count swing
    # steps of a foot that skims the floor (lifted less than CONTACT_HEIGHT), which is no sliding
    out["foot_slide_planted_mm"] = foot_sliding(pw, f, min_step, contact_from=gw)
    return out


def camera_level(world_to_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[T, 4, 4] OpenCV world-to-camera (world +Y up, floor y = 0) -> pitch [T] (degrees below the
    horizon of the viewing direction), roll [T] (degrees the image is turned about the viewing
    direction: 0 upright, 180 upside down) and height [T] (the camera centre's y, metres above
    the floor)."""
    rot = world_to_cam[:, :3, :3]  # rows: the camera's x, y, z axes in world coordinates
    centre = -np.einsum("tba,tb->ta", rot, world_to_cam[:, :3, 3])
    pitch = np.degrees(np.arcsin(np.clip(-rot[:, 2, 1], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(rot[:, 0, 1], -rot[:, 1, 1]))  # image x and y (down) axes' heights
    return pitch, roll, centre[:, 1]


def camera_errors(pred: bd.Bundle, gt: bd.Bundle, ip: np.ndarray, ig: np.ndarray) -> dict[str, float]:
    """How the solved camera stands to the floor against the truth, over common frames (indices
    ``ip`` / ``ig``). Both worlds have +Y up and the floor at y = 0, so pitch and roll compare
    directly (the heading about +Y is each world's own choice); the height is a ratio, as a
    monocular world's scale follows the body model's sizes."""
    if len(ip) == 0:
        return {"pitch_err_deg": math.nan, "roll_err_deg": math.nan, "height_ratio": math.nan}
    pp, rp, hp = camera_level(pred.camera.world_to_cam[ip])
    pg, rg, hg = camera_level(gt.camera.world_to_cam[ig])
    return {
        "pitch_err_deg": float(np.abs(pp - pg).mean()),
        "roll_err_deg": float(np.abs((rp - rg + 180.0) % 360.0 - 180.0).mean()),
        "height_ratio": float(np.mean(hp / np.where(np.abs(hg) > 1e-6, hg, np.nan))),
    }


def evaluate(
    pred: bd.Bundle, gt: bd.Bundle, *, max_match_distance: float = DEFAULT_MAX_MATCH
) -> dict[str, Any]:
    """Every metric of ``pred`` against ``gt`` as a JSON-ready dict (docs/formats.md)."""
    src_pred = pred.frame_start + pred.frame_step * np.arange(pred.frame_count)
    src_gt = gt.frame_start + gt.frame_step * np.arange(gt.frame_count)
    frames, ip, ig = np.intersect1d(src_pred, src_gt, return_indices=True)
    warnings: list[str] = []
    if abs(pred.fps - gt.fps) > 1e-3:
        warnings.append(f"fps differ (pred {pred.fps:g}, gt {gt.fps:g}); times use the GT fps")
    if len(frames) == 0:
        warnings.append("the bundles share no source frame (check frame_start / frame_step)")
    min_step = int(np.diff(frames).min()) if len(frames) > 1 else 1
    dt = 1.0 / gt.fps
    ps, gs = _side(pred, ip), _side(gt, ig)
    per_frame, shared = _distance_matrix(ps, gs)
    mean_dist = np.where(shared > 0, np.nansum(per_frame, axis=-1) / np.maximum(shared, 1), np.inf)
    pairs = _assign(mean_dist, max_match_distance)
    switches = _id_switches(per_frame, max_match_distance)
    matches = []
    for i, j in pairs:
        m = _pair_metrics(ps, gs, i, j, frames, dt, min_step)
        m["match_cost"] = float(mean_dist[i, j])
        m["id_switches"] = int(switches[i])
        matches.append(m)
    matched_pred = {i for i, _ in pairs}
    matched_gt = {j for _, j in pairs}
    mean = {}
    for k in METRICS:
        vals = [m[k] for m in matches if not math.isnan(m[k])]
        mean[k] = float(np.mean(vals)) if vals else math.nan
    return {
        "pred": "",
        "gt": "",
        "joints": list(bd.JOINT_NAMES[:BODY_JOINTS]),
        "frames": {"pred": pred.frame_count, "gt": gt.frame_count, "common": int(len(frames))},
        "max_match_cost": max_match_distance,
        "matches": matches,
        "mean": mean,
        "missed": [gs.ids[j] for j in range(len(gs.ids)) if j not in matched_gt],
        "extra": [ps.ids[i] for i in range(len(ps.ids)) if i not in matched_pred],
        "id_switches": int(switches.sum()),
        "id_switches_per_pred": {ps.ids[i]: int(s) for i, s in enumerate(switches)},
        "camera": camera_errors(pred, gt, ip, ig),
        "warnings": warnings,
    }


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

_COLUMNS = (
    ("MPJPE", "mpjpe_mm", 1), ("MPJPE-P", "mpjpe_pelvis_mm", 1), ("PA-MPJPE", "pa_mpjpe_mm", 1),
    ("W-MPJPE", "w_mpjpe_mm", 1), ("WA-MPJPE", "wa_mpjpe_mm", 1), ("RTE", "rte_mm", 1),
    ("jit-P", "jitter_pred", 1), ("jit-GT", "jitter_gt", 1),
    ("slide-P", "foot_slide_pred_mm", 2), ("slide-GT", "foot_slide_gt_mm", 2),
    ("slide-PGT", "foot_slide_planted_mm", 2),
)  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    """The readable summary printed by ``python -m core eval``."""
    head = (
        f"{'pred':>8} {'gt':>8} {'frames':>6} "
        + " ".join(f"{c:>9}" for c, _, _ in _COLUMNS)
        + f" {'switch':>6}"
    )
    lines = [
        "errors in mm, jitter in m/s^3, over the 22 SMPL-X body joints (docs/formats.md)",
        head,
        "-" * len(head),
    ]

    def row(name: str, gt: str, frames: str, vals: dict[str, Any], sw: str) -> str:
        cells = " ".join(f"{vals[k]:>9.{d}f}" for _, k, d in _COLUMNS)
        return f"{name:>8} {gt:>8} {frames:>6} {cells} {sw:>6}"

    for m in result["matches"]:
        lines.append(row(m["pred"], m["gt"], str(m["frames"]), m, str(m["id_switches"])))
    lines.append(row("mean", "", "", result["mean"], str(result["id_switches"])))
    cam = result["camera"]
    lines.append(f"camera: pitch off by {cam['pitch_err_deg']:.2f} deg, roll by {cam['roll_err_deg']:.2f} deg, "
                 f"height {cam['height_ratio']:.3f} x the truth's")  # fmt: skip
    lines.append(f"missed GT people: {', '.join(result['missed']) or 'none'}; "
                 f"extra predicted people: {', '.join(result['extra']) or 'none'}")  # fmt: skip
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", help="predicted result bundle directory")
    p.add_argument("gt", help="ground-truth result bundle directory (e.g. DIR/bundle from `core synth`)")
    p.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    p.add_argument("--max-match-distance", type=float, default=DEFAULT_MAX_MATCH, metavar="M",
                   help="people whose projected joints lie farther apart than M times the GT person's "
                        f"image size (mean over joints and frames) never match (default {DEFAULT_MAX_MATCH})")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    bundles = []
    for role, path in (("predicted", args.pred), ("ground-truth", args.gt)):
        try:
            bundles.append(bd.read_bundle(path))
        except bd.BundleError as exc:
            print(f"{role} bundle {path}: {len(exc.problems)} problem(s)")
            for line in exc.problems:
                print(f"  {line}")
            return 1
    result = evaluate(bundles[0], bundles[1], max_match_distance=args.max_match_distance)
    result["pred"], result["gt"] = str(args.pred), str(args.gt)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    return 0
