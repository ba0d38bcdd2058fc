"""Time the motion fit of a 300-frame, 2-person clip on CUDA and on CPU (same code, same settings).

    python benchmarks/motion_gpu.py --model .cache/standin/SMPLX_NEUTRAL.npz [--frames 300]
        [--people 2] [--devices cuda cuda-eager cpu] [--no-masks] [--no-feet] [--json OUT]

The scene is made here by posing the body model along smooth walking paths on a floor, seen by a
static camera, and projecting its COCO-17 keypoints, heels and big toes (as the people stage
gives them; ``--no-feet``: COCO-17 only) with 3 px noise and 10 % of them dropped.
Its person-label maps (for the silhouette and depth-order terms, as the people stage's masks feed
them) are painted from 4000 projected surface points per person, nearer people over farther ones,
at the fit's mask resolution (``--no-masks`` leaves them out). Prints, per device,
the wall time of each stage of ``core.motion.solve.fit_motion`` and the accuracy against the
scene (camera-frame MPJPE and floor height of the feet), and the time ratios measured in the
same run; the devices' results are compared joint by joint. ``cuda-eager`` is CUDA with
``FitConfig.cuda_graphs`` off: every kernel launched from Python, as before the fit recorded its
loss evaluations as CUDA graphs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.body.model import BodyModel  # noqa: E402
from core.motion.body import SparseBody  # noqa: E402
from core.motion.fit import FitConfig, Observations  # noqa: E402
from core.motion.inputs import MASK_MAX_SIDE  # noqa: E402
from core.motion.solve import body_points, fit_motion  # noqa: E402


def label_maps(points: np.ndarray, size: tuple[int, int], max_side: int = MASK_MAX_SIDE) -> tuple[np.ndarray, float]:
    """[P,T,N,3] camera-frame surface points -> [T,h,w] person-index maps (0 background, p+1
    person p; nearer people painted over farther ones) and their scale (h / image height)."""
    from scipy.ndimage import binary_closing, binary_fill_holes

    scale = min(1.0, max_side / max(size))
    w, h = round(size[0] * scale), round(size[1] * scale)
    num_p, num_t = points.shape[:2]
    maps = np.zeros((num_t, h, w), np.uint8)
    for t in range(num_t):
        for p in np.argsort(-points[:, t, :, 2].mean(-1)):  # farthest first
            uv = points[p, t, :, :2] / points[p, t, :, 2:] * scale
            x, y = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            mask = np.zeros((h, w), bool)
            mask[y[ok], x[ok]] = True
            mask = binary_fill_holes(binary_closing(mask, np.ones((3, 3), bool)))
            maps[t][mask] = p + 1
    return maps, scale


def walking_scene(model: BodyModel, people: int, frames: int, size=(1280, 720), seed: int = 0, masks: bool = True, feet: bool = True):  # type: ignore[no-untyped-def]
    """Ground-truth joints [P,T,55,3] (world), keypoints [P,T,17,3], K [T,3,3], world_to_cam [4,4],
    size, label maps [T,h,w] with their scale (None, 1.0 without masks), and foot keypoints
    [P,T,4,3] (None without feet)."""
    from smplx.lbs import batch_rodrigues

    rng = np.random.default_rng(seed)
    body = SparseBody(model, num_surface=4000 if masks else 384)
    w, h = size
    f = (w / 2) / math.tan(math.radians(55) / 2)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    # camera 7 m from the origin, 2.2 m high, looking at (0, 0.85, 0)
    eye, target = np.array([0.0, 2.2, 7.0]), np.array([0.0, 0.85, 0.0])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 1.0, 0.0])  # right = forward x up
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    t = np.arange(frames) / 30.0
    betas = rng.normal(size=(people, 10)) * 0.7
    pose = np.zeros((people, frames, 21, 3))
    rot = np.zeros((people, frames, 3))
    trans = np.zeros((people, frames, 3))
    for p in range(people):
        phase, speed = rng.uniform(0, 6), rng.uniform(0.8, 1.2)
        swing = 0.45 * np.sin(2 * np.pi * speed * t + phase)
        pose[p, :, 0, 0], pose[p, :, 1, 0] = -swing, swing  # hips
        pose[p, :, 3, 0], pose[p, :, 4, 0] = np.maximum(0, swing) * 1.3, np.maximum(0, -swing) * 1.3  # knees
        pose[p, :, 15, 2], pose[p, :, 16, 2] = -1.25, 1.25  # arms down
        pose[p, :, 15, 1], pose[p, :, 16, 1] = 0.4 * swing, 0.4 * swing  # arm swing
        heading = rng.uniform(-np.pi, np.pi) + 0.3 * np.sin(0.4 * t + phase)  # gently curving paths
        rot[p, :, 1] = heading
        step = np.stack([np.sin(heading), np.zeros(frames), np.cos(heading)], -1) * 1.1 * speed / 30.0
        start = np.array([(p - (people - 1) / 2) * 1.6, 0.0, rng.uniform(-1.0, 1.0)])  # side by side
        trans[p] = start + np.cumsum(step, 0)
    with torch.no_grad():
        args = (
            torch.as_tensor(np.repeat(betas, frames, 0), dtype=torch.float32),
            batch_rodrigues(torch.as_tensor(rot.reshape(-1, 3), dtype=torch.float32)),
            torch.as_tensor(pose.reshape(-1, 63), dtype=torch.float32),
        )
        out = body(*args, torch.zeros(people * frames, 3))
        low = out.feet.reshape(people, frames, 6, 3)[..., 1].amin(-1).numpy()
        trans[..., 1] = -low  # lowest foot on the floor in every frame
        out = body(*args, torch.as_tensor(trans.reshape(-1, 3), dtype=torch.float32))
    joints = out.joints.numpy().reshape(people, frames, 55, 3).astype(np.float64)

    def detected(points: torch.Tensor) -> np.ndarray:  # [B, N, 3] world -> [P, T, N, 3] noisy pixels, confidence
        pc = points.numpy().reshape(people, frames, -1, 3).astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        uv = pc @ K.T
        uv = uv[..., :2] / uv[..., 2:]
        kps = np.concatenate([uv + rng.normal(size=uv.shape) * 3.0, np.full(uv.shape[:-1] + (1,), 0.9)], -1)
        kps[..., 2][rng.random(kps.shape[:-1]) < 0.1] = 0.0
        return kps

    kps = detected(out.coco)
    foot_kps = detected(out.foot_keypoints) if feet else None
    labels, scale = None, 1.0
    if masks:
        surface = out.surface.numpy().reshape(people, frames, -1, 3).astype(np.float64)
        labels, scale = label_maps((surface @ w2c[:3, :3].T + w2c[:3, 3]) @ K.T, size)
    return joints, kps, np.tile(K, (frames, 1, 1)), w2c, size, labels, scale, foot_kps


def run(kind: str, model_path: str, scene, iters_scale: float) -> dict:  # type: ignore[no-untyped-def]
    """Fit the scene on ``kind``: cpu, cuda, or cuda-eager (CUDA without recorded graphs)."""
    joints_gt, kps, K, w2c, size, labels, label_scale, foot_kps = scene
    device = kind.removesuffix("-eager")
    model = BodyModel(model_path, device=device)
    base = FitConfig(device=device)
    iter_fields = ("iters_rigid", "iters_limbs", "iters_heading", "iters_pose", "iters_world")
    cfg = FitConfig(device=device, cuda_graphs=not kind.endswith("-eager"),
                    **{k: max(1, round(getattr(base, k) * iters_scale)) for k in iter_fields})  # fmt: skip
    num_t = kps.shape[1]
    obs = Observations(kps, K, np.tile(np.eye(4), (num_t, 1, 1)), size, labels=labels, label_scale=label_scale, foot_keypoints=foot_kps)
    marks: list[tuple[str, float]] = []

    def progress(frac: float, msg: str) -> None:
        if not marks or marks[-1][0] != msg:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            marks.append((msg, time.perf_counter()))

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = fit_motion(model, obs, cfg, progress=progress)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    stages = {}
    ends = [m[1] for m in marks[1:]] + [t0 + total]
    for (name, start), end in zip(marks, ends):
        stages[name] = round(end - start, 3)
    joints, feet, _ = body_points(SparseBody(model, device=device), res.state, device)
    m = res.state.world_to_cam
    jc = np.einsum("tab,ptjb->ptja", m[:, :3, :3], joints[:, :, :22]) + m[None, :, None, :3, 3]
    gc = joints_gt[:, :, :22] @ w2c[:3, :3].T + w2c[:3, 3]
    return {
        "device": kind,
        "name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "seconds": round(total, 3),
        "stages": stages,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
        "mpjpe_cam_mm": float(1000 * np.linalg.norm(jc - gc, axis=-1).mean()),
        "feet_floor_mm": float(1000 * np.abs(feet[..., 1].min(-1)).mean()),
        "reprojection_px": float(np.nanmean(res.reprojection_px)),
        "foot_reprojection_px": None if res.foot_reprojection_px is None else float(np.nanmean(res.foot_reprojection_px)),
        "joints_cam": jc,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / ".cache" / "standin" / "SMPLX_NEUTRAL.npz"), help="SMPL-X model file")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--people", type=int, default=2)
    p.add_argument("--devices", nargs="+", default=["cuda", "cpu"], help="cpu, cuda, cuda-eager (CUDA without recorded graphs)")
    p.add_argument("--no-masks", dest="masks", action="store_false", help="keypoints only (no label maps)")
    p.add_argument("--no-feet", dest="feet", action="store_false", help="COCO-17 only (no heels and big toes)")
    p.add_argument("--iters-scale", type=float, default=1.0, help="multiply the default iteration counts")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    scene = walking_scene(BodyModel(args.model), args.people, args.frames, masks=args.masks, feet=args.feet)
    results = []
    for dev in args.devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"{dev}: no CUDA here, skipped")
            continue
        r = run(dev, args.model, scene, args.iters_scale)
        results.append(r)
        print(
            f"{r['device']:>5} ({r['name']}, {r['threads']} threads): {r['seconds']:.1f} s  stages {r['stages']}  "
            f"MPJPE(cam) {r['mpjpe_cam_mm']:.0f} mm  feet-floor {r['feet_floor_mm']:.0f} mm  "
            f"reproj {r['reprojection_px']:.1f} px (feet {r['foot_reprojection_px'] or float('nan'):.1f})  peak GPU {r['peak_gpu_mb']} MB",
            flush=True,
        )
    by = {r["device"]: r for r in results}
    summary = {}
    for slow, fast in (("cpu", "cuda"), ("cuda-eager", "cuda"), ("cpu", "cuda-eager")):
        if slow in by and fast in by:
            ratio = by[slow]["seconds"] / by[fast]["seconds"]
            apart = float(1000 * np.linalg.norm(by[fast]["joints_cam"] - by[slow]["joints_cam"], axis=-1).mean())
            summary[f"{slow}_over_{fast}"] = ratio
            summary[f"{fast}_vs_{slow}_joint_mm"] = apart
            print(f"{slow} / {fast} time: {ratio:.1f}x; mean joint difference {apart:.1f} mm")
    if args.json:
        out = [{k: v for k, v in r.items() if k != "joints_cam"} for r in results]
        Path(args.json).write_text(json.dumps({"frames": args.frames, "people": args.people, "masks": args.masks, "feet": args.feet,
                                               "results": out, **summary}, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
