"""The ``people`` stage: track every person (masks, boxes, ids), add 2D keypoints, write ``people/``.

Backends by ``RunConfig.tracker``: ``offline`` (``offline.py``), ``sam2`` (``sam2_backend.py``),
``import`` (``importer.py``). Keypoints by ``RunConfig.keypoints``: ``auto`` uses what the tracker
gave (import ground truth, the offline landmark model), else ViTPose when its weights are there,
else the offline landmark model on the tracked boxes. Stage-specific overrides come from
``RunConfig.extra["people"]`` (keys of ``StageSettings``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..pipeline import JobError, RunConfig, StageContext
from .formats import LabelMaps, PeopleResult, person_color, write_label_map, write_people
from .ingest import Frames
from .manage import ManageSettings, manage
from .tracks import Tracks

log = logging.getLogger("troupe.people")


@dataclass
class StageSettings:
    """``RunConfig.extra["people"]`` overrides (defaults depend on ``quality``)."""

    min_frames: int = 8  # tracks seen on fewer frames are dropped as too short
    min_human: float = 0.5  # tracks with a lower person score are dropped as not human
    overlay: bool = True  # write people/overlay.mp4
    detect_every: int = 0  # sam2: run the detector every n frames (0 = by quality: 10 / 5 / 3)
    sam2_model: str = ""  # sam2: checkpoint file name or size (tiny|small|base_plus|large); "" = by quality
    detector: str = ""  # sam2: transformers detector folder or hub id; "" = default
    vitpose: str = ""  # vitpose: transformers folder or hub id; "" = default
    detect_threshold: float = 0.5  # person detector score threshold

    @classmethod
    def from_config(cls, config: RunConfig) -> StageSettings:
        extra = dict(config.extra.get("people") or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(extra) - names)
        if unknown:
            raise JobError(f"config extra.people: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**extra)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def track(frames: Frames, config: RunConfig, settings: StageSettings, work: Path, progress) -> Tracks:
    if config.tracker == "import":
        from .importer import import_tracks

        return import_tracks(config.tracks, frames.meta)
    if config.tracker == "offline":
        from .offline import track_offline

        return track_offline(frames, config, settings, work, progress)
    if config.tracker == "sam2":
        from .sam2_backend import track_sam2

        return track_sam2(frames, config, settings, work, progress)
    raise JobError(f"unknown tracker {config.tracker!r} (expected sam2, offline or import)")


def add_keypoints(tracks: Tracks, frames: Frames, config: RunConfig, settings: StageSettings, progress) -> str:
    """Fill ``tracks.keypoints`` by ``config.keypoints``; returns the name of the backend used."""
    choice = config.keypoints
    if choice == "import":
        if tracks.keypoints is None:
            raise JobError("--keypoints import needs --tracker import with a `core synth` folder (which has keypoints)")
        return "import"
    if choice == "auto" and tracks.keypoints is not None:
        return "import" if config.tracker == "import" else config.tracker
    if choice == "offline" and tracks.keypoints is not None and config.tracker == "offline":
        return "offline"
    if choice in ("auto", "vitpose"):
        from .vitpose import find_vitpose, vitpose_keypoints

        source = find_vitpose(config, settings, required=choice == "vitpose")
        if source is not None:
            kp, extra, names = vitpose_keypoints(frames, tracks, source, resolve_device(config.device), progress)
            tracks.keypoints, tracks.extra_keypoints, tracks.extra_keypoint_names = kp, extra, names
            return "vitpose"
        log.info("keypoints: no ViTPose weights found, using the offline landmark model")
    if choice not in ("auto", "vitpose", "offline"):
        raise JobError(f"unknown keypoints backend {choice!r} (expected auto, vitpose, offline or import)")
    from .offline import landmark_keypoints

    kp, extra, names = landmark_keypoints(frames, tracks, config, progress)
    tracks.keypoints, tracks.extra_keypoints, tracks.extra_keypoint_names = kp, extra, names
    return "offline"


def run_people(frames: Frames, out: Path, config: RunConfig, progress=lambda f, m="": None) -> PeopleResult:
    """Track, manage, add keypoints and write ``out`` (the people folder); returns the result."""
    settings = StageSettings.from_config(config)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    raw = track(frames, config, settings, work, lambda f, m="": progress(0.7 * f, m))
    if raw.num == 0:
        raise JobError(f"no people found in {frames.meta.source} (tracker {config.tracker})")
    managed = manage(raw, ManageSettings(config.max_people, settings.min_frames, settings.min_human))
    tracks = managed.tracks
    if tracks.num == 0:
        reasons = "; ".join(f"{d['track']}: {d['reason']}" for d in managed.dropped[:5])
        raise JobError(f"no people kept in {frames.meta.source}: every track was dropped ({reasons})")
    kp_backend = add_keypoints(tracks, frames, config, settings, lambda f, m="": progress(0.7 + 0.2 * f, m))
    meta = frames.meta
    for t in range(meta.frame_count):
        write_label_map(out, t, tracks.label_fn(t))
    result = PeopleResult(
        ids=managed.ids, fps=meta.fps, image_size=tuple(meta.size), source_frames=np.asarray(meta.source_frames),
        boxes=tracks.boxes, keypoints=tracks.keypoints, visibility=tracks.visibility, occlusion=tracks.occlusion,
        labels=LabelMaps(out, meta.frame_count, tuple(meta.size)), scores=tracks.scores, extra_keypoints=tracks.extra_keypoints,
        extra_keypoint_names=tracks.extra_keypoint_names, scale=meta.scale,
        colors=[person_color(i) for i in range(tracks.num)], dropped=managed.dropped,
        backends={"tracker": config.tracker, "keypoints": kp_backend},
    )  # fmt: skip
    write_people(out, result, write_masks=False)
    if settings.overlay:
        from .overlay import write_overlay_video

        progress(0.9, "overlay video")
        write_overlay_video(out / "overlay.mp4", frames, result, meta.fps / max(1, config.frame_step),
                            lambda f: progress(0.9 + 0.1 * f, "overlay video"))  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    log.info("people: %d kept (%s), %d dropped; keypoints from %s", tracks.num, ", ".join(managed.ids),
             len(managed.dropped), kp_backend)  # fmt: skip
    return result


def run_stage(ctx: StageContext) -> None:
    frames = Frames(ctx.input_dir("ingest"))
    run_people(frames, ctx.out_dir, ctx.config, ctx.progress)
    ctx.progress(1.0, "people written")
