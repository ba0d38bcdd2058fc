"""Debug drawings of a people result: tinted masks, boxes, ids and skeletons; video and contact sheet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..keypoints import COCO17_SKELETON
from .formats import PeopleResult, person_color


def draw_frame(img: np.ndarray, result: PeopleResult, t: int, labels: np.ndarray | None = None,
               min_conf: float = 0.3) -> np.ndarray:  # fmt: skip
    """Frame ``t`` (BGR uint8 [H, W, 3]) with every person drawn on it (a new image)."""
    out = img.copy()
    labels = np.asarray(result.labels[t]) if labels is None else labels
    colors = np.array([result.colors[i] if result.colors else person_color(i) for i in range(result.num_people)]
                      + [(0, 0, 0)], np.float32).reshape(-1, 3)  # fmt: skip
    sel = labels > 0
    if sel.any():
        idx = np.minimum(labels[sel].astype(int) - 1, len(colors) - 1)
        out[sel] = (0.45 * out[sel] + 0.55 * colors[idx]).astype(np.uint8)
        edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edges & sel] = colors[np.minimum(labels[edges & sel].astype(int) - 1, len(colors) - 1)]
    thick = max(1, round(max(img.shape[:2]) / 500))
    for i, pid in enumerate(result.ids):
        if not result.visibility[i, t]:
            continue
        c = tuple(int(v) for v in colors[i])
        b = result.boxes[i, t]
        if np.all(np.isfinite(b)):
            cv2.rectangle(out, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), c, thick)
            label = pid if np.isnan(result.occlusion[i, t]) else f"{pid} occ {result.occlusion[i, t]:.1f}"
            scale = 0.4 * thick
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            y = max(int(b[1]), th + 4)
            cv2.rectangle(out, (int(b[0]), y - th - 4), (int(b[0]) + tw + 4, y), c, -1)
            cv2.putText(out, label, (int(b[0]) + 2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                        cv2.LINE_AA)  # fmt: skip
        kp = result.keypoints[i, t]
        ok = (kp[:, 2] >= min_conf) & np.isfinite(kp[:, 0])
        for a, bb in COCO17_SKELETON:
            if ok[a] and ok[bb]:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[bb, 0]), int(kp[bb, 1])), (255, 255, 255),
                         thick + 1, cv2.LINE_AA)  # fmt: skip
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[bb, 0]), int(kp[bb, 1])), c, thick, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(out, (int(kp[j, 0]), int(kp[j, 1])), thick + 1, c, -1, cv2.LINE_AA)
    return out


def write_overlay_video(path: Path | str, frames: Sequence[np.ndarray], result: PeopleResult, fps: float,
                        progress=None) -> Path:  # fmt: skip
    """MPEG-4 (mp4v) video of every frame drawn with ``draw_frame``."""
    path = Path(path)
    w, h = result.image_size
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), max(fps, 1.0), (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write the overlay video {path}")
    try:
        for t in range(result.num_frames):
            writer.write(draw_frame(frames[t], result, t))
            if progress is not None and t % 20 == 0:
                progress(t / result.num_frames)
    finally:
        writer.release()
    tmp.replace(path)
    return path


def contact_sheet(images: list[np.ndarray], columns: int = 3, width: int = 1200,
                  captions: list[str] | None = None) -> np.ndarray:  # fmt: skip
    """Tile images (BGR, same size) into one sheet ``width`` pixels wide."""
    h, w = images[0].shape[:2]
    tw = width // columns
    th = round(h * tw / w)
    rows = (len(images) + columns - 1) // columns
    sheet = np.zeros((rows * th, columns * tw, 3), np.uint8)
    for k, img in enumerate(images):
        small = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        if captions:
            cv2.putText(small, captions[k], (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(small, captions[k], (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = small
    return sheet
