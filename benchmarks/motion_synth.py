"""Accuracy of the motion stage on synthetic scenes with exact ground truth.

    .venv/core/bin/python benchmarks/motion_synth.py [--people 1 2 4] [--cameras static orbit]
        [--seed 0 1 2] [--frames 90] [--size 640x360] [--noise 3] [--drop 0.1] [--device cpu]
        [--json OUT] [--save DIR] [--search-fov | --fov-only] [--hfov 55] [--camera-distance 7]
        [--set FIELD=VALUE ...] [--jobs N [--threads 1]]
        [--start truth|truth-pose|truth-root|truth-world|truth-ends [--ends 5]]
        [--no-feet]

For each camera kind and number of people: ``core synth`` renders a scene (stand-in bodies,
people occluding each other), its ground-truth 2D keypoints are degraded like a detector's
(Gaussian noise of ``--noise`` px, ``--drop`` of the visible keypoints lost; occluded ones are
already missing), with heels and big toes alike unless ``--no-feet``; the motion stage fits it
-- the orbiting camera's path solved by COLMAP from the rendered background, scaled by the
people -- and ``core eval`` compares the result with the ground truth. Prints a markdown table
(the README's) and writes every number with --json.
Intrinsics are the scene's (as metadata would give them) unless --search-fov (then a line under
each row gives the FOV found against the truth).

Each seed is another scene (other people, paths and noise). W-MPJPE aligns each person once, on
their first two frames (as WHAM), so one scene's figure swings with how well those two frames
were fitted; WA-MPJPE (aligned on the whole clip) shows the path itself. Compare code changes on
several seeds: the ``mean`` row per scene kind.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import bundle as bd  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.motion.camera import choose_focal, search_fov, solve_camera  # noqa: E402
from core.motion.fit import FitConfig, Observations  # noqa: E402
from core.motion.inputs import intrinsics, read_synth  # noqa: E402
from core.motion.solve import fit_motion  # noqa: E402
from core.motion.stage import make_bundle  # noqa: E402


def read_video(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def setting(default: object, text: str) -> object:
    """A --set value in the type of the field's default (bool("False") would be True)."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise SystemExit(f"--set: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return type(default)(text)


def run_one(model, folder: Path, camera: str, seed: int, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    inp = read_synth(folder, noise_px=args.noise, drop=args.drop, seed=seed)
    num_t = inp.num_frames
    over = {k: setting(getattr(FitConfig, k), v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = FitConfig(device=args.device, **over)
    t0 = time.perf_counter()
    focal = choose_focal(inp, cfg).focal_px if args.search_fov else inp.focal_px
    K = intrinsics(inp.image_size, focal, num_t)
    cam = solve_camera(read_video(folder / "video.mp4"), inp, K, mode="moving" if camera == "orbit" else "auto")
    t_cam = time.perf_counter() - t0
    feet = truth_feet(model, folder, inp, args.noise, args.drop, seed) if args.feet else None
    obs = Observations(inp.keypoints, K, np.tile(np.eye(4), (num_t, 1, 1)), inp.image_size, inp.labels, inp.label_scale,
                       foot_keypoints=feet)  # fmt: skip
    start = {} if args.start in ("fit", "truth-ends") else truth_start(args.start, model, folder, inp)
    with truth_at_ends(model, folder, inp, args.ends if args.start == "truth-ends" else 0):
        res = fit_motion(model, obs, cfg, cam_path=cam.cam_to_scene, cam_points=cam.points, **start)
    seconds = time.perf_counter() - t0
    pred = make_bundle(inp, res.state, K, model, video=None, extra={})
    ev = evaluate(pred, bd.read_bundle(folder / "bundle"))
    if args.save:
        bd.write_bundle(Path(args.save) / folder.name, pred)
    return {
        "camera": camera,
        "camera_solved": cam.kind,
        "people": len(inp.ids),
        "frames": num_t,
        "focal_px": float(focal),
        "focal_gt_px": float(inp.focal_px),
        "reprojection_px": float(np.nanmean(res.reprojection_px)),
        "foot_reprojection_px": None if res.foot_reprojection_px is None else float(np.nanmean(res.foot_reprojection_px)),
        # people the world stage carried off their keypoints and its guard fitted again
        "world_guard": None if res.guard is None else [inp.ids[p] for p in res.guard.people],
        # people found standing on another level than the floor (m above it)
        "levels": res.ground.off_floor(inp.ids),
        "seconds": seconds,
        "seconds_camera": t_cam,
        "eval": ev,
    }


def truth_feet(model, folder: Path, inp, noise_px: float, drop: float, seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """[P, T, 4, 3] heels and big toes (``core.keypoints.FOOT_NAMES``) as a detector would give
    them (unless ``--no-feet``): the true bodies' foot keypoints projected by the true cameras,
    seen where the scene's ankle on that side is, then degraded as ``read_synth`` degrades COCO-17."""
    from core.motion.body import SparseBody
    from core.motion.init import from_bundle
    from core.motion.inputs import degrade_keypoints
    from core.motion.solve import posed_points, project_px

    world = from_bundle(folder / "bundle", inp, model).world
    pts = posed_points(SparseBody(model), world, "cpu")["foot_keypoints"]
    with np.load(folder / "bundle" / "camera.npz", allow_pickle=False) as z:
        K = z["K"].astype(np.float64)
    with np.load(folder / "gt" / "keypoints.npz", allow_pickle=False) as z:
        ankle_seen = z["keypoints"][:, :, [15, 15, 16, 16], 2] > 0  # left heel, left toe, right heel, right toe
    return degrade_keypoints(project_px(pts, K, world.world_to_cam), ankle_seen, noise_px, drop, np.random.default_rng(seed + 1000))


def truth_start(kind: str, model, folder: Path, inp) -> dict:  # type: ignore[no-untyped-def]
    """``fit_motion``'s start from the scene's own truth (``--start``), to tell what the fit's
    search misses from what its objective moves away from: ``truth`` the true bodies in the
    camera frame, ``truth-pose`` their pose and shape only (the rigid start places them),
    ``truth-root`` their root and shape with relaxed limbs, ``truth-world`` the true world and
    cameras (only the world stage runs)."""
    from dataclasses import replace

    import torch

    from core.motion.body import SparseBody
    from core.motion.fit import relaxed_pose, rigid_transform_bodies
    from core.motion.init import from_bundle

    world = from_bundle(folder / "bundle", inp, model).world
    if kind == "truth-world":
        return {"init_world": world}
    betas = torch.as_tensor(world.betas, dtype=torch.float32)
    rest_pelvis = SparseBody(model).rest_joints(betas)[:, 0].numpy().astype(np.float64)
    w2c = world.world_to_cam
    rot, tr = rigid_transform_bodies(rest_pelvis, world.global_rot, world.transl, w2c[:, :3, :3], w2c[:, :3, 3])
    cam = replace(world, global_rot=rot, transl=tr)
    if kind == "truth-root":
        cam = replace(cam, body_pose=np.broadcast_to(relaxed_pose(), cam.body_pose.shape).copy())
    return {"init": cam, "init_root": kind != "truth-pose"}


@contextlib.contextmanager
def truth_at_ends(model, folder: Path, inp, frames: int):  # type: ignore[no-untyped-def]
    """``--start truth-ends``: while the fit runs, the start's limbs (``solve.start_poses``) on the
    first and last ``frames`` frames are replaced by the truth's, the rest of the fit as usual --
    what a perfect start at the clip's ends would be worth (docs/motion.md). 0: the fit as it is."""
    if frames <= 0:
        yield
        return
    from dataclasses import replace
    from unittest import mock

    from core.motion import solve
    from core.motion.init import from_bundle

    truth = from_bundle(folder / "bundle", inp, model).world.body_pose
    usual = solve.start_poses

    def start_poses(*a, **kw):  # type: ignore[no-untyped-def]
        out = usual(*a, **kw)
        pose = out.body_pose.copy()
        pose[:, :frames], pose[:, -frames:] = truth[:, :frames], truth[:, -frames:]
        return replace(out, body_pose=pose)

    with mock.patch.object(solve, "start_poses", start_poses):
        yield


def _set_threads(threads: int) -> None:
    """Worker start-up for --jobs: ``threads`` per process, so N scenes use N x threads cores.
    On Linux a worker also ends with the run: killed, the run would otherwise leave its workers
    fitting on, unseen, for as long as their scenes take."""
    import torch

    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@functools.cache
def body_model(device: str):  # type: ignore[no-untyped-def]
    """The stand-in body model, loaded once per process (and device)."""
    from core.body.model import BodyModel
    from core.body.standin import ensure_standin

    return BodyModel(ensure_standin(ROOT / ".cache" / "standin", genders=("neutral",)), device=device)


def scene_result(camera: str, n: int, seed: int, folder: Path, args: argparse.Namespace) -> dict:
    """Render the scene if missing (or made by an older generator) and fit and score it."""
    from core.synth.generate import generate, is_current
    from core.synth.scene import SynthConfig

    model = body_model(args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if not is_current(folder):
        scene = SynthConfig(people=n, frames=args.frames, size=(w, h), seed=seed + n, camera=camera,
                            hfov_deg=args.hfov, camera_distance=args.camera_distance)  # fmt: skip
        generate(scene, folder, model)
    if args.fov_only:
        inp = read_synth(folder, noise_px=args.noise, drop=args.drop, seed=seed, masks=False)
        found = search_fov(inp.keypoints, inp.image_size)
        err = 100 * (found.focal_px / inp.focal_px - 1)
        fov_row = (f"| {camera} | {n} | {found.hfov_deg:.1f} | {hfov(inp.focal_px, w):.1f} | {err:+.1f} | "
                   f"{found.pitch_deg:.1f} | {found.source} |")  # fmt: skip
        return {"camera": camera, "people": n, "seed": seed, "focal_px": found.focal_px, "focal_gt_px": inp.focal_px,
                "fov_row": fov_row}  # fmt: skip
    return {"seed": seed, "scene": folder.name, **run_one(model, folder, camera, seed, args)}


def hfov(focal_px: float, width: int) -> float:
    return math.degrees(2 * math.atan(width / 2 / focal_px))


def row(r: dict, seed: str) -> str:
    m, cam = r["eval"]["mean"], r["eval"]["camera"]
    return (
        f"| {r['camera']} | {r['people']} | {seed} | {m['pa_mpjpe_mm']:.0f} | {m['mpjpe_mm']:.0f} | "
        f"{m['w_mpjpe_mm']:.0f} | {m['wa_mpjpe_mm']:.0f} | {m['rte_mm']:.0f} | {m['jitter_pred']:.0f} ({m['jitter_gt']:.0f}) | "
        f"{m['foot_slide_pred_mm']:.1f} / {m['foot_slide_planted_mm']:.1f} ({m['foot_slide_gt_mm']:.1f}) | {r['eval']['id_switches']} | "
        f"{len(r['eval']['missed'])} | {cam['pitch_err_deg']:.1f} / {cam['roll_err_deg']:.1f} | {cam['height_ratio']:.2f} | "
        f"{r['reprojection_px']:.1f} | {r['seconds']:.0f} |"
    )


def mean_over_seeds(runs: list[dict]) -> dict:
    """One result whose numbers are the means of ``runs`` (the same scene kind, several seeds);
    ID switches and missed people are summed."""
    keys = runs[0]["eval"]["mean"].keys()
    mean = {k: float(np.mean([r["eval"]["mean"][k] for r in runs])) for k in keys}
    return {
        **runs[0],
        "reprojection_px": float(np.mean([r["reprojection_px"] for r in runs])),
        "seconds": float(np.mean([r["seconds"] for r in runs])),
        "eval": {
            "mean": mean,
            "id_switches": sum(r["eval"]["id_switches"] for r in runs),
            "missed": [m for r in runs for m in r["eval"]["missed"]],
            "camera": {k: float(np.mean([r["eval"]["camera"][k] for r in runs])) for k in runs[0]["eval"]["camera"]},
        },
    }


HEADER = (
    "| camera | people | seed | PA-MPJPE mm | MPJPE mm | W-MPJPE mm | WA-MPJPE mm | RTE mm | jitter m/s³ (GT) | "
    "foot slide mm: own contacts / truth's (GT) | ID switches | missed | camera pitch / roll err ° | camera height / GT | reproj. px | time s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


FOV_HEADER = (
    "| camera | people | FOV found ° | true FOV ° | focal error % | camera pitch found ° | source |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--cameras", nargs="+", default=["static", "orbit"], choices=["static", "orbit"])
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--size", default="640x360")
    p.add_argument("--noise", type=float, default=3.0, help="keypoint noise, pixels (std)")
    p.add_argument("--drop", type=float, default=0.1, help="fraction of visible keypoints dropped")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="scene seeds; with several, a mean row per scene kind follows")
    p.add_argument("--device", default="cpu")
    p.add_argument("--search-fov", action="store_true", help="estimate the focal length instead of using the scene's")
    p.add_argument("--hfov", type=float, default=55.0, help="the scenes' horizontal FOV, degrees")
    p.add_argument("--camera-distance", type=float, default=7.0, help="the camera's distance from the scene centre, m")
    p.add_argument("--fov-only", action="store_true", help="only the FOV search, against the scene's FOV (no fit)")
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_motion"), help="where the scenes are rendered")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="FitConfig overrides, e.g. w_smooth=2")
    p.add_argument("--json", default=None)
    p.add_argument("--save", default=None, help="write each fitted bundle to SAVE/<scene> (for analysis)")
    p.add_argument("--start", default="fit", choices=["fit", "truth", "truth-pose", "truth-root", "truth-world", "truth-ends"],
                   help="start the fit from the scene's truth (docs/motion.md: what is left at the clip's start)")  # fmt: skip
    p.add_argument("--ends", type=int, default=5, help="with --start truth-ends: frames at each end that start from the truth's limbs")
    p.add_argument("--feet", action=argparse.BooleanOptionalAction, default=True,
                   help="give the fit heels and big toes besides COCO-17 (the truth's, degraded alike), as the people "
                        "stage's BlazePose or a whole-body detector does; --no-feet: COCO-17 only")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="scenes fitted at once, one process each")
    p.add_argument("--threads", type=int, default=1, help="threads per process with --jobs")
    args = p.parse_args()

    from core.body.standin import ensure_standin

    w, h = (int(v) for v in args.size.lower().split("x"))
    lens = "" if (args.hfov, args.camera_distance) == (55.0, 7.0) else f"_h{args.hfov:g}_d{args.camera_distance:g}"
    scenes = [(camera, n, seed, Path(args.work) / f"{camera}_{n}p_{args.frames}f_{w}x{h}_s{seed}{lens}")
              for camera in args.cameras for n in args.people for seed in args.seed]  # fmt: skip
    ensure_standin(ROOT / ".cache" / "standin", genders=("neutral",))  # made once, before any worker reads it
    print(FOV_HEADER if args.fov_only else HEADER, flush=True)
    if args.jobs > 1:  # a process per scene, --threads each; the rows print in order once all are done
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_set_threads,
                                 initargs=(args.threads,)) as pool:  # fmt: skip
            futures = [pool.submit(scene_result, *sc, args) for sc in scenes]
            for done in as_completed(futures):
                r = done.result()
                print(f"  done: {r['camera']} {r['people']}p seed {r['seed']}", file=sys.stderr, flush=True)
                write_json(args, [f.result() for f in futures if f.done()])  # what is done survives a kill
            results = [f.result() for f in futures]
    else:
        results = []
        for sc in scenes:
            results.append(scene_result(*sc, args))
            write_json(args, results)
    for camera in args.cameras:
        for n in args.people:
            runs = [r for r in results if r["camera"] == camera and r["people"] == n]
            for r in runs:
                print(r["fov_row"] if args.fov_only else row(r, str(r["seed"])), flush=True)
                if args.search_fov:
                    print(f"  (FOV search: {hfov(r['focal_px'], w):.1f} deg against {hfov(r['focal_gt_px'], w):.1f}, "
                          f"focal length {100 * (r['focal_px'] / r['focal_gt_px'] - 1):+.1f} %)", flush=True)  # fmt: skip
            if len(runs) > 1 and not args.fov_only:
                print(row(mean_over_seeds(runs), "mean"), flush=True)
    return 0


def write_json(args: argparse.Namespace, results: list[dict]) -> None:
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        text = json.dumps({"settings": settings, "results": results}, indent=1, default=float) + "\n"
        Path(args.json).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
