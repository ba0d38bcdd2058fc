"""The people stage on the real clips in ../shared/data/videos (no ground truth): tracks found,
people per frame, time per frame, and a contact sheet of overlay frames per clip.

    .venv/core/bin/python benchmarks/people_clips.py [--tracker offline] [--max-size 960]
        [--sheets docs/images] [--frames 0,40,80] [--json OUT]

The counts of people actually visible come from looking at the frames (docs/people.md lists them);
this script prints what the backend found on the same frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.people.formats import read_people  # noqa: E402
from core.people.ingest import Frames  # noqa: E402
from core.people.overlay import contact_sheet, draw_frame  # noqa: E402
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracker", default="offline")
    p.add_argument("--max-size", type=int, default=960)
    p.add_argument("--max-people", type=int, default=20)
    p.add_argument("--sheets", help="write <tracker>_<clip>.jpg contact sheets into this folder")
    p.add_argument("--sheet-frames", type=int, default=6, help="overlay frames per sheet (evenly spaced)")
    p.add_argument("--json")
    p.add_argument("--weights-dir")
    args = p.parse_args()
    rows = []
    for video in sorted(VIDEOS.glob("*.mp4")):
        with tempfile.TemporaryDirectory() as tmp:
            job = JobDir(tmp)
            cfg = RunConfig(video=str(video), tracker=args.tracker, max_size=args.max_size, max_people=args.max_people,
                            weights_dir=args.weights_dir, extra={"people": {"overlay": False}})  # fmt: skip
            t0 = time.perf_counter()
            run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:1])
            t1 = time.perf_counter()
            run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
            t2 = time.perf_counter()
            res = read_people(job.stage_dir("people"))
            frames = Frames(job.stage_dir("ingest"))
            per_frame = res.visibility.sum(0)
            picks = np.linspace(0, res.num_frames - 1, args.sheet_frames).round().astype(int)
            row = {
                "clip": video.name, "frames": res.num_frames, "size": list(res.image_size), "tracks": res.num_people,
                "dropped": len(res.dropped), "people_per_frame_mean": round(float(per_frame.mean()), 2),
                "people_per_frame_max": int(per_frame.max()), "ingest_s": round(t1 - t0, 2),
                "people_s": round(t2 - t1, 2), "s_per_frame": round((t2 - t1) / res.num_frames, 3),
                "found_on_sheet_frames": {int(t): int(per_frame[t]) for t in picks},
                "track_frames": {pid: int(res.visibility[i].sum()) for i, pid in enumerate(res.ids)},
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.sheets:
                out = Path(args.sheets) / f"people_{args.tracker}_{video.stem}.jpg"
                out.parent.mkdir(parents=True, exist_ok=True)
                imgs = [draw_frame(frames[t], res, t) for t in picks]
                sheet = contact_sheet(imgs, columns=3, width=1200, captions=[f"frame {t}" for t in picks])
                cv2.imwrite(str(out), sheet, [cv2.IMWRITE_JPEG_QUALITY, 70])
                print(f"  contact sheet {out} ({out.stat().st_size // 1024} kB)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
