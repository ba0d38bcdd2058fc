"""Fit from one camera, check in the three others: the calibrated 4-camera capture of Pose2Sim.

    .venv/core/bin/python benchmarks/motion_pose2sim.py [--data ../shared/data/pose2sim_multiperson]
        [--fit-camera cam01] [--frames 100] [--json OUT]

The capture (Pose2Sim's Demo_MultiPerson: 4 synchronised 1088x1920 cameras, 60 fps, two people)
has no 3D ground truth, but it has a Qualisys calibration (``Calib.qca.txt``; ``Config.toml``
says ``convert_from = 'qualisys'``, ``binning_factor = 1``). So: run the people stage (offline
backend) on every camera, fit the motion from one camera with its calibrated intrinsics, carry
the fitted bodies into the capture's frame through that camera's calibrated pose, project their
COCO-17 keypoints into the other cameras and compare with the keypoints the people stage
detected there (people matched by the Hungarian method). The error measures the fit's depth,
scale and the pose parts one camera cannot see -- everything a monocular fit must guess.

Qualisys conventions (as Pose2Sim converts them): focal lengths and principal points are stored
x64 (sub-pixel units), the principal point relative to the sensor, minus the video window's
left/top; the ``transform`` is the camera's pose in the capture frame (rows of r = the camera's
axes, x, y, z = its position in mm) with the camera looking along its -z; the OpenCV
world-to-camera is ``Rx(pi) @ r`` and ``-Rx(pi) @ r @ position``. Lens distortion (k1 about -7e-4 after the /64)
is below a pixel here and ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.motion.body import SparseBody  # noqa: E402
from core.motion.fit import FitConfig, Observations  # noqa: E402
from core.motion.inputs import read_people_stage  # noqa: E402
from core.motion.solve import body_points, fit_motion  # noqa: E402
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pose2sim_multiperson"


def read_qualisys(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per camera serial: K [3,3] (source px), world_to_cam [4,4] (capture frame, metres), size (w, h)."""
    root = ET.parse(path).getroot()
    out = {}
    rx = np.diag([1.0, -1.0, -1.0])
    for cam in root.findall("cameras/camera"):
        fov = cam.find("fov_video").attrib
        left, top = float(fov["left"]), float(fov["top"])
        size = (int(float(fov["right"]) - left + 1), int(float(fov["bottom"]) - top + 1))
        it = cam.find("intrinsic").attrib
        K = np.array([
            [float(it["focalLengthU"]) / 64, 0, float(it["centerPointU"]) / 64 - left],
            [0, float(it["focalLengthV"]) / 64, float(it["centerPointV"]) / 64 - top],
            [0, 0, 1.0],
        ])  # fmt: skip
        tr = cam.find("transform").attrib
        r = np.array([[float(tr[f"r{i}{j}"]) for j in (1, 2, 3)] for i in (1, 2, 3)])
        pos = np.array([float(tr[c]) for c in "xyz"]) / 1000.0
        w2c = np.eye(4)
        w2c[:3, :3] = rx @ r
        w2c[:3, 3] = -rx @ r @ pos
        out[cam.attrib["serial"]] = {"K": K, "world_to_cam": w2c, "size": np.array(size)}
    return out


def people_for(video: Path, work: Path, frames: int) -> Path:
    """Run ingest + people (offline backend) on one camera; cached in ``work``."""
    job = JobDir(work)
    config = RunConfig(video=str(video), frame_end=frames, tracker="offline", keypoints="offline", max_people=4)
    run_pipeline(job, config, lambda *a: None, stages=[s for s in STAGES if s.name in ("ingest", "people")])
    return job.stage_dir("people")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--fit-camera", default="cam01")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--body-model", default=None, help="SMPL-X model (default: the generated stand-in)")
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_pose2sim"))
    p.add_argument("--min-confidence", type=float, default=0.5, help="detected keypoints below this are not compared")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    data = Path(args.data)
    if not (data / "Calib.qca.txt").exists():
        print(f"{data} has no Calib.qca.txt: the capture is not here")
        return 1
    from core.body.model import BodyModel
    from core.body.standin import ensure_standin

    calib = read_qualisys(data / "Calib.qca.txt")
    cams = sorted(calib)
    people_dirs = {c: people_for(data / f"{c}.mp4", Path(args.work) / c, args.frames) for c in cams}
    inputs = {c: read_people_stage(people_dirs[c], people_dirs[c].parent / "ingest") for c in cams}
    scale = {c: json.loads((people_dirs[c].parent / "ingest" / "meta.json").read_text())["scale"] for c in cams}

    model = BodyModel(args.body_model or ensure_standin(ROOT / ".cache" / "standin", genders=("neutral",)), device=args.device)
    fc = args.fit_camera
    inp = inputs[fc]
    num_t = inp.num_frames
    K_work = calib[fc]["K"].copy()
    K_work[:2] *= scale[fc]  # working pixels
    obs = Observations(inp.keypoints, np.tile(K_work, (num_t, 1, 1)), np.tile(np.eye(4), (num_t, 1, 1)),
                       inp.image_size, inp.labels, inp.label_scale, foot_keypoints=inp.foot_keypoints)  # fmt: skip
    cfg = FitConfig(device=args.device)
    res = fit_motion(model, obs, cfg)
    _, _, coco = body_points(SparseBody(model, device=args.device), res.state, args.device)  # [P,T,17,3] fit world
    # fit world -> fit camera (= calibrated camera fc) -> capture frame
    fit_to_capture = np.linalg.inv(calib[fc]["world_to_cam"])[None] @ res.state.world_to_cam  # [T,4,4]
    cap = np.einsum("tab,ptnb->ptna", fit_to_capture[:, :3, :3], coco) + fit_to_capture[None, :, None, :3, 3]
    report: dict = {"fit_camera": fc, "frames": num_t, "people_fitted": len(inp.ids),
                    "reprojection_px_fit_camera_source": float(np.nanmean(res.reprojection_px) / scale[fc]),
                    "cameras": {}}  # fmt: skip
    from scipy.optimize import linear_sum_assignment

    for c in cams:
        if c == fc:
            continue
        m = calib[c]["world_to_cam"]
        pc = np.einsum("ab,ptnb->ptna", m[:3, :3], cap) + m[:3, 3]
        uv = np.einsum("ab,ptnb->ptna", calib[c]["K"], pc)
        behind = pc[..., 2] < 0.1  # fitted points behind camera c (a depth gone wrong) are not compared
        uv = uv[..., :2] / np.maximum(uv[..., 2:3], 1e-6)
        det = inputs[c].keypoints.copy()
        det[..., :2] /= scale[c]  # source pixels
        n = min(det.shape[1], uv.shape[1])
        ok = det[:, :n, :, 2] >= args.min_confidence  # [D,T,17]
        err = np.linalg.norm(uv[:, None, :n] - det[None, :, :n, :, :2], axis=-1)  # [P,D,T,17]
        both = ok[None].repeat(len(uv), 0) & ~behind[:, None, :n]
        mean = np.where(both.sum((2, 3)) > 0, (err * both).sum((2, 3)) / np.maximum(both.sum((2, 3)), 1), np.inf)
        rows, cols = linear_sum_assignment(np.where(np.isfinite(mean), mean, 1e9))
        pairs = [(int(r), int(q)) for r, q in zip(rows, cols) if np.isfinite(mean[r, q])]
        errs = np.concatenate([err[r, q][both[r, q]] for r, q in pairs]) if pairs else np.zeros(0)
        heights = []
        for _, q in pairs:
            y = np.where(ok[q], det[q, :n, :, 1], np.nan)
            with np.errstate(all="ignore"):
                heights.append(np.nanmedian(np.nanmax(y, -1) - np.nanmin(y, -1)))
        report["cameras"][c] = {
            "pairs": [(inp.ids[r], inputs[c].ids[q]) for r, q in pairs],
            "mean_px": float(errs.mean()) if len(errs) else None,
            "median_px": float(np.median(errs)) if len(errs) else None,
            "person_height_px": float(np.nanmean(heights)) if heights else None,
            "keypoints_compared": int(len(errs)),
            "fitted_points_behind_camera": float(behind.mean()),
        }
    print(f"fit from {fc}: {len(inp.ids)} people, {num_t} frames, reprojection in {fc} "
          f"{report['reprojection_px_fit_camera_source']:.1f} px (source pixels)")  # fmt: skip
    print("| camera | people matched | mean 2D error px | median px | person height px | keypoints |")
    print("|---|---|---|---|---|---|")
    for c, r in report["cameras"].items():
        if r["mean_px"] is None:
            print(f"| {c} | 0 | - | - | - | 0 |")
            continue
        print(f"| {c} | {len(r['pairs'])} | {r['mean_px']:.1f} | {r['median_px']:.1f} | {r['person_height_px']:.0f} | {r['keypoints_compared']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
