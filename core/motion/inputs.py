"""What the motion stage reads: 2D keypoints, masks and intrinsics, from the people stage or
from a synthetic scene's ground truth (for benchmarks and tests).

All keypoints here are in working pixels (the frames the people stage saw). ``labels`` are the
people stage's label maps (0 = nobody, i+1 = person i), kept at a reduced size for the mask
terms (``label_scale`` = label pixels per working pixel).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..keypoints import foot_keypoints
from ..pipeline import JobError

DEFAULT_HFOV_DEG = 60.0  # a phone's main camera or a camcorder at its wide end (about 28 mm equivalent)
MASK_MAX_SIDE = 256  # longest side of the label maps used by the silhouette and depth-order terms


@dataclass
class MotionInputs:
    ids: list[str]  # P person ids
    keypoints: np.ndarray  # [P, T, 17, 3] COCO-17 x, y (working px), confidence (0 where absent)
    visibility: np.ndarray  # [P, T] float in [0, 1]: how much of the person is seen
    image_size: tuple[int, int]  # (width, height) working pixels
    fps: float
    source_frames: np.ndarray  # [T] source frame index of each frame
    labels: np.ndarray | None = None  # [T, h, w] uint8 reduced label maps, or None
    label_scale: float = 1.0
    focal_px: float | None = None  # known focal length in working pixels (metadata), else None
    foot_keypoints: np.ndarray | None = None  # [P, T, 4, 3] heels and big toes (core.keypoints.FOOT_NAMES), or None

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[1])


def focal_from_hfov(width: int, hfov_deg: float) -> float:
    return (width / 2) / math.tan(math.radians(hfov_deg) / 2)


def intrinsics(image_size: tuple[int, int], focal_px: float, num_frames: int) -> np.ndarray:
    """[T, 3, 3] pinhole K with the principal point at the image centre (pixel centres at .5, as core.bundle)."""
    w, h = image_size
    k = np.array([[focal_px, 0, w / 2], [0, focal_px, h / 2], [0, 0, 1.0]])
    return np.tile(k, (num_frames, 1, 1))


def reduce_labels(maps, max_side: int = MASK_MAX_SIDE) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    """Nearest-neighbour downscale of T label maps [H, W] (a sequence) -> ([T, h, w], scale)."""
    first = np.asarray(maps[0])
    h, w = first.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.stack([cv2.resize(np.asarray(m), size, interpolation=cv2.INTER_NEAREST) for m in maps])
    return out, size[0] / w


def read_people_stage(people_dir: Path | str, ingest_dir: Path | str | None = None) -> MotionInputs:
    """The people stage's folder (``core.people.formats``) as motion inputs."""
    from ..people.formats import PeopleFormatError, read_people

    try:
        res = read_people(people_dir)
    except PeopleFormatError as exc:
        raise JobError(str(exc)) from None
    if res.num_people == 0:
        raise JobError(f"{people_dir}: the people stage found nobody, so there is no motion to fit")
    kps = np.nan_to_num(np.asarray(res.keypoints, np.float64), nan=0.0)
    kps[..., 2] = np.where(np.isfinite(res.keypoints[..., 0]), kps[..., 2], 0.0)
    labels, scale = reduce_labels(res.labels)
    focal = None
    if ingest_dir is not None:
        focal = focal_from_metadata(Path(ingest_dir) / "meta.json")
    return MotionInputs(
        ids=list(res.ids),
        keypoints=kps,
        visibility=np.asarray(res.visibility, np.float64),
        image_size=tuple(res.image_size),
        fps=float(res.fps),
        source_frames=np.asarray(res.source_frames),
        labels=labels,
        label_scale=scale,
        focal_px=focal,
        foot_keypoints=foot_keypoints(res.extra_keypoints, res.extra_keypoint_names),
    )


def focal_from_metadata(meta_path: Path) -> float | None:
    """Focal length in working pixels from ``ingest/meta.json`` when it records one
    (``focal_px`` in source pixels, or ``hfov_deg``), else None."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    scale = float(meta.get("scale", 1.0))
    if meta.get("focal_px"):
        return float(meta["focal_px"]) * scale
    if meta.get("hfov_deg") and meta.get("size"):
        return focal_from_hfov(int(meta["size"][0]), float(meta["hfov_deg"]))
    return None


def degrade_keypoints(xy: np.ndarray, seen: np.ndarray, noise_px: float, drop: float, rng: np.random.Generator) -> np.ndarray:
    """Exact keypoints [..., 2] and where they are ``seen`` [...] -> [..., 3] as a detector would
    give them: Gaussian noise of ``noise_px`` pixels, a fraction ``drop`` of the seen ones lost,
    confidences that fall with the noise drawn (0.5-1), 0 where not seen."""
    xy = np.array(xy, np.float64)
    if noise_px > 0:
        e = rng.normal(size=xy.shape) * noise_px
        xy += e
        conf = np.clip(1.0 - 0.5 * np.linalg.norm(e, axis=-1) / (3 * noise_px), 0.5, 1.0)
    else:
        conf = np.ones(xy.shape[:-1])
    seen = seen & (rng.random(seen.shape) >= drop)
    return np.concatenate([xy, np.where(seen, conf, 0.0)[..., None]], -1)


def read_synth(
    folder: Path | str,
    *,
    noise_px: float = 0.0,
    drop: float = 0.0,
    seed: int = 0,
    masks: bool = True,
    known_focal: bool = True,
) -> MotionInputs:
    """A ``core synth`` scene's 2D ground truth as motion inputs, optionally degraded like a
    detector: Gaussian noise of ``noise_px`` pixels, a fraction ``drop`` of the visible
    keypoints lost, confidences that fall with the noise drawn (0.5-1)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    with np.load(folder / "gt" / "keypoints.npz", allow_pickle=False) as z:
        kps = z["keypoints"].astype(np.float64)
        vis = z["visibility"].astype(np.float64)
        ids = [str(i) for i in z["ids"]]
    meta = json.loads((folder / "bundle" / "bundle.json").read_text())
    size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    kps = degrade_keypoints(kps[..., :2], kps[..., 2] > 0, noise_px, drop, rng)
    labels, scale = None, 1.0
    if masks:
        with np.load(folder / "gt" / "labels.npz", allow_pickle=False) as z:
            labels, scale = reduce_labels(z["labels"])
    focal = None
    if known_focal:
        with np.load(folder / "bundle" / "camera.npz", allow_pickle=False) as z:
            focal = float(z["K"][0, 0, 0])
    return MotionInputs(
        ids=ids,
        keypoints=kps,
        visibility=vis,
        image_size=size,
        fps=float(meta["fps"]),
        source_frames=int(meta.get("frame_start", 0)) + int(meta.get("frame_step", 1)) * np.arange(kps.shape[1]),
        labels=labels,
        label_scale=scale,
        focal_px=focal,
    )
