"""The people stage's output folder: one reader and one writer (the motion and avatar stages read it).

Layout of ``<job>/people/`` (docs/formats.md, "People")::

    people.json     format, version, fps, frame_count T, image_size [w, h] (working pixels),
                    scale (working px per source px), keypoint_format "coco17", keypoint_names,
                    extra_keypoint_names, people [{id, index, color, first_frame, last_frame,
                    frames_visible}], dropped [{reason, frames}], backends {tracker, keypoints}
    tracks.npz      ids (N,) str; source_frames (T,) int64; boxes (N,T,4) float32 x0,y0,x1,y1;
                    keypoints (N,T,17,3) float32 x, y, confidence in [0,1];
                    extra_keypoints (N,T,K,3) float32 (K may be 0); visibility (N,T) bool;
                    occlusion (N,T) float32 in [0,1]; scores (N,T) float32 track confidence
    masks/%06d.png  one uint8 label map per frame (H,W): 0 = nobody, i+1 = person i (tracks.npz order)
    overlay.mp4     debug video: masks, ids, skeletons (not read by anything)

Conventions: coordinates are pixels of the working frames (``ingest/frames``; x right, y down;
pixel (r, c) is the square [c, c+1) x [r, r+1), as everywhere in Troupe: docs/formats.md), so
boxes' x1, y1 are one past the last column / row and source pixel = working pixel / scale. A person absent from
frame t has NaN box and keypoints, confidence 0, visibility False and NaN occlusion. Masks are the
visible (modal) parts, so they never overlap and a label map holds them all; a label PNG of a
1280x720 frame is a few kB and decodes in about a millisecond.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..keypoints import COCO17_NAMES

FORMAT_NAME = "troupe.people"
FORMAT_VERSION = "1.0"
MAX_PEOPLE_IN_LABELS = 254  # label value i+1 must fit uint8 (255 is kept free)
MASK_PATTERN = "masks/{:06d}.png"

# Distinct colours (BGR) for drawing people, also stored in people.json.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
    (240, 240, 70), (230, 50, 240), (60, 245, 210), (212, 190, 250), (128, 128, 0), (255, 190, 220),
    (40, 110, 170), (200, 250, 255), (0, 0, 128), (195, 255, 170), (0, 128, 128), (180, 215, 255),
)  # fmt: skip


def person_color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


class PeopleFormatError(ValueError):
    """A people folder that does not follow the layout above (message names file and field)."""


class LabelMaps(Sequence):
    """Per-frame label maps read lazily from ``masks/%06d.png`` (``maps[t]`` -> uint8 [H, W])."""

    def __init__(self, folder: Path, count: int, size: tuple[int, int]) -> None:
        self.folder = Path(folder)
        self.count = count
        self.size = size  # (w, h)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, t: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= t < self.count:
            raise IndexError(t)
        path = self.folder / MASK_PATTERN.format(t)
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise PeopleFormatError(f"{path}: mask label map missing or unreadable")
        if img.ndim != 2 or img.dtype != np.uint8 or (img.shape[1], img.shape[0]) != tuple(self.size):
            raise PeopleFormatError(
                f"{path}: expected a single-channel uint8 PNG of {self.size[0]}x{self.size[1]}, "
                f"got shape {img.shape} {img.dtype}"
            )
        return img


@dataclass
class PeopleResult:
    """Every tracked person of one job. N people, T frames, K extra keypoints."""

    ids: list[str]  # N stable ids "p0", "p1", ... (order = label value - 1)
    fps: float  # source frame rate
    image_size: tuple[int, int]  # (width, height) of the working frames
    source_frames: np.ndarray  # [T] int64 source frame index of each job frame
    boxes: np.ndarray  # [N, T, 4] float32 x0, y0, x1, y1 working px; NaN when absent
    keypoints: np.ndarray  # [N, T, 17, 3] float32 COCO-17 x, y, confidence; NaN x,y / 0 conf when absent
    visibility: np.ndarray  # [N, T] bool: some of the person is visible in frame t
    occlusion: np.ndarray  # [N, T] float32 fraction of the person hidden (others, frame edge); NaN absent
    labels: Sequence[np.ndarray]  # T label maps uint8 [H, W]: 0 nobody, i+1 person i (array or LabelMaps)
    scores: np.ndarray | None = None  # [N, T] float32 track confidence in [0, 1]
    extra_keypoints: np.ndarray | None = None  # [N, T, K, 3] float32 whole-body extras (hands, feet, face)
    extra_keypoint_names: list[str] = field(default_factory=list)  # K names
    scale: float = 1.0  # working px per source px
    colors: list[tuple[int, int, int]] | None = None  # N BGR drawing colours
    dropped: list[dict[str, Any]] = field(default_factory=list)  # tracks removed, with a "reason"
    backends: dict[str, str] = field(default_factory=dict)  # {"tracker": ..., "keypoints": ...}

    @property
    def num_people(self) -> int:
        return len(self.ids)

    @property
    def num_frames(self) -> int:
        return len(self.source_frames)

    def mask(self, t: int, i: int) -> np.ndarray:
        """Bool [H, W] visible mask of person ``i`` (index into ``ids``) in frame ``t``."""
        return np.asarray(self.labels[t]) == (i + 1)

    def index(self, person_id: str) -> int:
        return self.ids.index(person_id)

    def validate(self) -> None:
        """Raise PeopleFormatError naming the field whose shape or type is wrong."""
        n, t = len(self.ids), len(self.source_frames)
        k = 0 if self.extra_keypoints is None else self.extra_keypoints.shape[2]
        want = {
            "boxes": (self.boxes, (n, t, 4)),
            "keypoints": (self.keypoints, (n, t, len(COCO17_NAMES), 3)),
            "visibility": (self.visibility, (n, t)),
            "occlusion": (self.occlusion, (n, t)),
        }
        if self.scores is not None:
            want["scores"] = (self.scores, (n, t))
        if self.extra_keypoints is not None:
            want["extra_keypoints"] = (self.extra_keypoints, (n, t, k, 3))
        for name, (arr, shape) in want.items():
            if np.shape(arr) != shape:
                raise PeopleFormatError(f"people field '{name}' has shape {np.shape(arr)}, expected {shape}")
        if len(self.extra_keypoint_names) != k:
            raise PeopleFormatError(f"extra_keypoint_names has {len(self.extra_keypoint_names)} names for {k} extra keypoints")
        if len(self.labels) != t:
            raise PeopleFormatError(f"people field 'labels' has {len(self.labels)} frames, expected {t}")
        if n > MAX_PEOPLE_IN_LABELS:
            raise PeopleFormatError(f"{n} people: at most {MAX_PEOPLE_IN_LABELS} fit the uint8 label maps")
        if len(set(self.ids)) != n:
            raise PeopleFormatError(f"people ids are not unique: {self.ids}")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    write(tmp)
    os.replace(tmp, path)


def write_label_map(folder: Path | str, t: int, labels: np.ndarray) -> None:
    """Write frame ``t``'s label map (uint8 [H, W]) into ``folder/masks``."""
    path = Path(folder) / MASK_PATTERN.format(t)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode {path}")
    _atomic_write(path, lambda p: p.write_bytes(buf.tobytes()))


def write_people(folder: Path | str, result: PeopleResult, write_masks: bool = True) -> Path:
    """Write ``result`` into ``folder`` (created). ``write_masks=False`` when the label maps are
    already in ``folder/masks`` (written frame by frame with ``write_label_map``)."""
    result.validate()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, t = result.num_people, result.num_frames
    if write_masks:
        for i in range(t):
            write_label_map(folder, i, np.asarray(result.labels[i]))
    extra = result.extra_keypoints
    if extra is None:
        extra = np.zeros((n, t, 0, 3), np.float32)
    scores = result.scores if result.scores is not None else result.visibility.astype(np.float32)
    arrays = {
        "ids": np.asarray(result.ids, dtype=np.str_).reshape(n),
        "source_frames": np.asarray(result.source_frames, np.int64),
        "boxes": np.asarray(result.boxes, np.float32),
        "keypoints": np.asarray(result.keypoints, np.float32),
        "extra_keypoints": np.asarray(extra, np.float32),
        "visibility": np.asarray(result.visibility, bool),
        "occlusion": np.asarray(result.occlusion, np.float32),
        "scores": np.asarray(scores, np.float32),
    }
    _atomic_write(folder / "tracks.npz", lambda p: np.savez_compressed(p, **arrays))
    colors = result.colors or [person_color(i) for i in range(n)]
    people = []
    for i, pid in enumerate(result.ids):
        frames = np.flatnonzero(result.visibility[i])
        people.append({
            "id": pid,
            "index": i,
            "color": [int(c) for c in colors[i]],
            "first_frame": int(frames[0]) if len(frames) else None,
            "last_frame": int(frames[-1]) if len(frames) else None,
            "frames_visible": len(frames),
        })  # fmt: skip
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fps": float(result.fps),
        "frame_count": t,
        "image_size": [int(result.image_size[0]), int(result.image_size[1])],
        "scale": float(result.scale),
        "keypoint_format": "coco17",
        "keypoint_names": list(COCO17_NAMES),
        "extra_keypoint_names": list(result.extra_keypoint_names),
        "mask_pattern": MASK_PATTERN,
        "people": people,
        "dropped": result.dropped,
        "backends": result.backends,
    }
    _atomic_write(folder / "people.json", lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
    return folder


def read_people(folder: Path | str) -> PeopleResult:
    """Read a people folder; masks stay on disk and load per frame (``result.labels[t]``)."""
    folder = Path(folder)
    jpath, npath = folder / "people.json", folder / "tracks.npz"
    try:
        doc = json.loads(jpath.read_text())
    except FileNotFoundError:
        raise PeopleFormatError(f"{jpath} is missing: not a people folder (run the people stage)") from None
    except ValueError as exc:
        raise PeopleFormatError(f"{jpath}: not valid JSON ({exc})") from None
    if doc.get("format") != FORMAT_NAME:
        raise PeopleFormatError(f"{jpath}: field 'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    major = str(doc.get("version", "")).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise PeopleFormatError(f"{jpath}: version {doc.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    try:
        with np.load(npath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise PeopleFormatError(f"{npath} is missing") from None
    except ValueError as exc:
        raise PeopleFormatError(f"{npath}: unreadable without pickling or damaged ({exc})") from None
    need = ("ids", "source_frames", "boxes", "keypoints", "visibility", "occlusion")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise PeopleFormatError(f"{npath}: missing arrays {missing}")
    try:
        size = (int(doc["image_size"][0]), int(doc["image_size"][1]))
        t = int(doc["frame_count"])
        fps = float(doc["fps"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PeopleFormatError(f"{jpath}: field {exc} missing or malformed (image_size [w,h], frame_count, fps)") from None
    extra = arrays.get("extra_keypoints")
    result = PeopleResult(
        ids=[str(s) for s in arrays["ids"]],
        fps=fps,
        image_size=size,
        source_frames=arrays["source_frames"],
        boxes=arrays["boxes"],
        keypoints=arrays["keypoints"],
        visibility=arrays["visibility"].astype(bool),
        occlusion=arrays["occlusion"],
        labels=LabelMaps(folder, t, size),
        scores=arrays.get("scores"),
        extra_keypoints=extra if extra is not None and extra.shape[2] > 0 else None,
        extra_keypoint_names=list(doc.get("extra_keypoint_names", [])),
        scale=float(doc.get("scale", 1.0)),
        colors=[tuple(p["color"]) for p in doc.get("people", [])] or None,
        dropped=list(doc.get("dropped", [])),
        backends=dict(doc.get("backends", {})),
    )
    if len(result.source_frames) != t:
        raise PeopleFormatError(f"{npath}: source_frames has {len(result.source_frames)} entries, people.json says {t} frames")
    result.validate()
    return result
