"""BlazePose on numpy: the person detector (SSD anchors, 4 alignment keypoints) and the landmark model
(33 body landmarks + 2 alignment points, presence score, 256x256 person segmentation), on any ROI.

Convention: images BGR uint8 [H, W, 3]; points (x, y) in image pixels with the project's pixel
convention (pixel (r, c) covers [c, c+1) x [r, r+1), docs/formats.md), which is also MediaPipe's
for normalised coordinates; OpenCV's warps put pixel centres at integers, so ``pixel_centre_matrix``
converts an affine between the two. A ROI is a rotated square
``(cx, cy, size, angle)`` with angle in radians, counter-clockwise in the image as seen (y down),
0 = upright person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .mediapipe_models import TFLiteModel

DET_SIZE = 224
LM_SIZE = 256
NUM_LANDMARKS = 33

# BlazePose 33 -> COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_FROM_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# Whole-body extras the landmark model gives beyond COCO-17 (COCO-WholeBody-style names).
EXTRA_FROM_BLAZEPOSE = {
    "left_pinky": 17, "right_pinky": 18, "left_index": 19, "right_index": 20, "left_thumb": 21,
    "right_thumb": 22, "left_heel": 29, "right_heel": 30, "left_big_toe": 31, "right_big_toe": 32,
}  # fmt: skip


def _anchors() -> np.ndarray:
    """[2254, 2] anchor centres (normalised) of the pose detector: strides 8, 16, 32 (x3 layers),
    two anchors per cell, three layers of stride 32 sharing cells (MediaPipe's SSD options)."""
    out = []
    for stride, per_cell in ((8, 2), (16, 2), (32, 6)):
        n = DET_SIZE // stride
        ys, xs = np.mgrid[0:n, 0:n]
        c = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
        out.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = _anchors()


@dataclass
class Detection:
    box: np.ndarray  # [4] x0, y0, x1, y1 image px (the detector's box is around the face)
    keypoints: np.ndarray  # [4, 2] hip centre, full-body scale point, shoulder centre, upper-body point
    score: float

    def roi(self) -> tuple[float, float, float, float]:
        """Full-body ROI: centred on the hips, side 2.5 x hip-to-scale-point distance, upright to the body."""
        (x0, y0), (x1, y1) = self.keypoints[0], self.keypoints[1]
        size = 2.0 * math.hypot(x1 - x0, y1 - y0) * 1.25
        angle = _upright_angle(self.keypoints[0], self.keypoints[1])
        return float(x0), float(y0), float(size), angle


def _upright_angle(hip: np.ndarray, top: np.ndarray) -> float:
    """Rotation that makes the hip->top direction point up (image y down)."""
    a = 0.5 * math.pi - math.atan2(-(top[1] - hip[1]), top[0] - hip[0])
    return float(a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi)))


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = np.argsort(-scores)
    keep: list[int] = []
    for i in order:
        if all(box_iou(boxes[i], boxes[j]) < thr for j in keep):
            keep.append(int(i))
    return keep


def box_intersection(a: np.ndarray, b: np.ndarray) -> float:
    """Area two boxes [4] x0, y0, x1, y1 share."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes [4] x0, y0, x1, y1."""
    inter = box_intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def roi_matrix(roi: tuple[float, float, float, float], out_size: int) -> np.ndarray:
    """2x3 affine from image px to the ROI crop of out_size x out_size px."""
    cx, cy, size, angle = roi
    c, s = math.cos(angle), math.sin(angle)
    k = out_size / size
    # crop = k * R(-angle) @ (img - centre) + out/2: the ROI's rotation undone, body upright
    m = np.array([[k * c, k * s, 0.0], [-k * s, k * c, 0.0]])
    m[:, 2] = out_size / 2 - m[:, :2] @ np.array([cx, cy])
    return m


def pixel_centre_matrix(m: np.ndarray) -> np.ndarray:
    """The affine ``m`` (between continuous image planes, pixel edges at integers) for OpenCV's
    warps, which address pixels by their centres: dst_c = m(src_c + 0.5) - 0.5."""
    out = m.astype(np.float64).copy()
    out[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


class PoseDetector:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.model = TFLiteModel(path, threads)

    def __call__(self, img: np.ndarray, region: tuple[int, int, int, int] | None = None,
                 min_score: float = 0.5) -> list[Detection]:  # fmt: skip
        """Detections in ``img`` (or in region x, y, w, h of it), in image pixels."""
        x, y, w, h = region or (0, 0, img.shape[1], img.shape[0])
        side = max(w, h)
        scale = DET_SIZE / side
        crop = img[y:y + h, x:x + w]
        small = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.float32)
        canvas[: small.shape[0], : small.shape[1]] = small[..., ::-1] / 127.5 - 1.0
        raw_boxes, raw_scores = self.model(canvas[None])
        raw = raw_boxes.reshape(-1, 12)
        score = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -80, 80)))
        sel = np.flatnonzero(score >= min_score)
        if len(sel) == 0:
            return []
        r = raw[sel] / DET_SIZE
        a = _ANCHORS[sel]
        cxy = r[:, 0:2] + a
        wh = r[:, 2:4]
        kps = r[:, 4:12].reshape(-1, 4, 2) + a[:, None]
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1) * side + [x, y, x, y]
        kps = kps * side + [x, y]
        keep = nms(boxes, score[sel], 0.3)
        return [Detection(boxes[i], kps[i], float(score[sel][i])) for i in keep]


@dataclass
class Landmarks:
    points: np.ndarray  # [35, 3] x, y image px, visibility in [0, 1] (33 body + 2 alignment points)
    presence: float  # how sure the model is a person is in the ROI, [0, 1]
    roi: tuple[float, float, float, float]
    seg: np.ndarray | None  # [256, 256] float32 person probability in the ROI crop (None once used)
    matrix: np.ndarray  # [2, 3] image -> crop affine for OpenCV warps (pixel_centre_matrix)
    # [33, 3] metric 3D landmarks around the hips' centre (the model's "world landmarks"), x right,
    # y down as in the image, z away from the camera; None where the model has no such output
    world: np.ndarray | None = None

    def next_roi(self) -> tuple[float, float, float, float]:
        """ROI for the next frame from the alignment points (as MediaPipe tracks between detections)."""
        hip, top = self.points[33, :2], self.points[34, :2]
        size = 2.0 * float(np.hypot(*(top - hip))) * 1.25
        return float(hip[0]), float(hip[1]), size, _upright_angle(hip, top)

    def mask_in(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Person probability [h, w] over image region box = (x, y, w, h)."""
        x, y, w, h = box
        inv = cv2.invertAffineTransform(self.matrix)
        inv[:, 2] -= (x, y)
        return cv2.warpAffine(self.seg, inv, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)

    def box(self, min_vis: float = 0.0) -> np.ndarray:
        p = self.points[:NUM_LANDMARKS]
        ok = p[:, 2] >= min_vis
        p = p[ok] if ok.sum() >= 4 else p
        return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))


class LandmarkModel:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.model = TFLiteModel(path, threads)

    def __call__(self, img: np.ndarray, roi: tuple[float, float, float, float]) -> Landmarks:
        m = roi_matrix(roi, LM_SIZE)
        mc = pixel_centre_matrix(m)
        crop = cv2.warpAffine(img, mc, (LM_SIZE, LM_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        outs = self.model((crop[..., ::-1].astype(np.float32) / 255.0)[None])
        # outputs by name: Identity [1,195] landmarks, Identity_1 [1,1] presence, Identity_2 [1,256,256,1]
        # segmentation logits, Identity_3 heatmap, Identity_4 world landmarks
        lm = outs[0].reshape(-1, 5)[:35]
        presence = float(outs[1].reshape(-1)[0])
        seg = _sigmoid(outs[2].reshape(LM_SIZE, LM_SIZE)).astype(np.float32)
        inv = cv2.invertAffineTransform(m)
        xy = lm[:, :2] @ inv[:, :2].T + inv[:, 2]
        vis = _sigmoid(lm[:, 3])
        pts = np.concatenate([xy, vis[:, None]], 1).astype(np.float32)
        world = None
        if len(outs) > 4:  # in the crop's axes: the ROI's rotation put back, as the 2D points'
            world = outs[4].reshape(-1, 3)[:NUM_LANDMARKS].astype(np.float32)
            c, s = math.cos(roi[3]), math.sin(roi[3])
            world[:, :2] = world[:, :2] @ np.array([[c, s], [-s, c]], np.float32)
        return Landmarks(pts, presence, roi, seg, mc, world)
