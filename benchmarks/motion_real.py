"""The motion stage on the real clips: mean reprojection error per clip and overlay images.

    .venv/core/bin/python benchmarks/motion_real.py [--clips sports2d_demo phalp_vid ...]
        [--frames 90] [--images docs/images] [--json OUT]

For each clip in ``../shared/data/videos`` the pipeline's ingest, people (offline backend) and
motion stages run on the first ``--frames`` frames (stand-in body, intrinsics from the FOV
search, camera static or moving as detected); then the fitted bodies are drawn over three frames
(``core.motion.overlay``) into ``<images>/motion_<clip>.jpg`` and a table row says how many
people were fitted, the camera found, the focal length, the mean reprojection error (working
pixels and as a share of the people's size) and how far the lowest foot is from the floor (or
the level a person stands on, ``extra.motion.levels``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import bundle as bd  # noqa: E402
from core.motion.overlay import contact_sheet, draw_bodies  # noqa: E402
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CLIPS = ("sports2d_demo", "phalp_vid", "slahmr_posetrack_002276_inputcrop")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", nargs="+", default=list(CLIPS))
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--max-size", type=int, default=960)
    p.add_argument("--max-people", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--body-model", default=None)
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_real"))
    p.add_argument("--images", default=str(ROOT / "docs" / "images"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from core.body.standin import ensure_standin
    from core.people.ingest import Frames

    body_model = args.body_model or str(ensure_standin(ROOT / ".cache" / "standin", genders=("neutral",)))
    rows = []
    print("| clip | frames | people | camera | focal px (how) | reprojection px | reprojection / person size | lowest foot joint above their level m |")
    print("|---|---|---|---|---|---|---|---|")
    for clip in args.clips:
        video = VIDEOS / f"{clip}.mp4"
        if not video.exists():
            print(f"| {clip} | (missing: {video}) |")
            continue
        job = JobDir(Path(args.work) / clip)
        config = RunConfig(video=str(video), frame_end=args.frames, max_size=args.max_size, max_people=args.max_people,
                           tracker="offline", keypoints="offline", body_model=body_model, device=args.device)  # fmt: skip
        stages = [s for s in STAGES if s.name in ("ingest", "people", "motion")]
        run_pipeline(job, config, lambda *a: None, stages=stages)
        b = bd.read_bundle(job.stage_dir("motion"))
        ex = b.extra["motion"]
        frames = Frames(job.stage_dir("ingest"))
        pick = np.linspace(0, b.frame_count - 1, 3).round().astype(int)
        sheet = contact_sheet([draw_bodies(frames[int(t)], b, int(t)) for t in pick])
        Path(args.images).mkdir(parents=True, exist_ok=True)
        out_img = Path(args.images) / f"motion_{clip}.jpg"
        cv2.imwrite(str(out_img), sheet, [cv2.IMWRITE_JPEG_QUALITY, 80])
        # reprojection relative to the people's size, and the lowest foot's height over seen frames
        kp = np.load(job.stage_dir("people") / "tracks.npz")["keypoints"]
        with np.errstate(all="ignore"):
            size = np.nanmedian(np.nanmax(kp[..., 1], -1) - np.nanmin(kp[..., 1], -1))
        low = []
        levels = ex.get("levels") or {}  # people standing above or below the floor (a roof, a stage)
        for person in b.people:
            j = bd.world_joints(person)
            seen = person.motion.visibility > 0
            low.append(np.abs(j[seen][:, [7, 8, 10, 11], 1].min(-1) - levels.get(person.id, 0.0)))
        floor = float(np.median(np.concatenate(low))) if low else float("nan")
        r = {
            "clip": clip, "frames": b.frame_count, "people": len(b.people), "camera": ex["camera"],
            "focal_px": ex["focal_px"], "focal_source": ex["focal_source"], "reprojection_px": ex["reprojection_px_mean"],
            "reprojection_rel": ex["reprojection_px_mean"] / size, "lowest_foot_m": floor, "image": str(out_img),
        }  # fmt: skip
        rows.append(r)
        print(f"| {clip} | {r['frames']} | {r['people']} | {r['camera']} | {r['focal_px']:.0f} ({r['focal_source']}) | "
              f"{r['reprojection_px']:.1f} | {100 * r['reprojection_rel']:.1f} % | {floor:.3f} |", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
