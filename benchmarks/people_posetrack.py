"""Offline people backend on the annotated PoseTrack18 frames in ../shared/data/gt/mmpose_posetrack18:
detection recall, PCK@0.1 (of the person box's longer side) and PCKh@0.5 (PoseTrack's head-size
rule: 0.6 x the head box diagonal), against the ground-truth COCO-style keypoints.

    .venv/core/bin/python benchmarks/people_posetrack.py [--json OUT] [--quality standard|high]

Each annotated frame is run as a one-frame job (ingest of a one-image folder, then the people
stage). PoseTrack's second and third keypoints are head-bottom and head-top, not COCO's eyes,
so they are left out. A prediction matches a ground-truth person (Hungarian) when at least 30%
of that person's labelled keypoints lie within 0.2 x the box's longer side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.people.formats import read_people  # noqa: E402
from core.people.metrics import match  # noqa: E402
from core.pipeline import STAGES, JobDir, JobError, RunConfig, run_pipeline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gt" / "mmpose_posetrack18"
COMPARABLE = [0] + list(range(3, 17))  # COCO-17 indices PoseTrack labels the same way


def in_ignore_regions(points: np.ndarray, image: dict) -> np.ndarray:
    """[P] bool: which points [P, 2] fall in the frame's ignore regions (unannotated people)."""
    import cv2

    out = np.zeros(len(points), bool)
    for xs, ys in zip(image.get("ignore_regions_x", []), image.get("ignore_regions_y", [])):
        poly = np.array(list(zip(xs, ys)), np.float32).reshape(-1, 1, 2)
        if len(poly) >= 3:
            out |= np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in points], bool)
    return out


def evaluate_frame(pred_kp: np.ndarray, anns: list[dict], image: dict) -> dict:
    """pred_kp [P, 17, 3]; anns: PoseTrack annotations of one frame (people with keypoints).
    Unmatched predictions inside the ignore regions (people PoseTrack did not annotate) do not
    count against precision."""
    gt = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    lab = gt[..., 2] > 0
    lab[:, [1, 2]] = False
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    side = boxes[:, 2:].max(1)
    head = np.array([0.6 * np.hypot(*a["bbox_head"][2:]) if a.get("bbox_head") else np.nan for a in anns])
    sim = np.zeros((len(pred_kp), len(gt)))
    for p in range(len(pred_kp)):
        d = np.linalg.norm(pred_kp[p, None, :, :2] - gt[:, :, :2], axis=2)  # [G, 17]
        sim[p] = np.sum(lab & (d <= 0.2 * side[:, None]), 1) / np.maximum(lab.sum(1), 1)
    pairs = match(sim, 0.3)
    by_gt = {g: p for p, g in pairs}
    hit01 = hith = n = nh = 0
    for g in range(len(gt)):
        k = np.flatnonzero(lab[g])
        n += len(k)
        if np.isfinite(head[g]):
            nh += len(k)
        if g in by_gt:
            d = np.linalg.norm(pred_kp[by_gt[g], k, :2] - gt[g, k, :2], axis=1)
            hit01 += int(np.sum(d <= 0.1 * side[g]))
            if np.isfinite(head[g]):
                hith += int(np.sum(d <= 0.5 * head[g]))
    matched = {p for p, _ in pairs}
    centre = np.nanmean(np.where(pred_kp[..., 2:] > 0.3, pred_kp[..., :2], np.nan), axis=1).reshape(-1, 2)
    ignored = in_ignore_regions(np.nan_to_num(centre, nan=-1.0), image)
    counted = sum(1 for p in range(len(pred_kp)) if p in matched or not ignored[p])
    return {"gt_people": len(gt), "found": len(pairs), "predicted": counted, "kp": n, "kp_hit01": hit01,
            "kp_head": nh, "kp_hith": hith}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--quality", default="standard")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    rows = []
    for ann_file in sorted((DATA / "annotations" / "val").glob("*.json")):
        doc = json.loads(ann_file.read_text())
        for img in doc["images"]:
            if not img.get("is_labeled", True):
                continue
            anns = [a for a in doc["annotations"] if a["image_id"] == img["id"] and a.get("num_keypoints", 1) > 0]
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "img"
                src.mkdir()
                shutil.copy(DATA / img["file_name"], src / "000000.jpg")
                cfg = RunConfig(video=str(src), max_size=1920, max_people=30, quality=args.quality,
                                extra={"people": {"overlay": False}})  # fmt: skip
                t0 = time.perf_counter()
                try:
                    run_pipeline(JobDir(Path(tmp) / "job"), cfg, lambda *a: None, stages=STAGES[:2])
                    res = read_people(Path(tmp) / "job" / "people")
                    kp = res.keypoints[:, 0] / res.scale
                except JobError:  # nobody found
                    kp = np.zeros((0, 17, 3), np.float32)
                seconds = time.perf_counter() - t0
            r = evaluate_frame(kp, anns, img)
            r.update(frame=img["file_name"], seconds=round(seconds, 2))
            rows.append(r)
            print(f"{img['file_name']:45s} found {r['found']}/{r['gt_people']} (predicted {r['predicted']})  "
                  f"PCK@0.1 {r['kp_hit01'] / max(r['kp'], 1):.3f}  PCKh@0.5 {r['kp_hith'] / max(r['kp_head'], 1):.3f}  "
                  f"{seconds:.1f} s", flush=True)  # fmt: skip
    tot = {k: sum(r[k] for r in rows) for k in ("gt_people", "found", "predicted", "kp", "kp_hit01", "kp_head", "kp_hith")}
    summary = {"recall": tot["found"] / tot["gt_people"], "precision": tot["found"] / max(tot["predicted"], 1),
               "pck01": tot["kp_hit01"] / tot["kp"], "pckh05": tot["kp_hith"] / max(tot["kp_head"], 1), **tot}  # fmt: skip
    print(f"all: recall {summary['recall']:.3f} ({tot['found']}/{tot['gt_people']}), precision {summary['precision']:.3f}, "
          f"PCK@0.1 {summary['pck01']:.3f}, PCKh@0.5 {summary['pckh05']:.3f} over {tot['kp']} keypoints")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
