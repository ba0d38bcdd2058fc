"""The ``import`` tracking backend: the user's own masks, or the ground truth of ``python -m core synth``.

Accepted layouts of ``--tracks DIR`` (file names hold the *source* frame index as an integer,
e.g. ``000012.png`` or ``12.png``; a frame without a file has nobody in it):

1. Synthetic ground truth (``python -m core synth`` output)::

       DIR/gt/tracks.json     {fps, frame_count, image_size [w, h], keypoint_format "coco17",
                               people [{id, color}]}
       DIR/gt/keypoints.npz   keypoints (N,T,17,3) x, y, visible-flag; boxes (N,T,4) NaN when
                              absent; visibility (N,T); ids (N,)
       DIR/gt/labels.npz      labels (T,H,W) uint8: 0 background, i+1 person i

   Keypoints come along (``--keypoints auto`` uses them), with confidence 1 where the flag is set.

2. One folder per person (SAM 2's ``--per_obj_png_file`` output has this shape)::

       DIR/<person>/<frame>.png    non-zero pixels = that person's mask

3. One label PNG per frame (SAM 2 / DAVIS style, palette or grey)::

       DIR/<frame>.png             pixel value v > 0 = person v (value 255 is ignored)

Masks of another size than the working frames are resized (nearest); when two per-person masks
claim a pixel, the later person (in folder-name order) keeps it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..pipeline import JobError
from .ingest import IngestMeta
from .tracks import Tracks, empty_keypoints, label_boxes

log = logging.getLogger("troupe.people")


def _frame_number(path: Path) -> int | None:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else None


def _pngs(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.glob("*.png")):
        n = _frame_number(p)
        if n is not None:
            out[n] = p
    return out


def _read_png(path: Path) -> np.ndarray:
    """Integer [H, W] of a mask / label PNG. Pillow keeps palette indices (OpenCV would expand
    them to colours); a colour PNG becomes grey, so any non-black pixel is non-zero."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im if im.mode in ("P", "L", "I", "I;16", "1") else im.convert("L"))
    except OSError as exc:
        raise JobError(f"cannot read mask {path} (corrupt or not a PNG: {exc})") from None
    return arr.astype(np.int64)


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (labels.shape[1], labels.shape[0]) == tuple(size):
        return labels
    return cv2.resize(labels.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)


class _Source:
    """Common part: N people, label maps by source frame, boxes from the masks."""

    def __init__(self, names: list[str], label_at, meta: IngestMeta) -> None:
        self.names = names
        self.label_at = label_at  # source frame -> int label map in any size (0 = nobody, i+1 person i)
        self.meta = meta

    def label_fn(self, t: int) -> np.ndarray:
        lab = self.label_at(self.meta.source_frames[t])
        if lab is None:
            return np.zeros((self.meta.size[1], self.meta.size[0]), np.uint8)
        lab = np.where((lab > 0) & (lab <= len(self.names)), lab, 0).astype(np.uint8)
        return _resize_labels(lab, tuple(self.meta.size))

    def tracks(self) -> Tracks:
        n, t = len(self.names), self.meta.frame_count
        boxes = np.full((n, t, 4), np.nan, np.float32)
        for i in range(t):
            boxes[:, i] = label_boxes(self.label_fn(i), n)
        vis = np.isfinite(boxes[..., 0])
        return Tracks(
            boxes=boxes, visibility=vis, occlusion=np.where(vis, 0.0, np.nan).astype(np.float32),
            scores=vis.astype(np.float32), label_fn=self.label_fn, names=self.names, keep_all=True,
        )  # fmt: skip


def _synth(root: Path, meta: IngestMeta) -> Tracks:
    gt = root / "gt"
    try:
        info = json.loads((gt / "tracks.json").read_text())
        with np.load(gt / "keypoints.npz", allow_pickle=False) as z:
            kp, boxes, visibility = z["keypoints"], z["boxes"], z["visibility"]
        with np.load(gt / "labels.npz", allow_pickle=False) as z:
            labels = z["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise JobError(
            f"{gt}: not a readable synthetic ground truth (tracks.json, keypoints.npz with keypoints/boxes/"
            f"visibility, labels.npz with labels expected): {exc}"
        ) from None
    n, t_gt = kp.shape[:2]
    if kp.shape[2:] != (17, 3) or boxes.shape != (n, t_gt, 4) or labels.shape[0] != t_gt:
        raise JobError(
            f"{gt}: keypoints {kp.shape}, boxes {boxes.shape}, labels {labels.shape} do not agree "
            "(expected (N,T,17,3), (N,T,4), (T,H,W))"
        )
    gt_w, gt_h = int(info.get("image_size", [labels.shape[2], labels.shape[1]])[0]), int(labels.shape[1])
    sx, sy = meta.size[0] / gt_w, meta.size[1] / gt_h
    if abs(sx - meta.scale) > 1e-3 and abs(sx - 1.0) > 1e-3:
        log.warning("import: ground truth is %dx%d, working frames %dx%d", gt_w, gt_h, *meta.size)
    names = [str(p.get("id", i)) for i, p in enumerate(info.get("people", []))] or [str(i) for i in range(n)]
    src = _Source(names, lambda f: labels[f] if 0 <= f < t_gt else None, meta)
    tracks = src.tracks()
    frames = np.asarray(meta.source_frames)
    inside = frames < t_gt
    sel = np.where(inside, frames, 0)
    vis_gt = np.asarray(visibility, np.float32)[:, sel] * inside
    tracks.visibility = (vis_gt > 0) & tracks.visibility
    scale = np.array([sx, sy, sx, sy], np.float32)
    b = boxes[:, sel].astype(np.float32) * scale
    tracks.boxes = np.where(tracks.visibility[..., None], b, np.nan).astype(np.float32)
    k = empty_keypoints(n, len(frames))
    xy = kp[:, sel][..., :2].astype(np.float32) * scale[:2]
    flag = (kp[:, sel][..., 2] > 0) & tracks.visibility[..., None]
    k[..., :2] = np.where(tracks.visibility[..., None, None], xy, np.nan)
    k[..., 2] = flag.astype(np.float32)
    tracks.keypoints = k
    # `core synth` stores the visible fraction of each body (docs/formats.md); a 0/1 flag gives no
    # ratio, and then the share of keypoints flagged hidden stands in for it.
    fraction = np.issubdtype(visibility.dtype, np.floating) and np.any((vis_gt > 0) & (vis_gt < 1))
    occ = 1.0 - vis_gt if fraction else 1.0 - flag.mean(axis=2)
    tracks.occlusion = np.where(tracks.visibility, occ, np.nan).astype(np.float32)
    tracks.scores = tracks.visibility.astype(np.float32)
    log.info("import: synthetic ground truth %s, %d people", gt, n)
    return tracks


def _per_person(root: Path, folders: list[Path], meta: IngestMeta) -> Tracks:
    files = [_pngs(f) for f in folders]

    def label_at(frame: int) -> np.ndarray | None:
        out = None
        for i, fs in enumerate(files):
            if frame in fs:
                m = _read_png(fs[frame]) > 0
                if out is None:
                    out = np.zeros(m.shape, np.int64)
                if m.shape != out.shape:
                    raise JobError(f"{fs[frame]}: mask is {m.shape[1]}x{m.shape[0]}, others of frame {frame} are "
                                   f"{out.shape[1]}x{out.shape[0]}")  # fmt: skip
                out[m] = i + 1
        return out

    log.info("import: %d per-person mask folders in %s", len(folders), root)
    return _Source([f.name for f in folders], label_at, meta).tracks()


def _label_pngs(root: Path, files: dict[int, Path], meta: IngestMeta) -> Tracks:
    values: set[int] = set()
    for p in files.values():
        values.update(int(v) for v in np.unique(_read_png(p)))
    values -= {0, 255}
    objs = sorted(values)
    if not objs:
        raise JobError(f"{root}: the label PNGs contain no person (all pixels 0)")
    lut = np.zeros(max(max(objs), 255) + 1, np.int64)
    for i, v in enumerate(objs):
        lut[v] = i + 1

    def label_at(frame: int) -> np.ndarray | None:
        return lut[_read_png(files[frame])] if frame in files else None

    log.info("import: label PNGs in %s, objects %s", root, objs)
    return _Source([str(v) for v in objs], label_at, meta).tracks()


def import_tracks(path: str | Path | None, meta: IngestMeta) -> Tracks:
    """Tracks from ``path`` in one of the layouts of this module's docstring."""
    if not path:
        raise JobError("tracker 'import' needs --tracks DIR (a masks folder or a `core synth` output)")
    root = Path(path)
    if not root.is_dir():
        raise JobError(f"--tracks {root}: folder not found")
    if (root / "gt" / "tracks.json").is_file():
        return _synth(root, meta)
    folders = sorted((d for d in root.iterdir() if d.is_dir() and _pngs(d)), key=lambda d: d.name)
    if folders:
        return _per_person(root, folders, meta)
    files = _pngs(root)
    if files:
        return _label_pngs(root, files, meta)
    raise JobError(
        f"--tracks {root}: no known layout (expected gt/tracks.json from `core synth`, per-person folders of "
        "<frame>.png masks, or <frame>.png label maps; see docs/people.md)"
    )
