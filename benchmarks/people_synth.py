"""People stage accuracy on synthetic scenes with exact ground truth: mask IoU, PCK@0.1, recall,
precision and identity switches, for the ``import`` backend (must be perfect) and ``offline``.

    .venv/core/bin/python benchmarks/people_synth.py [--json OUT] [--trackers import,offline]

Scenes: ``python -m core synth`` renders (stand-in bodies walking, static and orbiting camera)
and the drawn ``core.people.toyscene`` (crossing, exit and re-entry). Metric definitions:
``core/people/metrics.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.people.formats import read_people  # noqa: E402
from core.people.metrics import evaluate_against_synth  # noqa: E402
from core.people.toyscene import make_scene  # noqa: E402
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline  # noqa: E402

SCENES = {  # name -> core synth arguments
    "synth4_static": ["--people", "4", "--frames", "60", "--size", "640x360", "--seed", "1"],
    "synth6_orbit": ["--people", "6", "--frames", "60", "--size", "640x360", "--seed", "2", "--camera", "orbit"],
}


def make_scenes(tmp: Path) -> dict[str, Path]:
    out = {}
    for name, args in SCENES.items():
        d = tmp / name
        subprocess.run([sys.executable, "-m", "core", "synth", "--out", str(d), *args], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        out[name] = d
    out["toyscene"] = make_scene(tmp / "toyscene", frames=48)
    return out


def run(scene: Path, tracker: str, job: Path) -> dict:
    cfg = RunConfig(video=str(scene / "video.mp4"), tracker=tracker, tracks=str(scene) if tracker == "import" else None,
                    max_people=20, extra={"people": {"overlay": False}})  # fmt: skip
    t0 = time.perf_counter()
    run_pipeline(JobDir(job), cfg, lambda *a: None, stages=STAGES[:2])
    seconds = time.perf_counter() - t0
    res = read_people(job / "people")
    scores = evaluate_against_synth(res, scene).as_dict()
    scores.update(people_found=res.num_people, seconds=round(seconds, 2),
                  frames=res.num_frames, s_per_frame=round(seconds / res.num_frames, 3))  # fmt: skip
    with open(scene / "gt" / "tracks.json") as f:
        scores["people_gt"] = len(json.load(f)["people"])
    return scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--trackers", default="import,offline")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenes = make_scenes(Path(tmp))
        for name, scene in scenes.items():
            for tracker in args.trackers.split(","):
                r = run(scene, tracker, Path(tmp) / f"job_{name}_{tracker}")
                rows.append({"scene": name, "tracker": tracker, **r})
                print(f"{name:15s} {tracker:8s} IoU {r['mask_iou']:.3f}  PCK@0.1 {r['pck']:.3f}  recall {r['recall']:.3f}  "
                      f"precision {r['precision']:.3f}  ID switches {r['id_switches']:2d}  people {r['people_found']}/"
                      f"{r['people_gt']}  {r['s_per_frame']:.3f} s/frame", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
