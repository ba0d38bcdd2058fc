"""Would BlazePose's 3D landmarks tell the fit which way a limb points along the viewing ray?

    .venv/core/bin/python benchmarks/motion_blazepose_depth.py [--scenes DIR ...] [--fits DIR]

The landmark model the people stage runs also gives metric 3D landmarks around the hips
(``Landmarks.world``). On rendered synthetic scenes (``benchmarks/motion_synth.py`` makes them,
under ``.cache/bench_motion``) it runs on every person and frame with the true person's region as
its ROI, and each limb segment's depth step (knee from hip, ankle from knee, elbow from shoulder,
wrist from elbow, camera frame) is compared with the truth's: how often its sign is right where
the truth's step exceeds 8 cm, and the median error. With ``--fits`` (a ``motion_synth.py --save``
folder) the motion stage's fits of the same scenes are scored alike. docs/motion.md has the
figures ("Where the first two frames go wrong").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from motion_synth import read_video  # noqa: E402

from core import bundle as bd  # noqa: E402
from core.evaluate import _side, evaluate  # noqa: E402
from core.people.blazepose import LandmarkModel, _upright_angle  # noqa: E402
from core.people.mediapipe_models import find_models  # noqa: E402

# segment: (SMPL-X joint from, to), (BlazePose landmark from, to)
SEGMENTS = {
    "left thigh": ((1, 4), (23, 25)), "right thigh": ((2, 5), (24, 26)),
    "left shin": ((4, 7), (25, 27)), "right shin": ((5, 8), (26, 28)),
    "left upper arm": ((16, 18), (11, 13)), "right upper arm": ((17, 19), (12, 14)),
    "left forearm": ((18, 20), (13, 15)), "right forearm": ((19, 21), (14, 16)),
}  # fmt: skip
STEP = 0.08  # m: depth steps smaller than this have no sign worth scoring


def world_landmarks(model: LandmarkModel, frame: np.ndarray, points: np.ndarray, hip: np.ndarray, top: np.ndarray) -> np.ndarray:
    """BlazePose's metric 3D landmarks [33, 3] (``Landmarks.world``) of the person whose 2D points
    [N, 2] lie around ``hip`` (the hips' centre) and ``top`` (the shoulders'): the ROI centred on the
    hips, 2.5 times the farthest point's distance across, upright to the body."""
    size = 2.5 * float(np.max(np.linalg.norm(points - hip, axis=1)))
    world = model(frame, (float(hip[0]), float(hip[1]), size, _upright_angle(hip, top))).world
    if world is None:
        raise SystemExit("this landmark model has no 3D (world) landmark output")
    return world


def score_scene(scene: Path, model: LandmarkModel, fit: Path | None) -> dict[str, list[np.ndarray]]:
    """Per segment, rows [truth, BlazePose(, fit)] of depth steps (m), one per person and frame."""
    gt = bd.read_bundle(scene / "bundle")
    n = gt.frame_count
    gs = _side(gt, np.arange(n))
    pred_of = {}
    if fit is not None:
        pred = bd.read_bundle(fit)
        ps = _side(pred, np.arange(n))
        pred_of = {m["gt"]: ps.cam[ps.ids.index(m["pred"])] for m in evaluate(pred, gt)["matches"]}
    frames = read_video(scene / "video.mp4")
    out: dict[str, list[np.ndarray]] = {k: [] for k in SEGMENTS}
    for i, pid in enumerate(gs.ids):
        for t in np.flatnonzero(gs.present[i]):
            uv, cam = gs.uv[i, t], gs.cam[i, t]
            world = world_landmarks(model, frames[t], uv, (uv[1] + uv[2]) / 2, (uv[16] + uv[17]) / 2)
            for name, ((a, b), (la, lb)) in SEGMENTS.items():
                row = [cam[b, 2] - cam[a, 2], world[lb, 2] - world[la, 2]]
                if pid in pred_of:
                    row.append(pred_of[pid][t, b, 2] - pred_of[pid][t, a, 2])
                out[name].append(np.array(row))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = sorted((ROOT / ".cache" / "bench_motion").glob("static_1p_90f_640x360_s*"))
    p.add_argument("--scenes", nargs="+", type=Path, default=default, help="rendered synthetic scenes")
    p.add_argument("--fits", type=Path, default=None, help="motion_synth.py --save folder with fits of the same scenes")
    p.add_argument("--weights-dir", default=None)
    args = p.parse_args()
    if not args.scenes:
        raise SystemExit("no scenes: render some with benchmarks/motion_synth.py (they land in .cache/bench_motion)")
    model = LandmarkModel(find_models(args.weights_dir)["pose_landmark_full.tflite"], 1)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in SEGMENTS}
    for scene in args.scenes:
        fit = None if args.fits is None else args.fits / scene.name
        for k, v in score_scene(scene, model, fit if fit is not None and fit.exists() else None).items():
            rows[k] += v
    sources = ["BlazePose"] + (["the fit"] if args.fits is not None else [])
    print(f"{len(args.scenes)} scenes; segment-frames with a depth step over {STEP * 100:.0f} cm")
    print("| segment | frames | " + " | ".join(f"{s}: sign right, median error mm" for s in sources) + " |")
    print("|---|---|" + "---|" * len(sources))
    def row(name: str, r: np.ndarray) -> str:  # r [N, 1 + sources]: the truth's step, then each source's
        big = np.abs(r[:, 0]) > STEP
        cells = [f"{np.mean(np.sign(r[big, 0]) == np.sign(r[big, k])):.0%}, {1000 * np.median(np.abs(r[:, 0] - r[:, k])):.0f}"
                 for k in range(1, r.shape[1])]  # fmt: skip
        return f"| {name} | {big.sum()} | " + " | ".join(cells) + " |"

    every = []
    for name, r in rows.items():
        r = np.array([x for x in r if len(x) == len(sources) + 1])
        if len(r):
            every.append(r)
            print(row(name, r))
    print(row("all", np.concatenate(every)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
