"""The ``offline`` people backend: MediaPipe's bundled BlazePose models + our own tracker, on the CPU.

Per frame: every person tracked at the previous frame gets a ROI from its own landmarks (as
MediaPipe does between detections); the BlazePose detector runs on the whole frame every frame and
on a pyramid of overlapping tiles every ``detect_every`` frames (small, far people), and adds ROIs
for people no track covers. The landmark model gives 33 landmarks and a person segmentation per
ROI; overlapping masks are resolved nearest-first (lower feet = nearer to the camera).
Observations are matched to tracks with the Hungarian method on box overlap with the
motion-predicted box and appearance (colour histograms of the upper and lower body). After the
pass, tracklets that do not overlap in time are stitched when their appearance agrees and the
jump is plausible: that is what keeps identities across occlusions and exits / re-entries.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..pipeline import RunConfig
from .blazepose import (
    COCO_FROM_BLAZEPOSE,
    EXTRA_FROM_BLAZEPOSE,
    NUM_LANDMARKS,
    LandmarkModel,
    Landmarks,
    PoseDetector,
    box_intersection,
    box_iou,
)
from .ingest import Frames
from .mediapipe_models import find_models
from .tracks import Tracks, empty_keypoints

log = logging.getLogger("troupe.people")

MAX_RAW_TRACKS = 254  # track i is label value i + 1 in uint8 label maps
# A tracklet may take over from another this many frames before that one ends: where the landmarks
# lose a person in a fast move (a deep bend), detection starts a new track on them while the old
# one still holds a part of the body for a frame or two.
HANDOVER_FRAMES = 3
MIN_PRESENCE = 0.5  # landmark model's person score below which a ROI holds nobody
DETECT_EVERY = {"preview": 10, "standard": 5, "high": 2}  # tile-pyramid detection period per quality


class Models:
    def __init__(self, weights_dir: str | None) -> None:
        files = find_models(weights_dir)
        self.detector = PoseDetector(files["pose_detection.tflite"])
        self.landmarks = LandmarkModel(files["pose_landmark_full.tflite"])


# ----------------------------------------------------------------------------------------------
# appearance


def appearance(img: np.ndarray, mask: np.ndarray, region: tuple[int, int, int, int], split_y: float) -> np.ndarray:
    """[2, 48] L1-normalised hue x saturation histograms of the masked pixels above / below split_y
    (image row of the hips). mask is bool [h, w] over region (x, y, w, h)."""
    x, y, w, h = region
    hsv = cv2.cvtColor(img[y:y + h, x:x + w], cv2.COLOR_BGR2HSV)
    out = np.zeros((2, 48), np.float32)
    cut = int(np.clip(split_y - y, 0, h))
    for k, rows in enumerate((slice(0, cut), slice(cut, h))):
        m = mask[rows].astype(np.uint8)
        if m.sum() < 20:
            continue
        hist = cv2.calcHist([hsv[rows]], [0, 1], m, [12, 4], [0, 180, 0, 256]).reshape(-1)
        out[k] = hist / max(hist.sum(), 1e-6)
    return out


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest Hellinger distance over the parts (upper, lower body) both histograms have, in
    [0, 1] (1 when nothing to compare): two people in the same trousers still differ by the shirt."""
    d = [math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(a[k] * b[k])))))
         for k in range(2) if a[k].sum() > 0 and b[k].sum() > 0]  # fmt: skip
    return max(d) if d else 1.0


# ----------------------------------------------------------------------------------------------
# per-frame observations


@dataclass
class Obs:
    lm: Landmarks
    box: np.ndarray  # [4] visible extent (mask and landmarks), image px
    region: tuple[int, int, int, int]  # x, y, w, h of prob
    prob: np.ndarray | None  # [h, w] float16 person probability (None once resolved)
    from_track: int | None  # the track whose ROI produced it
    mask: np.ndarray | None = None  # [h, w] bool final (visible) mask
    hist: np.ndarray | None = None
    occlusion: float = 0.0
    track: int = -1


def _region(roi: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    cx, cy, size, _ = roi
    half = size * 0.71  # covers the rotated square
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(w, int(math.ceil(cx + half))), min(h, int(math.ceil(cy + half)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _observe(img: np.ndarray, models: Models, roi, from_track: int | None) -> Obs | None:
    lm = models.landmarks(img, roi)
    if lm.presence < MIN_PRESENCE or roi[2] < 16:
        return None
    h, w = img.shape[:2]
    region = _region(roi, w, h)
    if region[2] == 0 or region[3] == 0:
        return None
    if not plausible_pose(lm.points):
        return None
    prob = lm.mask_in(region)
    m = prob > 0.5
    if m.sum() < 30:
        return None
    ys, xs = np.nonzero(m)
    # the mask must be about the skeleton's extent (on empty floor the model spills everywhere)
    lb = lm.box()
    pad = 0.2 * max(lb[2] - lb[0], lb[3] - lb[1])
    near = ((xs + region[0] >= lb[0] - pad) & (xs + region[0] <= lb[2] + pad)
            & (ys + region[1] >= lb[1] - pad) & (ys + region[1] <= lb[3] + pad))  # fmt: skip
    if near.mean() < 0.85:
        return None
    box = np.array([xs.min() + region[0], ys.min() + region[1], xs.max() + 1 + region[0], ys.max() + 1 + region[1]],
                   np.float32)  # fmt: skip
    return Obs(lm, box, region, prob.astype(np.float16), from_track)


def plausible_pose(points: np.ndarray) -> bool:
    """BlazePose landmarks [>=33, 3] of a standing, walking, running or dancing person: torso within
    60 degrees of upright, shoulders above the knees. Rejects most hallucinations on empty floor
    and objects; loses frames of cartwheels and people lying down (detection finds them again)."""
    sh = (points[11, :2] + points[12, :2]) / 2
    hip = (points[23, :2] + points[24, :2]) / 2
    knee = (points[25, :2] + points[26, :2]) / 2
    torso = sh - hip
    n = float(np.hypot(*torso))
    return n > 1.0 and -torso[1] / n > 0.5 and sh[1] < knee[1]


def _hip_centre(o: Obs) -> np.ndarray:
    return o.lm.points[33, :2]


def _same_person(a: Obs, b: Obs) -> bool:
    pa, pb = a.lm.points[:NUM_LANDMARKS, :2], b.lm.points[:NUM_LANDMARKS, :2]
    scale = max(a.box[2] - a.box[0], a.box[3] - a.box[1], 1.0)
    return float(np.median(np.linalg.norm(pa - pb, axis=1))) < 0.12 * scale


def _tiles(w: int, h: int, quality: str) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles at two scales (the detector sees 224 px: far people need zoom)."""
    out = []
    sizes = [min(w, h)] + ([min(w, h) // 2] if quality != "preview" else [])
    for s in sizes:
        if s < 160 or s >= max(w, h) and s == min(w, h) == max(w, h):
            continue
        step = max(1, s // 2)
        xs = list(range(0, max(1, w - s + 1), step)) + ([w - s] if (w - s) % step else [])
        ys = list(range(0, max(1, h - s + 1), step)) + ([h - s] if (h - s) % step else [])
        out += [(x, y, s, s) for y in sorted(set(ys)) for x in sorted(set(xs))]
    return out


def _resolve_masks(obs: list[Obs], h: int, w: int) -> np.ndarray:
    """Label map [h, w] uint8 (value k+1 = obs k), nearest person first; fills obs[k].mask / occlusion."""
    labels = np.zeros((h, w), np.uint8)
    order = sorted(range(len(obs)), key=lambda k: -obs[k].box[3])
    for k in order:
        o = obs[k]
        x, y, rw, rh = o.region
        want = o.prob > 0.5
        free = labels[y:y + rh, x:x + rw] == 0
        got = want & free
        labels[y:y + rh, x:x + rw][got] = k + 1
        o.mask = got
        pts = o.lm.points[:NUM_LANDMARKS, :2]
        inside = np.mean((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h))
        o.occlusion = float(np.clip(1.0 - got.sum() / max(want.sum(), 1) * inside, 0.0, 1.0))
        if got.any():
            ys, xs = np.nonzero(got)
            o.box = np.array([xs.min() + x, ys.min() + y, xs.max() + 1 + x, ys.max() + 1 + y], np.float32)
    return labels


# ----------------------------------------------------------------------------------------------
# tracking


@dataclass
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)
    obs: list[int] = field(default_factory=list)  # index of its observation in each of those frames
    box: np.ndarray | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    hist: np.ndarray | None = None
    hist_n: int = 0
    last_obs: Obs | None = None
    first_box: np.ndarray | None = None
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> box

    def predict(self, t: int) -> np.ndarray:
        return self.box + self.velocity * (t - self.frames[-1])

    def update(self, t: int, k: int, o: Obs) -> None:
        if self.box is None:
            self.first_box = o.box.copy()
        else:
            dt = t - self.frames[-1]
            self.velocity = 0.6 * self.velocity + 0.4 * (o.box - self.box) / max(dt, 1)
        self.frames.append(t)
        self.obs.append(k)
        self.box = o.box.copy()
        self.boxes[t] = self.box
        self.last_obs = o
        if o.hist is not None and o.hist.sum() > 0 and o.occlusion < 0.5:
            self.hist = o.hist if self.hist is None else (self.hist * self.hist_n + o.hist) / (self.hist_n + 1)
            self.hist_n = min(self.hist_n + 1, 30)


def _associate(tracks: list[_Track], obs: list[Obs], t: int, max_gap: int, max_app: float = 0.6) -> list[tuple[int, int]]:
    """(observation, track) pairs for frame t: Hungarian on 1 - IoU with the motion-predicted box
    + 0.8 x appearance distance, a bonus for the track whose own ROI found the observation. Never
    paired: no overlap (unless the track's ROI found it), a height change beyond 2x, or clearly
    another person's look (``max_app``, once the track has a few frames of appearance): in a crowd
    the landmark model drifts to the neighbour, and that must end the track, not take it along."""
    live = [i for i, tr in enumerate(tracks) if t - tr.frames[-1] <= max_gap]
    if not live or not obs:
        return []
    cost = np.full((len(obs), len(live)), 1e6)
    for a, o in enumerate(obs):
        for b, i in enumerate(live):
            tr = tracks[i]
            pred = tr.predict(t)
            iou = box_iou(o.box, pred)
            if iou < 0.1 and o.from_track != tr.id:
                continue
            ratio = (o.box[3] - o.box[1]) / max(pred[3] - pred[1], 1.0)
            if not 0.5 <= ratio <= 2.0:
                continue
            app = appearance_distance(o.hist, tr.hist) if tr.hist is not None and o.hist is not None else 0.5
            if app > max_app and tr.hist_n >= 3:
                continue
            cost[a, b] = (1.0 - iou) + 0.8 * app - (0.3 if o.from_track == tr.id else 0.0)
    r, c = linear_sum_assignment(cost)
    return [(int(a), live[b]) for a, b in zip(r, c) if cost[a, b] < 1e5]


def _stitch(tracks: list[_Track], size: tuple[int, int], fps: float, max_app: float = 0.35,
            max_app_near: float = 0.5) -> list[list[int]]:  # fmt: skip
    """Chains of tracklets (indices) that are one person: no overlap in time (but a hand-over,
    ``_handover``), similar appearance, and a possible way from one piece to the next: within
    walking pace of where it was lost, or, for someone who left the frame, back in at any edge.
    After a short gap (< 2 s) close in space the appearance may differ more (``max_app_near``:
    lighting changes behind a tree, a turn), otherwise it must agree (``max_app``). Greedy, most
    similar pairs first."""
    w, h = size
    diag = math.hypot(w, h)
    margin = 0.03 * diag

    def at_edge(b: np.ndarray) -> bool:
        return b[0] <= margin or b[1] <= margin or b[2] >= w - margin or b[3] >= h - margin

    def link(a: int, b: int) -> float | None:  # tracklet b follows a: the appearance limit, or None
        ta, tb = tracks[a], tracks[b]
        gap = tb.frames[0] - ta.frames[-1]
        if gap <= 0:
            return max_app_near if _handover(ta, tb) else None
        jump = float(np.linalg.norm((ta.box[:2] + ta.box[2:]) / 2 - (tb.first_box[:2] + tb.first_box[2:]) / 2))
        if jump <= 0.05 * diag + gap * 0.01 * diag:  # walking pace: across the frame in about 3 s
            return max_app_near if gap < 2 * fps else max_app
        if gap >= fps and at_edge(ta.box) and at_edge(tb.first_box):
            return max_app  # out of the frame and back in somewhere else
        return None

    def chain_hist(chain: list[int]) -> np.ndarray:
        return sum(tracks[i].hist * tracks[i].hist_n for i in chain) / sum(tracks[i].hist_n for i in chain)

    with_hist = [i for i, tr in enumerate(tracks) if tr.hist is not None]
    cands = []
    for a in with_hist:
        for b in with_hist:
            limit = link(a, b)
            d = appearance_distance(tracks[a].hist, tracks[b].hist) if limit is not None else 1.0
            if limit is not None and d <= limit:
                cands.append((d, a, b))
    owner = {i: [i] for i in range(len(tracks))}
    for _, a, b in sorted(cands):
        if owner[a] is owner[b]:
            continue
        merged = sorted(owner[a] + owner[b], key=lambda i: tracks[i].frames[0])
        limits = [link(x, y) for x, y in zip(merged, merged[1:])]
        if any(lim is None for lim in limits):
            continue  # overlapping in time, or an implausible jump somewhere in the merged chain
        if appearance_distance(chain_hist(owner[a]), chain_hist(owner[b])) > max(limits):
            continue
        for i in merged:
            owner[i] = merged
    chains = {id(c): c for c in owner.values()}
    return sorted(chains.values(), key=lambda c: tracks[c[0]].frames[0])


def _handover(ta: _Track, tb: _Track) -> bool:
    """Tracklet ``tb`` takes over from ``ta``, one person seen twice for a moment: it starts after
    ``ta`` starts, at most ``HANDOVER_FRAMES`` frames before ``ta`` ends, outlives it, and on every
    frame they share one's box lies (almost) inside the other's."""
    shared = sorted(set(ta.frames) & set(tb.frames))
    if not shared or len(shared) > HANDOVER_FRAMES or tb.frames[0] <= ta.frames[0] or tb.frames[-1] <= ta.frames[-1]:
        return False
    if shared != [t for t in tb.frames if t <= ta.frames[-1]]:
        return False
    return all(t in ta.boxes and t in tb.boxes and _containment(ta.boxes[t], tb.boxes[t]) > 0.8 for t in shared)


def _containment(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the smaller of boxes a, b [4] (x0, y0, x1, y1) that lies inside the other."""
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(box_intersection(a, b) / small) if small > 0 else 0.0


def track_offline(frames: Frames, config: RunConfig, settings, work: Path, progress) -> Tracks:
    models = Models(config.weights_dir)
    meta = frames.meta
    w, h = meta.size
    T = len(frames)
    fps = meta.fps / max(1, config.frame_step)
    every = settings.detect_every or DETECT_EVERY.get(config.quality, 5)
    tiles = _tiles(w, h, config.quality)
    tracks: list[_Track] = []
    per_frame: list[list[Obs]] = []
    max_gap = max(2, int(0.3 * fps))
    for t in range(T):
        img = frames[t]
        obs: list[Obs] = []
        for tr in tracks:  # follow people seen on the previous frame
            if tr.frames[-1] == t - 1:
                roi = tr.last_obs.lm.next_roi()
                if not 0.6 < roi[2] / tr.last_obs.lm.roi[2] < 1.6 or roi[2] > 1.5 * max(w, h):
                    continue  # the landmarks lost the person (ROI jumps in size): leave it to detection
                o = _observe(img, models, roi, tr.id)
                if o is not None:
                    obs.append(o)
        dets = models.detector(img)
        if t % every == 0:
            for region in tiles:  # the landmark model checks each ROI, so a low threshold costs little
                dets += models.detector(img, region, min_score=0.3)
        for d in sorted(dets, key=lambda d: -d.score):
            roi = d.roi()
            hip = np.array(roi[:2])
            if any(np.linalg.norm(_hip_centre(o) - hip) < 0.2 * roi[2] for o in obs):
                continue
            o = _observe(img, models, roi, None)
            if o is not None and not any(_same_person(o, p) for p in obs):
                obs.append(o)
        # duplicates (two ROIs on one person): keep the one a track produced, else the surer one
        obs.sort(key=lambda o: (o.from_track is None, -o.lm.presence))
        uniq: list[Obs] = []
        for o in obs:
            if not any(_same_person(o, p) or box_iou(o.box, p.box) > 0.7 for p in uniq):
                uniq.append(o)
        obs = uniq
        labels = _resolve_masks(obs, h, w)
        keep = []
        for k, o in enumerate(obs):
            if o.mask.sum() < 30 or o.mask.sum() < 0.25 * (o.prob > 0.5).sum():
                continue  # (almost) all of it belongs to a nearer person: a duplicate, or hidden
            hip_y = float(np.mean(o.lm.points[[23, 24], 1]))
            o.hist = appearance(img, o.mask, o.region, hip_y)
            keep.append(k)
        if len(keep) != len(obs):
            lut = np.zeros(256, np.uint8)
            for new, k in enumerate(keep):
                lut[k + 1] = new + 1
            labels = lut[labels]
            obs = [obs[k] for k in keep]
        for a, i in _associate(tracks, obs, t, max_gap):
            obs[a].track = i
        for k, o in enumerate(obs):
            if o.track < 0:
                tracks.append(_Track(id=len(tracks)))
                o.track = len(tracks) - 1
            tracks[o.track].update(t, k, o)
            o.prob = o.mask = o.lm.seg = None  # free memory: the label map keeps the final mask
        cv2.imwrite(str(work / f"obs_{t:06d}.png"), labels)
        per_frame.append(obs)
        progress(0.95 * (t + 1) / T, f"frame {t + 1}/{T}: {len(obs)} people")
    chains = _stitch(tracks, (w, h), fps)
    log.info("offline: %d tracklets stitched into %d tracks", len(tracks), len(chains))
    dropped = []
    if len(chains) > MAX_RAW_TRACKS:  # label maps hold 254 tracks: keep the longest
        chains.sort(key=lambda c: -sum(len(tracks[i].frames) for i in c))
        dropped = [{"track": f"tracklets {'+'.join(map(str, c))}", "frames": sum(len(tracks[i].frames) for i in c),
                    "reason": f"more than {MAX_RAW_TRACKS} tracks: one of the shortest"} for c in chains[MAX_RAW_TRACKS:]]  # fmt: skip
        chains = sorted(chains[:MAX_RAW_TRACKS], key=lambda c: tracks[c[0]].frames[0])
    out = _to_tracks(chains, tracks, per_frame, T, work)
    out.dropped = dropped
    return out


def _keypoints_from(lm: Landmarks, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    pts = lm.points
    conf = pts[:, 2] * lm.presence
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    conf = np.where(inside, conf, conf * 0.3)
    full = np.concatenate([pts[:, :2], conf[:, None]], 1)
    return full[list(COCO_FROM_BLAZEPOSE)], full[list(EXTRA_FROM_BLAZEPOSE.values())]


def human_score(kp: np.ndarray) -> float:
    """How much a track's keypoints [F, 17, 3] look like a person: mean confidence, halved when the
    torso is more than 50 degrees from upright on most frames (false detections on objects tend to
    lie flat; so does a person lying down for a whole clip, who then needs confident keypoints)."""
    if len(kp) == 0:
        return 0.0
    conf = float(np.mean(kp[..., 2]))
    torso = (kp[:, 5, :2] + kp[:, 6, :2]) / 2 - (kp[:, 11, :2] + kp[:, 12, :2]) / 2
    upright = -torso[:, 1] / np.maximum(np.linalg.norm(torso, axis=1), 1e-6)
    return conf if float(np.median(upright)) > math.cos(math.radians(50)) else 0.5 * conf


def _to_tracks(chains: list[list[int]], tracks: list[_Track], per_frame: list[list[Obs]], T: int, work: Path) -> Tracks:
    n = len(chains)
    boxes = np.full((n, T, 4), np.nan, np.float32)
    vis = np.zeros((n, T), bool)
    occ = np.full((n, T), np.nan, np.float32)
    scores = np.zeros((n, T), np.float32)
    kp = empty_keypoints(n, T)
    extra = empty_keypoints(n, T, len(EXTRA_FROM_BLAZEPOSE))
    luts = np.zeros((T, 256), np.uint8)
    human = np.zeros(n, np.float32)
    h, w = cv2.imread(str(work / f"obs_{0:06d}.png"), cv2.IMREAD_UNCHANGED).shape[:2]
    for c, chain in enumerate(chains):
        for i in chain:
            for t, k in zip(tracks[i].frames, tracks[i].obs):
                o = per_frame[t][k]
                luts[t, k + 1] = c + 1  # (both views of a person during a hand-over share its mask)
                if vis[c, t] and scores[c, t] >= o.lm.presence:
                    continue  # a hand-over's frame: the surer view gives box and keypoints
                boxes[c, t] = o.box
                vis[c, t] = True
                occ[c, t] = o.occlusion
                scores[c, t] = o.lm.presence
                kp[c, t], extra[c, t] = _keypoints_from(o.lm, w, h)
        human[c] = human_score(kp[c][vis[c]])
    def label_fn(t: int) -> np.ndarray:
        return luts[t][cv2.imread(str(work / f"obs_{t:06d}.png"), cv2.IMREAD_UNCHANGED)]

    return Tracks(boxes=boxes, visibility=vis, occlusion=occ, scores=scores, label_fn=label_fn,
                  names=[f"tracklets {'+'.join(map(str, ch))}" for ch in chains], keypoints=kp,
                  extra_keypoints=extra, extra_keypoint_names=list(EXTRA_FROM_BLAZEPOSE), human_score=human)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# keypoints for other trackers' boxes


def landmark_keypoints(frames: Frames, tracks: Tracks, config: RunConfig, progress):
    """COCO-17 + extras [N, T, 17 / K, 3] from the landmark model on each tracked box.

    The ROI is the box's square (1.25x) on the first frame of a run of frames, then follows the
    landmarks' own alignment points, as long as they stay inside the box."""
    models = Models(config.weights_dir)
    n, T = tracks.num, tracks.num_frames
    w, h = frames.meta.size
    kp = empty_keypoints(n, T)
    extra = empty_keypoints(n, T, len(EXTRA_FROM_BLAZEPOSE))
    for t in range(T):
        img = None
        for i in range(n):
            if not tracks.visibility[i, t]:
                continue
            img = frames[t] if img is None else img
            b = tracks.boxes[i, t]
            roi = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 1.25 * max(b[2] - b[0], b[3] - b[1]), 0.0)
            lm = models.landmarks(img, roi)
            lm2 = models.landmarks(img, lm.next_roi())  # refine: the ROI centred and rotated on the body
            if lm2.presence >= lm.presence:
                lm = lm2
            kp[i, t], extra[i, t] = _keypoints_from(lm, w, h)
        progress((t + 1) / T, f"keypoints {t + 1}/{T}")
    return kp, extra, list(EXTRA_FROM_BLAZEPOSE)
