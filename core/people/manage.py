"""Track management after any backend: drop short / non-human tracks (with a reason), keep at most
``max_people``, order the rest by first appearance and name them ``p0``, ``p1``, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .tracks import Tracks

log = logging.getLogger("troupe.people")


@dataclass
class ManageSettings:
    max_people: int = 8  # keep at most this many tracks (most visible frames, least occluded)
    min_frames: int = 8  # a track seen on fewer frames is dropped as too short (scaled down for short clips)
    min_human: float = 0.5  # a track whose human score is lower is dropped as not a person


@dataclass
class Managed:
    tracks: Tracks  # kept tracks, in output order
    ids: list[str]  # "p0", "p1", ...
    remap: np.ndarray  # [256] uint8: raw label value -> output label value (0 = dropped)
    kept: np.ndarray  # [M] raw index of each kept track
    dropped: list[dict]


def manage(tracks: Tracks, settings: ManageSettings) -> Managed:
    t = tracks.num_frames
    visible = tracks.visibility.sum(axis=1)
    dropped: list[dict] = list(tracks.dropped)
    alive = visible > 0
    for i in np.flatnonzero(~alive):
        dropped.append({"track": tracks.names[i] if tracks.names else str(i), "frames": 0, "reason": "never visible"})
    if not tracks.keep_all:
        min_frames = max(1, min(settings.min_frames, t // 4))
        for i in np.flatnonzero(alive & (visible < min_frames)):
            alive[i] = False
            dropped.append({"track": _name(tracks, i), "frames": int(visible[i]),
                            "reason": f"too short: seen on {int(visible[i])} frames (< {min_frames})"})  # fmt: skip
        if tracks.human_score is not None:
            for i in np.flatnonzero(alive & (tracks.human_score < settings.min_human)):
                alive[i] = False
                dropped.append({"track": _name(tracks, i), "frames": int(visible[i]),
                                "reason": f"not human: person score {tracks.human_score[i]:.2f} (< {settings.min_human})"})  # fmt: skip
    occ = np.nan_to_num(tracks.occlusion, nan=1.0)
    weight = (tracks.visibility * (1.0 - 0.5 * occ)).sum(axis=1)
    cand = [i for i in np.argsort(-weight, kind="stable") if alive[i]]
    for i in cand[settings.max_people:]:
        alive[i] = False
        dropped.append({"track": _name(tracks, i), "frames": int(visible[i]),
                        "reason": f"over max_people={settings.max_people}: less visible than the kept tracks"})  # fmt: skip
    keep = np.flatnonzero(alive)
    first = np.array([np.flatnonzero(tracks.visibility[i])[0] for i in keep], int)
    if not tracks.keep_all and len(keep):
        x0 = np.array([tracks.boxes[i, f, 0] for i, f in zip(keep, first)])
        keep = keep[np.lexsort((x0, first))]
    for d in dropped:
        log.info("people: dropped track %s (%d frames): %s", d["track"], d["frames"], d["reason"])
    remap = np.zeros(256, np.uint8)
    for new, old in enumerate(keep):
        remap[old + 1] = new + 1
    sub = Tracks(
        boxes=tracks.boxes[keep], visibility=tracks.visibility[keep], occlusion=tracks.occlusion[keep],
        scores=tracks.scores[keep], label_fn=lambda ti: remap[tracks.label_fn(ti)],
        names=[_name(tracks, i) for i in keep],
        keypoints=None if tracks.keypoints is None else tracks.keypoints[keep],
        extra_keypoints=None if tracks.extra_keypoints is None else tracks.extra_keypoints[keep],
        extra_keypoint_names=tracks.extra_keypoint_names,
        human_score=None if tracks.human_score is None else tracks.human_score[keep],
        keep_all=tracks.keep_all,
    )  # fmt: skip
    ids = [f"p{k}" for k in range(len(keep))]
    return Managed(sub, ids, remap, keep, dropped)


def _name(tracks: Tracks, i: int) -> str:
    return tracks.names[i] if tracks.names else str(i)
