"""Accuracy of a people result against ground truth: mask IoU, PCK, detection recall, identity switches.

Matching is per frame, one-to-one (Hungarian) on mask IoU (or box IoU where there are no masks);
a pair counts when its IoU reaches ``min_iou``. Definitions:

- mask IoU: mean over ground-truth person-frames (person visible) of the IoU with the matched
  prediction, 0 when unmatched;
- PCK@a: share of labelled ground-truth keypoints whose matched prediction lies within
  a * max(box width, box height) of the ground-truth box (unmatched people count as misses);
- recall: share of ground-truth person-frames with a match;
- identity switches: for each ground-truth person, how often the matched predicted id changes
  from one matched frame to the next (a person lost and found again under the same id is no switch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment


def mask_iou_matrix(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """[n_pred, n_gt] IoU of the people of two uint8 [H, W] label maps (value i+1 = person i)."""
    joint = pred.astype(np.int64) * (n_gt + 1) + gt.astype(np.int64)
    counts = np.bincount(joint.ravel(), minlength=(n_pred + 1) * (n_gt + 1)).reshape(n_pred + 1, n_gt + 1)
    inter = counts[1:, 1:].astype(np.float64)
    area_p = counts[1:, :].sum(axis=1, keepdims=True)
    area_g = counts[:, 1:].sum(axis=0, keepdims=True)
    union = area_p + area_g - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[Na, Nb] IoU of boxes a [Na, 4], b [Nb, 4] (x0, y0, x1, y1); NaN boxes give 0."""
    a = a[:, None]
    b = b[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return np.nan_to_num(out, nan=0.0)


def match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs (pred, gt) maximising total IoU, each with IoU >= min_iou."""
    if iou.size == 0:
        return []
    r, c = linear_sum_assignment(-iou)
    return [(int(i), int(j)) for i, j in zip(r, c) if iou[i, j] >= min_iou]


@dataclass
class Scores:
    mask_iou: float = float("nan")
    pck: float = float("nan")
    recall: float = float("nan")
    precision: float = float("nan")
    id_switches: int = 0
    gt_person_frames: int = 0
    per_person: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class Accumulator:
    """Feed frames one by one (``add``), then ``result()``."""

    def __init__(self, n_gt: int, alpha: float = 0.1) -> None:
        self.n_gt = n_gt
        self.alpha = alpha
        self.iou_sum = 0.0
        self.iou_n = 0
        self.kp_hit = 0
        self.kp_n = 0
        self.gt_frames = 0
        self.matched = 0
        self.pred_frames = 0
        self.last_id = [None] * n_gt
        self.switches = np.zeros(n_gt, int)

    def add(self, pairs: list[tuple[int, int]], gt_present: np.ndarray, n_pred_present: int,
            iou: np.ndarray | None = None, pred_kp: np.ndarray | None = None, gt_kp: np.ndarray | None = None,
            gt_boxes: np.ndarray | None = None, pred_ids: list | None = None) -> None:  # fmt: skip
        """One frame. gt_present [n_gt] bool; iou [n_pred, n_gt] (mask IoU, optional);
        pred_kp [n_pred, 17, 3], gt_kp [n_gt, 17, 3] (flag > 0 = labelled), gt_boxes [n_gt, 4]."""
        self.gt_frames += int(gt_present.sum())
        self.pred_frames += n_pred_present
        by_gt = {g: p for p, g in pairs}
        for g in np.flatnonzero(gt_present):
            p = by_gt.get(int(g))
            if iou is not None:
                self.iou_sum += float(iou[p, g]) if p is not None else 0.0
                self.iou_n += 1
            if p is not None:
                self.matched += 1
                pid = pred_ids[p] if pred_ids is not None else p
                if self.last_id[g] is not None and self.last_id[g] != pid:
                    self.switches[g] += 1
                self.last_id[g] = pid
            if gt_kp is not None:
                lab = gt_kp[g, :, 2] > 0
                if not lab.any():
                    continue
                b = gt_boxes[g]
                thr = self.alpha * max(b[2] - b[0], b[3] - b[1])
                self.kp_n += int(lab.sum())
                if p is not None and pred_kp is not None:
                    d = np.linalg.norm(pred_kp[p, :, :2] - gt_kp[g, :, :2], axis=1)
                    self.kp_hit += int(np.sum(lab & (d <= thr)))  # NaN distances are misses

    def result(self) -> Scores:
        return Scores(
            mask_iou=self.iou_sum / self.iou_n if self.iou_n else float("nan"),
            pck=self.kp_hit / self.kp_n if self.kp_n else float("nan"),
            recall=self.matched / self.gt_frames if self.gt_frames else float("nan"),
            precision=self.matched / self.pred_frames if self.pred_frames else float("nan"),
            id_switches=int(self.switches.sum()),
            gt_person_frames=self.gt_frames,
        )


def evaluate_against_synth(result, gt_dir, min_iou: float = 0.3, alpha: float = 0.1) -> Scores:
    """Scores of a ``PeopleResult`` against a ``core synth`` ground truth folder (``DIR/gt``).

    Job frame t is compared with ground-truth frame ``result.source_frames[t]``; predictions in
    working pixels are brought to ground-truth pixels with ``result.scale``."""
    gt = Path(gt_dir)
    gt = gt / "gt" if (gt / "gt").is_dir() else gt
    with np.load(gt / "keypoints.npz", allow_pickle=False) as z:
        gkp, gboxes, gvis = z["keypoints"], z["boxes"], z["visibility"]
    with np.load(gt / "labels.npz", allow_pickle=False) as z:
        glabels = z["labels"]
    n_gt = gkp.shape[0]
    acc = Accumulator(n_gt, alpha)
    s = result.scale
    for t, f in enumerate(np.asarray(result.source_frames)):
        if f >= glabels.shape[0]:
            continue
        g = glabels[f]
        pred = np.asarray(result.labels[t])
        if pred.shape != g.shape:
            pred = cv2.resize(pred, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST)
        iou = mask_iou_matrix(pred, g, result.num_people, n_gt)
        present = (gvis[:, f] > 0) & np.isfinite(gboxes[:, f, 0]) & np.bincount(g.ravel(), minlength=n_gt + 1)[1:].astype(bool)
        pk = result.keypoints[:, t].copy()
        pk[..., :2] /= s
        acc.add(match(iou, min_iou), present, int(result.visibility[:, t].sum()), iou=iou, pred_kp=pk,
                gt_kp=gkp[:, f], gt_boxes=gboxes[:, f], pred_ids=result.ids)  # fmt: skip
    return acc.result()
