"""The FOV search (``core.motion.camera.search_fov``) on real video: the calibrated 4-camera
capture (known focal lengths) and the real clips (no ground truth: the FOV found, for a look).

    .venv/core/bin/python benchmarks/motion_fov.py [--frames 100] [--json OUT]

Keypoints come from the people stage's offline backend, cached as ``benchmarks/motion_pose2sim.py``
and ``benchmarks/motion_real.py`` cache them (``.cache/bench_pose2sim/<cam>``,
``.cache/bench_real/<clip>``; run here when missing). Prints a markdown table: FOV found, the
true one where known, the focal length's error, the camera pitch found, and what the default FOV
(``inputs.DEFAULT_HFOV_DEG``) would have missed by.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from motion_pose2sim import DATA, people_for, read_qualisys  # noqa: E402
from motion_real import CLIPS, VIDEOS  # noqa: E402
from motion_synth import hfov  # noqa: E402

from core.motion.camera import search_fov  # noqa: E402
from core.motion.inputs import DEFAULT_HFOV_DEG, focal_from_hfov, read_people_stage  # noqa: E402
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100, help="frames of the capture (the clips: 90, as motion_real)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    print("| video | size | people | FOV found ° | true FOV ° | focal error % | default's error % | pitch found ° |")
    print("|---|---|---|---|---|---|---|---|")
    if (DATA / "Calib.qca.txt").exists():
        calib = read_qualisys(DATA / "Calib.qca.txt")
        for cam in sorted(calib):
            people = people_for(DATA / f"{cam}.mp4", ROOT / ".cache" / "bench_pose2sim" / cam, args.frames)
            inp = read_people_stage(people, people.parent / "ingest")
            scale = json.loads((people.parent / "ingest" / "meta.json").read_text())["scale"]
            rows.append(("pose2sim " + cam, inp, calib[cam]["K"][0, 0] * scale))
    for clip in CLIPS:
        if not (VIDEOS / f"{clip}.mp4").exists():
            continue
        job = JobDir(ROOT / ".cache" / "bench_real" / clip)
        if not (job.stage_dir("people") / "people.json").exists():
            config = RunConfig(video=str(VIDEOS / f"{clip}.mp4"), frame_end=90, max_size=960, max_people=6,
                               tracker="offline", keypoints="offline")  # fmt: skip
            run_pipeline(job, config, lambda *a: None, stages=[s for s in STAGES if s.name in ("ingest", "people")])
        rows.append((clip, read_people_stage(job.stage_dir("people"), job.stage_dir("ingest")), None))
    out = []
    for name, inp, focal in rows:
        w = inp.image_size[0]
        found = search_fov(inp.keypoints, inp.image_size)
        err = f"{100 * (found.focal_px / focal - 1):+.1f}" if focal else "?"
        default = f"{100 * (focal_from_hfov(w, DEFAULT_HFOV_DEG) / focal - 1):+.1f}" if focal else "?"
        true = f"{hfov(focal, w):.1f}" if focal else "?"
        print(f"| {name} | {w}x{inp.image_size[1]} | {len(inp.ids)} | {found.hfov_deg:.1f} | {true} | {err} | "
              f"{default} | {found.pitch_deg:.1f} |", flush=True)  # fmt: skip
        out.append({"video": name, "hfov_deg": found.hfov_deg, "focal_px": found.focal_px, "focal_gt_px": focal,
                    "pitch_deg": found.pitch_deg, "source": found.source, "segments": found.segments})  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
