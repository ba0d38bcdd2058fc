"""A small drawn scene with exact ground truth, in the layout ``python -m core synth`` writes.

Stick-figure people (head, torso, limbs; shirt and trousers of their own colours) walk across a
textured background: two cross (the nearer one occludes the other), one leaves the frame and comes
back. Used by the tests and benchmarks of the people stage where a rendered SMPL-X scene would be
slower than needed: the import backend must reproduce it exactly, and the tracker's identity
logic is exercised on its crossings and re-entries. Not a stand-in for real footage.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# Pose of a standing figure: COCO-17 (x, y) offsets in units of body height, from the point
# between the feet (y up is negative, image convention).
_REST = np.array([
    (0.0, -0.93), (0.02, -0.95), (-0.02, -0.95), (0.045, -0.94), (-0.045, -0.94),
    (0.12, -0.80), (-0.12, -0.80), (0.16, -0.64), (-0.16, -0.64), (0.17, -0.50), (-0.17, -0.50),
    (0.08, -0.50), (-0.08, -0.50), (0.09, -0.27), (-0.09, -0.27), (0.09, -0.03), (-0.09, -0.03),
], np.float32)  # fmt: skip
_LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))


def _figure(kp: np.ndarray, height: float, shirt, trousers, skin, img: np.ndarray, mask: np.ndarray) -> None:
    """Draw one figure with keypoints kp [17, 2] into img (BGR) and mask (uint8 0/1)."""
    th = max(2, int(0.06 * height))
    p = np.round(kp).astype(np.int32)
    torso = np.array([p[5], p[6], p[12], p[11]])
    for target, val in ((img, None), (mask, 1)):
        def col(c, _v=val):
            return c if _v is None else _v

        cv2.fillConvexPoly(target, torso, col(shirt))
        for a, b in _LIMBS:
            c = trousers if a >= 11 else shirt
            cv2.line(target, tuple(p[a]), tuple(p[b]), col(c), th)
        cv2.circle(target, tuple(p[0]), max(2, int(0.07 * height)), col(skin), -1)


def _pose(center_x: float, foot_y: float, height: float, phase: float, facing: float) -> np.ndarray:
    kp = _REST.copy()
    kp[:, 0] *= facing
    swing = 0.06 * np.sin(phase)
    kp[[9, 15], 0] += swing  # left wrist / ankle forward, right ones back
    kp[[10, 16], 0] -= swing
    kp[[7, 13], 0] += swing / 2
    kp[[8, 14], 0] -= swing / 2
    return np.stack([center_x + kp[:, 0] * height, foot_y + kp[:, 1] * height], axis=1)


def make_scene(out: Path | str, frames: int = 48, size: tuple[int, int] = (320, 240), fps: float = 24.0,
               seed: int = 0) -> Path:  # fmt: skip
    """Write ``out/video.mp4`` and ``out/gt/{tracks.json, keypoints.npz, labels.npz}``; returns out."""
    out = Path(out)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([80 + 40 * np.sin(xx / 17.0), 90 + 30 * np.cos(yy / 11.0), 100 + 20 * np.sin((xx + yy) / 23.0)], -1)
    background = np.clip(background + rng.normal(0, 4, background.shape), 0, 255).astype(np.uint8)
    # (start x, end x, foot y, height, shirt, trousers): A walks right, B walks left in front of A,
    # C walks right, leaves the frame and comes back walking left.
    people = [
        dict(x=lambda f: 0.15 * w + 0.6 * w * f, y=0.80 * h, hgt=0.55 * h, shirt=(40, 40, 200), trousers=(90, 60, 30)),
        dict(x=lambda f: 0.85 * w - 0.6 * w * f, y=0.90 * h, hgt=0.60 * h, shirt=(40, 180, 60), trousers=(30, 30, 30)),
        dict(x=lambda f: 0.70 * w + 0.9 * w * np.sin(np.pi * f), y=0.72 * h, hgt=0.45 * h, shirt=(200, 160, 30),
             trousers=(120, 120, 160)),
    ]  # fmt: skip
    n = len(people)
    kps = np.zeros((n, frames, 17, 3), np.float32)
    boxes = np.full((n, frames, 4), np.nan, np.float32)
    visibility = np.zeros((n, frames), np.float32)
    labels = np.zeros((frames, h, w), np.uint8)
    writer = cv2.VideoWriter(str(out / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v videos here")
    order = np.argsort([p["y"] for p in people])  # far (small foot y) first
    for t in range(frames):
        f = t / max(frames - 1, 1)
        img = background.copy()
        full = []
        for i, p in enumerate(people):
            x = float(p["x"](f))
            x_next = float(p["x"](min(f + 1e-3, 1.0)))
            facing = 1.0 if x_next >= x else -1.0
            kp2 = _pose(x, p["y"], p["hgt"], phase=t * 0.5 + i, facing=facing)
            kps[i, t, :, :2] = kp2
            m = np.zeros((h, w), np.uint8)
            _figure(kp2, p["hgt"], p["shirt"], p["trousers"], (150, 180, 220), np.zeros((h, w, 3), np.uint8), m)
            full.append(m)
        for i in order:
            p = people[i]
            _figure(kps[i, t, :, :2], p["hgt"], p["shirt"], p["trousers"], (150, 180, 220), img, np.zeros((h, w), np.uint8))
            labels[t][full[i] > 0] = i + 1
        for i in range(n):
            vis = labels[t] == i + 1
            total = int(full[i].sum())
            visibility[i, t] = vis.sum() / total if total else 0.0
            if vis.any():
                ys, xs = np.nonzero(vis)
                boxes[i, t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            xy = np.round(kps[i, t, :, :2]).astype(int)
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
            own = np.zeros(17, bool)
            own[inside] = cv2.dilate(vis.astype(np.uint8), np.ones((5, 5), np.uint8))[xy[inside, 1], xy[inside, 0]] > 0
            kps[i, t, :, 2] = own
        writer.write(img)
    writer.release()
    (out / "gt" / "tracks.json").write_text(json.dumps({
        "fps": fps, "frame_count": frames, "image_size": [w, h], "keypoint_format": "coco17",
        "people": [{"id": i, "color": list(p["shirt"])} for i, p in enumerate(people)],
    }, indent=1) + "\n")  # fmt: skip
    np.savez_compressed(out / "gt" / "keypoints.npz", keypoints=kps, boxes=boxes, visibility=visibility,
                        ids=np.arange(n))  # fmt: skip
    np.savez_compressed(out / "gt" / "labels.npz", labels=labels)
    return out
