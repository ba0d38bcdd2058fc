"""A moving camera's solved path against the truth, without the body fit.

    .venv/core/bin/python benchmarks/motion_camera.py [--scenes orbit_*] [--repeat 1] [--json OUT]
        [--methods tracks|sift] [--real phalp_vid] [--real-frames 90]

For each rendered ``core synth`` scene in ``--work`` (default: the orbiting scenes that
``benchmarks/motion_synth.py`` left in ``.cache/bench_motion``), ``camera.solve_camera(...,
mode="moving")`` solves the path from the video and the ground-truth people masks, and the path
is scored against the scene's ``bundle/camera.npz``:

- rotation error: the angle between solved and true camera orientation per frame, after the one
  world rotation that fits all frames best (mean and worst, degrees);
- centre error: camera centres after the similarity (scale, rotation, shift) that fits all
  frames best, mean and worst, in metres and as % of the true path's length;
- registered frames (of the frames sampled), the path check's verdict, the solver that gave the
  path, seconds.

``--methods sift`` scores one attempt of ``solve_path`` alone, also when its path fails the check
(the path the fit would not get). ``--repeat N`` solves every scene N times (COLMAP's determinism). ``--real CLIP`` solves a real
clip from ``../shared/data/videos`` (no ground truth, no masks) and prints the path's check
statistics instead. Intrinsics: the scene's own (as metadata would give them); for a real clip
the default field of view.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.motion import camera  # noqa: E402
from core.motion.inputs import DEFAULT_HFOV_DEG, MotionInputs, focal_from_hfov, intrinsics, read_synth  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def read_video(path: Path, width: int | None = None, frames: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out: list[np.ndarray] = []
    while frames is None or len(out) < frames:
        ok, frame = cap.read()
        if not ok:
            break
        if width and frame.shape[1] != width:
            h = round(frame.shape[0] * width / frame.shape[1])
            frame = cv2.resize(frame, (width, h), interpolation=cv2.INTER_AREA)
        out.append(frame)
    if not out:
        raise SystemExit(f"{path}: no frames could be read")
    return out


def score(cam_to_scene: np.ndarray | None, world_to_cam_gt: np.ndarray) -> dict:
    gt = np.linalg.inv(world_to_cam_gt)
    pred = np.tile(np.eye(4), (len(gt), 1, 1)) if cam_to_scene is None else cam_to_scene
    rot, cen, length = camera.path_errors(pred, gt)
    return {
        "rot_mean_deg": float(rot.mean()),
        "rot_max_deg": float(rot.max()),
        "centre_mean_m": float(cen.mean()),
        "centre_max_m": float(cen.max()),
        "centre_mean_pct": 100 * float(cen.mean()) / length,
        "centre_max_pct": 100 * float(cen.max()) / length,
        "path_length_m": length,
    }


def solve(frames: list[np.ndarray], inp: MotionInputs, K: np.ndarray, methods: list[str] | None) -> tuple[camera.CameraSolve, float]:
    """solve_camera as the motion stage calls it, or (``methods``) solve_path with only those
    attempts, its path scored even when it fails the check."""
    t0 = time.perf_counter()
    if methods is None:
        cam = camera.solve_camera(frames, inp, K, mode="moving")
    else:
        found = camera.solve_path(frames, inp.labels, K[0], methods=methods)
        cam = camera.CameraSolve("moving" if found else "static", found.cam_to_scene if found else None, 0.0,
                                 path_info=found)  # fmt: skip
    return cam, time.perf_counter() - t0


def describe(cam: camera.CameraSolve) -> dict:
    info = cam.path_info
    if info is None:
        return {"camera": cam.kind, "method": "", "registered": 0, "sampled": 0, "check": cam.scale_note}
    return {
        "camera": cam.kind,
        "method": info.method,
        "registered": int(len(info.times)),
        "sampled": int(info.sampled),
        "check": "ok" if info.check.ok else "; ".join(info.check.problems),
        "stats": info.check.stats,
        "attempts": info.attempts,
    }


def run_scenes(args: argparse.Namespace) -> list[dict]:
    folders = sorted(p for pat in args.scenes for p in Path(args.work).glob(pat) if (p / "bundle" / "camera.npz").exists())
    if not folders:
        raise SystemExit(f"no rendered scenes matching {args.scenes} in {args.work}: run benchmarks/motion_synth.py first")
    rows = []
    print("| scene | run | registered | solver | check | rot. mean / max ° | centre mean / max m | centre mean / max % of path | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in folders:
        frames = read_video(folder / "video.mp4")
        inp = read_synth(folder, noise_px=3, drop=0.1, seed=0)
        K = intrinsics(inp.image_size, inp.focal_px, len(frames))
        with np.load(folder / "bundle" / "camera.npz", allow_pickle=False) as z:
            w2c = z["world_to_cam"]
        for run in range(args.repeat):
            cam, sec = solve(frames, inp, K, args.methods)
            r = {"scene": folder.name, "run": run, "seconds": sec, **describe(cam), **score(cam.cam_to_scene, w2c)}
            rows.append(r)
            print(
                f"| {r['scene']} | {run} | {r['registered']}/{r['sampled']} | {r['method'] if r['camera'] == 'moving' else 'static'} | {r['check']} | "
                f"{r['rot_mean_deg']:.2f} / {r['rot_max_deg']:.2f} | {r['centre_mean_m']:.3f} / {r['centre_max_m']:.3f} | "
                f"{r['centre_mean_pct']:.1f} / {r['centre_max_pct']:.1f} | {sec:.0f} |",
                flush=True,
            )
    return rows


def run_real(args: argparse.Namespace) -> list[dict]:
    rows = []
    for clip in args.real:
        video = VIDEOS / f"{clip}.mp4"
        if not video.exists():
            print(f"{clip}: missing ({video})")
            continue
        frames = read_video(video, width=640, frames=args.real_frames)
        h, w = frames[0].shape[:2]
        K = intrinsics((w, h), focal_from_hfov(w, DEFAULT_HFOV_DEG), len(frames))
        t0 = time.perf_counter()
        solved = camera.solve_path(frames, None, K[0], **({"methods": args.methods} if args.methods else {}))
        sec = time.perf_counter() - t0
        r = {"clip": clip, "frames": len(frames), "seconds": sec, "motion_px": camera.background_motion(frames, None)}
        if solved is not None:
            r.update(method=solved.method, registered=len(solved.times), sampled=solved.sampled,
                     check="ok" if solved.check.ok else "; ".join(solved.check.problems), stats=solved.check.stats,
                     attempts=solved.attempts)  # fmt: skip
            steps = np.linalg.norm(np.diff(solved.cam_to_scene[:, :3, 3], axis=0), axis=1)
            r["step_ratio_max_median"] = float(steps.max() / max(np.median(steps), 1e-12))
        rows.append(r)
        print(json.dumps(r, indent=1, default=float))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_motion"))
    p.add_argument("--scenes", nargs="+", default=["orbit_*"], help="folder name patterns in --work")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--real", nargs="*", default=None, help="real clips (names in ../shared/data/videos) instead")
    p.add_argument("--real-frames", type=int, default=90)
    p.add_argument("--methods", nargs="+", default=None, choices=camera.SFM_METHODS,
                   help="score these solve_path attempts alone (even a path that fails the check)")
    p.add_argument("--json", default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    rows = run_real(args) if args.real is not None else run_scenes(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
