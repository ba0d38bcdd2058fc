"""Fit from one camera, check in the three others: the calibrated 4-camera capture of Pose2Sim.

    .venv/core/bin/python benchmarks/motion_pose2sim.py [--data ../shared/data/pose2sim_multiperson]
        [--fit-camera cam01] [--frames 100] [--limb-depth] [--set FIELD=VALUE ...] [--json OUT]

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
    p.add_argument("--limb-depth", action="store_true",
                   help="also score each limb segment's depth in the fitted camera, the fit's and BlazePose's 3D "
                        "landmarks', against the keypoints triangulated from all four cameras; and where the fit "
                        "puts each person and how large it makes them, against the same")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="FitConfig overrides, e.g. w_depth_order=0")
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
    from motion_synth import setting

    over = {k: setting(getattr(FitConfig, k), v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = FitConfig(device=args.device, **over)
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
            "median_px_per_pair": [float(np.median(err[r, q][both[r, q]])) for r, q in pairs],
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
    if args.limb_depth:
        fit_cam = np.einsum("tab,ptnb->ptna", res.state.world_to_cam[:, :3, :3], coco) + res.state.world_to_cam[None, :, None, :3, 3]
        report["limb_depth"] = limb_depth(calib, inputs, scale, fc, fit_cam, report, people_dirs[fc].parent / "ingest",
                                          args.min_confidence)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


# COCO-17 limb segments (from, to): thighs, shins, upper arms, forearms
SEGMENTS = {"thigh": ((11, 13), (12, 14)), "shin": ((13, 15), (14, 16)), "upper arm": ((5, 7), (6, 8)), "forearm": ((7, 9), (8, 10))}
# BlazePose landmark of each COCO-17 keypoint
BLAZE_OF_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
SIZE_PARTS = {"shoulders": ((5, 6),), "hips": ((11, 12),), **SEGMENTS}  # what --limb-depth's size table compares
DEPTH_STEP = 0.08  # m: smaller depth steps have no sign worth scoring
TRIANGULATION_PX = 50.0  # source px (a tenth of a person here): a triangulated keypoint whose views miss it by more is left out


def triangulate(P: list[np.ndarray], uv: list[np.ndarray]) -> np.ndarray:
    """Linear (DLT) triangulation of one point from >= 2 views: P [3,4] projections, uv [2] px."""
    rows = []
    for Pi, (u, v) in zip(P, uv):
        rows += [u * Pi[2] - Pi[0], v * Pi[2] - Pi[1]]
    x = np.linalg.svd(np.asarray(rows))[2][-1]
    return x[:3] / x[3]


def limb_depth(calib: dict, inputs: dict, scale: dict, fc: str, fit_cam: np.ndarray, report: dict, ingest: Path,
               min_conf: float) -> dict:  # fmt: skip
    """Each limb segment's depth step in camera ``fc`` (how much nearer or farther its end is than
    its start), from the keypoints triangulated in all cameras where a person is matched (the
    reference), from the fit (``fit_cam`` [P,T,17,3], camera ``fc``'s frame) and from the 3D
    landmarks of BlazePose's landmark model run on ``fc``'s frames: how often the sign is right
    where the reference's step exceeds ``DEPTH_STEP``, and the median error."""
    from motion_blazepose_depth import world_landmarks

    from core.people.blazepose import LandmarkModel
    from core.people.ingest import Frames
    from core.people.mediapipe_models import find_models

    model = LandmarkModel(find_models(None)["pose_landmark_full.tflite"], 1)
    frames = Frames(ingest)
    partner = {c: dict(r["pairs"]) for c, r in report["cameras"].items()}
    proj = {c: calib[c]["K"] @ calib[c]["world_to_cam"][:3] for c in calib}
    w2c = calib[fc]["world_to_cam"]
    det_fc = inputs[fc].keypoints
    rows: dict[str, list[list[float]]] = {k: [] for k in SEGMENTS}
    hips: dict[str, list[np.ndarray]] = {pid: [] for pid in inputs[fc].ids}  # fit - reference, hips' midpoint
    lengths: dict[str, dict[str, list[tuple[float, float]]]] = {pid: {k: [] for k in SIZE_PARTS} for pid in inputs[fc].ids}  # (fit, reference) m
    for p, pid in enumerate(inputs[fc].ids):
        others = [(c, inputs[c].ids.index(partner[c][pid])) for c in partner if pid in partner[c]]
        for t in range(min(fit_cam.shape[1], len(frames))):
            kp = det_fc[p, t]
            if (kp[[5, 6, 11, 12], 2] < min_conf).any():
                continue
            views = {fc: kp[:, :2] / scale[fc]}
            conf = {fc: kp[:, 2]}
            for c, q in others:
                if t < inputs[c].keypoints.shape[1]:
                    views[c], conf[c] = inputs[c].keypoints[q, t, :, :2] / scale[c], inputs[c].keypoints[q, t, :, 2]
            ref = np.full((17, 3), np.nan)
            for j in range(17):
                seen = [c for c in views if conf[c][j] >= min_conf]
                if len(seen) >= 3:
                    x = triangulate([proj[c] for c in seen], [views[c][j] for c in seen])
                    back = [proj[c] @ np.append(x, 1.0) for c in seen]
                    miss = max(float(np.linalg.norm(u[:2] / u[2] - views[c][j])) for c, u in zip(seen, back))
                    if miss < TRIANGULATION_PX:  # the views agree: the people matched are one person
                        ref[j] = w2c[:3, :3] @ x + w2c[:3, 3]
            world = world_landmarks(model, frames[t], kp[kp[:, 2] >= min_conf, :2], kp[[11, 12], :2].mean(0), kp[[5, 6], :2].mean(0))
            blaze = world[list(BLAZE_OF_COCO)]
            if np.isfinite(ref[[11, 12]]).all():
                hips[pid].append(np.r_[fit_cam[p, t, [11, 12]].mean(0) - ref[[11, 12]].mean(0), ref[[11, 12], 2].mean()])
            for name, sides in SIZE_PARTS.items():
                for a, b in sides:
                    if np.isfinite(ref[[a, b]]).all():
                        lengths[pid][name].append((float(np.linalg.norm(fit_cam[p, t, b] - fit_cam[p, t, a])), float(np.linalg.norm(ref[b] - ref[a]))))
            for name, sides in SEGMENTS.items():
                for a, b in sides:
                    if np.isfinite(ref[[a, b]]).all():
                        rows[name].append([ref[b, 2] - ref[a, 2], fit_cam[p, t, b, 2] - fit_cam[p, t, a, 2], blaze[b, 2] - blaze[a, 2]])
    out: dict = {"hips": {}}
    print(f"\nwhere the fit puts each person in {fc}: its hips' midpoint against the triangulated one, median over frames")
    print("| person | frames | right m | down m | farther m | the reference's depth m |")
    print("|---|---|---|---|---|---|")
    for pid, d in hips.items():
        if d:
            m = np.median(np.asarray(d), axis=0)
            out["hips"][pid] = {"frames": len(d), "offset_m": m[:3].tolist(), "depth_m": float(m[3])}
            print(f"| {pid} | {len(d)} | {m[0]:+.2f} | {m[1]:+.2f} | {m[2]:+.2f} | {m[3]:.2f} |")
    print("\nthe fitted body's size: each part's length in the fit over the triangulated one, median over frames "
          "(the triangulated length in m)")  # fmt: skip
    print("| person | " + " | ".join(SIZE_PARTS) + " | all |")
    print("|---|" + "---|" * (len(SIZE_PARTS) + 1))
    for pid, parts in lengths.items():
        if any(parts.values()):
            cells, ratio = {}, []
            for name, pairs in parts.items():
                a = np.asarray(pairs, float).reshape(-1, 2)
                ratio += list(a[:, 0] / a[:, 1])
                cells[name] = (float(np.median(a[:, 0] / a[:, 1])), float(np.median(a[:, 1]))) if len(a) else None
            out.setdefault("size", {})[pid] = {**cells, "all": float(np.median(ratio))}
            print(f"| {pid} | " + " | ".join("-" if c is None else f"{c[0]:.2f} ({c[1]:.2f})" for c in cells.values())
                  + f" | {np.median(ratio):.2f} |")  # fmt: skip
    print(f"\nlimb depth in {fc} against the keypoints triangulated in 3 or 4 cameras "
          f"(segment-frames with a step over {DEPTH_STEP * 100:.0f} cm):")  # fmt: skip
    print("| segment | frames | the fit: sign right, median error mm | BlazePose 3D: sign right, median error mm |")
    print("|---|---|---|---|")
    for name, r in [*rows.items(), ("all", [x for v in rows.values() for x in v])]:
        a = np.asarray(r, float).reshape(-1, 3)
        big = np.abs(a[:, 0]) > DEPTH_STEP
        cell = {}
        for k, who in ((1, "fit"), (2, "blazepose")):
            cell[who] = (float(np.mean(np.sign(a[big, 0]) == np.sign(a[big, k]))) if big.any() else None,
                         float(1000 * np.median(np.abs(a[:, 0] - a[:, k]))) if len(a) else None)  # fmt: skip
        out[name] = {"frames": int(big.sum()), **cell}
        fmt = lambda c: "-" if c[0] is None else f"{c[0]:.0%}, {c[1]:.0f}"  # noqa: E731
        print(f"| {name} | {big.sum()} | {fmt(cell['fit'])} | {fmt(cell['blazepose'])} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
