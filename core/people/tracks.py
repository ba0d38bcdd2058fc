"""What every tracking backend hands to track management: raw tracks with per-frame label maps.

A backend returns ``Tracks`` for the job's T frames. Track management (``manage.py``) drops,
orders and renames them; ``stage.py`` then adds 2D keypoints and writes ``formats.PeopleResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..keypoints import COCO17_NAMES

NUM_KP = len(COCO17_NAMES)


@dataclass
class Tracks:
    """N raw tracks over T frames (working-frame pixels)."""

    boxes: np.ndarray  # [N, T, 4] float32 x0, y0, x1, y1; NaN when absent
    visibility: np.ndarray  # [N, T] bool
    occlusion: np.ndarray  # [N, T] float32 in [0, 1]; NaN when absent
    scores: np.ndarray  # [N, T] float32 detection / track confidence
    label_fn: Callable[[int], np.ndarray]  # t -> uint8 [H, W] label map, value i+1 = track i
    names: list[str] = field(default_factory=list)  # N names for the log (backend-specific)
    keypoints: np.ndarray | None = None  # [N, T, 17, 3] x, y, confidence, if the backend gives them
    extra_keypoints: np.ndarray | None = None  # [N, T, K, 3]
    extra_keypoint_names: list[str] = field(default_factory=list)
    human_score: np.ndarray | None = None  # [N] how sure the backend is each track is a person
    keep_all: bool = False  # ground truth / user input: never drop a track as short or not human
    dropped: list[dict[str, Any]] = field(default_factory=list)  # tracks the backend already removed

    @property
    def num(self) -> int:
        return self.boxes.shape[0]

    @property
    def num_frames(self) -> int:
        return self.boxes.shape[1]


def empty_keypoints(n: int, t: int, k: int = NUM_KP) -> np.ndarray:
    kp = np.full((n, t, k, 3), np.nan, np.float32)
    kp[..., 2] = 0.0
    return kp


def mask_box(mask: np.ndarray) -> np.ndarray:
    """[4] x0, y0, x1, y1 (x1, y1 exclusive pixel edges) of a bool [H, W] mask; NaN if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return np.full(4, np.nan, np.float32)
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


def label_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """[n, 4] boxes of labels 1..n in a uint8 [H, W] label map (NaN rows for absent labels)."""
    out = np.full((n, 4), np.nan, np.float32)
    ys, xs = np.nonzero(labels)
    if len(ys) == 0:
        return out
    lab = labels[ys, xs].astype(np.int64) - 1
    ok = lab < n
    ys, xs, lab = ys[ok], xs[ok], lab[ok]
    for i in np.unique(lab):
        sel = lab == i
        out[i] = (xs[sel].min(), ys[sel].min(), xs[sel].max() + 1, ys[sel].max() + 1)
    return out
