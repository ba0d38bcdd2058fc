"""Render a synthetic scene and write the video, the ground-truth bundle and the 2D ground truth.

Layout of the output folder (docs/formats.md, "Synthetic scenes")::

    DIR/video.mp4          the clip (mp4v)
    DIR/bundle/            ground-truth result bundle (camera, per person motion + rig)
    DIR/gt/tracks.json     fps, frame count, image size, people ids and colours
    DIR/gt/keypoints.npz   COCO-17 keypoints with visibility flags, boxes, visible fraction
    DIR/gt/labels.npz      per-pixel person labels (0 background, i+1 person i)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import bundle as bd
from .. import keypoints as kp
from . import motion as mo
from . import render as rd
from .scene import CameraTrack, Palette, PersonSpec, SynthConfig, make_camera, plan_people

log = logging.getLogger("troupe.synth")

LIGHT_DIR = np.array([-0.45, 0.8, 0.4]) / np.linalg.norm([-0.45, 0.8, 0.4])  # towards the sun
# Raised whenever the same settings start giving different ground truth (a scene rendered by an
# older generator is stale: benchmarks/motion_synth.py renders it again). 2: turning on the spot
# takes quick steps instead of wringing the standing leg round.
GENERATOR_VERSION = 2
FACE_KEYPOINT_TOLERANCE = (
    0.04  # m: a face keypoint (a surface vertex) may lie this far behind the seen surface
)


@dataclass
class SynthResult:
    """Where everything went and how long it took."""

    out: Path
    video: Path
    bundle: Path
    gt: Path
    seconds: dict[str, float]  # time per phase: plan, body, render, write


def _part_of_vertex(rest: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[V] clothing part per rest vertex: 0 skin, 1 shirt, 2 trousers, 3 shoes, 4 hair."""
    owner = np.argmax(weights, axis=1)
    part = np.ones(len(rest), np.int64)  # shirt: spine, collars, shoulders, elbows
    part[np.isin(owner, [0, 1, 2, 4, 5])] = 2
    part[np.isin(owner, [7, 8, 10, 11])] = 3
    skin = np.isin(owner, [12, 15, 22, 23, 24, 20, 21]) | (owner >= 25)
    part[skin] = 0
    head = joints[15]
    hair = np.isin(owner, [15, 22, 23, 24]) & (
        (rest[:, 1] > head[1] + 0.06) | ((rest[:, 2] < head[2] - 0.02) & (rest[:, 1] > head[1] - 0.04))
    )
    part[hair] = 4
    return part


def vertex_albedo(rest: np.ndarray, joints: np.ndarray, weights: np.ndarray, palette: Palette) -> np.ndarray:
    """[V, 3] float32 RGB albedo of a person's rest vertices: clothes by body part (from the skin
    weights), horizontal shirt stripes (7 cm) when the palette has a stripe colour."""
    part = _part_of_vertex(rest, joints, weights)
    table = np.array([palette.skin, palette.shirt, palette.trousers, palette.shoes, palette.hair], np.float32)
    col = table[part]
    if palette.stripe is not None:
        band = np.floor((rest[:, 1] - joints[0, 1]) / 0.035).astype(np.int64) % 2 == 1
        col[(part == 1) & band] = palette.stripe
    return col


def keypoint_tolerance(rest: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """[17] m: how far behind the seen surface each COCO-17 keypoint may lie and still count as
    visible. Face keypoints are surface points; body keypoints are joints inside the limb, so
    they get the limb's radius there (mean distance to the 30 nearest rest vertices) plus 3 cm."""
    tol = np.full(len(kp.COCO17_NAMES), FACE_KEYPOINT_TOLERANCE)
    for i, (src, idx) in enumerate(kp.COCO17_FROM_SMPLX):
        if src == "joint":
            d = np.sort(np.linalg.norm(rest - joints[idx], axis=1))[:30]
            tol[i] = 1.3 * float(d.mean()) + 0.03
    return tol


def _plan(cfg: SynthConfig, model) -> tuple[np.random.Generator, CameraTrack, list[PersonSpec]]:  # type: ignore[no-untyped-def]
    """The scene's random stream, camera and people, drawn from ``cfg.seed`` in the one order
    every use of the seed shares."""
    rng = np.random.default_rng(cfg.seed)
    camera = make_camera(cfg, rng)
    return rng, camera, plan_people(cfg, camera, rng, model.num_betas)


def sample_poses(model, seeds: range, people: int = 2, frames: int = 90) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Body poses [N, 63] (SMPL-X joints 1-21, axis-angle) of everyone in the scenes of ``seeds``
    as ``generate`` would pose them (static camera, ``people`` each), without rendering."""
    out = []
    for seed in seeds:
        cfg = SynthConfig(people=people, frames=frames, seed=seed, camera="static")
        _, _, specs = _plan(cfg, model)
        poses, _, _, _ = _posed(model, specs, [model.rest(s.betas) for s in specs], np.arange(frames) / cfg.fps, skin=False)
        out += [p[:, 3:66] for p in poses]
    return np.concatenate(out)


def _posed(  # type: ignore[no-untyped-def]
    model, specs: list[PersonSpec], rests: list, times: np.ndarray, chunk: int = 120, skin: bool = True
) -> tuple[list[np.ndarray], ...]:
    """Poses, translations, vertices [T, V, 3] and joints [T, 55, 3] of every person (without
    ``skin``: poses and translations only, the other two lists empty)."""
    import torch

    poses_all, trans_all, verts_all, joints_all = [], [], [], []
    for spec, rest in zip(specs, rests):
        geo = mo.BodyGeometry.measure(rest.vertices, rest.joints, model.weights)
        assert spec.path is not None
        poses, trans = mo.gait(geo, spec.path, times, spec.plan.phase0, spec.style)
        poses, trans = poses.astype(np.float32), trans.astype(np.float32)
        poses_all.append(poses)
        trans_all.append(trans)
        if not skin:
            continue
        vs, js = [], []
        with torch.no_grad():
            for s in range(0, len(times), chunk):
                v, j = model.forward(spec.betas, poses[s : s + chunk], trans[s : s + chunk])
                vs.append(v.cpu().numpy())
                js.append(j.cpu().numpy())
        verts_all.append(np.concatenate(vs))
        joints_all.append(np.concatenate(js))
    return poses_all, trans_all, verts_all, joints_all


def generate(
    cfg: SynthConfig, out: Path | str, model, progress: Callable[[float, str], None] | None = None
) -> SynthResult:  # type: ignore[no-untyped-def]
    """Render ``cfg`` with body model ``model`` (a ``core.body.BodyModel``) into folder ``out``."""
    out = Path(out)
    progress = progress or (lambda f, m: None)
    clock = {"plan": 0.0, "body": 0.0, "render": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    rng, camera, specs = _plan(cfg, model)
    backdrop = rd.Backdrop.generate(rng)
    times = np.arange(cfg.frames) / cfg.fps
    w2c = camera.world_to_cam(times)  # [T, 4, 4]
    K = camera.K
    clock["plan"] = time.perf_counter() - t0
    progress(0.05, "posing bodies")

    t0 = time.perf_counter()
    rests = [model.rest(s.betas) for s in specs]  # each person's shaped rest body
    poses, trans, verts, joints = _posed(model, specs, rests, times)
    faces = model.faces.astype(np.int64)
    # the stand-in and SMPL-X are outward-oriented; check, since culling relies on it
    rest0 = model.rest(np.zeros(model.num_betas)).vertices
    v0 = rest0[faces]
    if np.einsum("fi,fi->f", v0[:, 0], np.cross(v0[:, 1], v0[:, 2])).sum() < 0:
        faces = faces[:, ::-1].copy()
    incidence = rd.face_incidence(faces, model.num_vertices)
    albedo, tolerance = [], []
    for s, rest in zip(specs, rests):
        albedo.append(vertex_albedo(rest.vertices, rest.joints, model.weights, s.palette))
        tolerance.append(keypoint_tolerance(rest.vertices, rest.joints))
    kp3d = np.stack([kp.coco17_from_smplx(v, j) for v, j in zip(verts, joints)])  # [N, T, 17, 3]
    clock["body"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n, (width, height) = len(specs), cfg.size
    mx, my = width // 2, height // 2  # margin of the amodal canvas around the image
    cw, ch = width + 2 * mx, height + 2 * my
    labels = np.zeros((cfg.frames, height, width), np.uint8)
    keypoints = np.zeros((n, cfg.frames, 17, 3), np.float32)
    boxes = np.full((n, cfg.frames, 4), np.nan, np.float32)
    visibility = np.zeros((n, cfg.frames), np.float32)
    out.mkdir(parents=True, exist_ok=True)
    video_path = out / "video.mp4"
    writer = cv2.VideoWriter(
        str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(cfg.fps), (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"{video_path}: OpenCV cannot open an mp4v video writer here")
    nv = model.num_vertices
    all_faces = np.concatenate([faces + i * nv for i in range(n)])
    owner = np.repeat(np.arange(n), len(faces))
    try:
        for t in range(cfg.frames):
            r, tr = w2c[t, :3, :3], w2c[t, :3, 3]
            vw = np.concatenate([verts[i][t] for i in range(n)]).astype(np.float64)  # [N*V, 3]
            vc = vw @ r.T + tr
            z = vc[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = (vc @ K.T)[:, :2] / z[:, None]
            frags = rd.rasterize(xy + [mx, my], z, all_faces, cw, ch, cull_back=True)
            # amodal pixels of each person on the padded canvas
            who = owner[frags.face]
            amodal = np.bincount(np.unique(who * (cw * ch) + frags.pixel) // (cw * ch), minlength=n)
            win = rd.nearest(frags)
            row, col = np.divmod(frags.pixel[win], cw)
            row, col = row - my, col - mx
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            win, row, col = win[inside], row[inside], col[inside]
            lab = np.zeros((height, width), np.uint8)
            lab[row, col] = who[win] + 1
            depth = np.full((height, width), np.inf, np.float32)
            depth[row, col] = frags.depth[win]
            # shading: Lambert from a fixed sun plus a sky term, Gouraud-interpolated
            colour = np.empty((n * nv, 3), np.float32)
            for i in range(n):
                nrm = rd.vertex_normals(verts[i][t], faces, incidence)
                light = 0.38 + 0.12 * nrm[:, 1] + 0.62 * np.clip(nrm @ LIGHT_DIR, 0, None)
                colour[i * nv : (i + 1) * nv] = albedo[i] * light[:, None]
            fv = all_faces[frags.face[win]]  # [P, 3]
            pix_col = np.einsum("pk,pkc->pc", frags.bary[win], colour[fv])
            shadows = np.array([(verts[i][t][:, 0].mean(), verts[i][t][:, 2].mean(), 0.3) for i in range(n)])
            img = backdrop.render(K, w2c[t], width, height, shadows=shadows)
            img[row, col] = pix_col
            writer.write(cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
            labels[t] = lab
            # 2D ground truth
            for i in range(n):
                mask = lab == i + 1
                seen = int(mask.sum())
                visibility[i, t] = seen / amodal[i] if amodal[i] else 0.0
                if seen:
                    rows_i = np.nonzero(mask.any(axis=1))[0]
                    cols_i = np.nonzero(mask.any(axis=0))[0]
                    boxes[i, t] = (cols_i[0], rows_i[0], cols_i[-1] + 1, rows_i[-1] + 1)
                pc = kp3d[i, t] @ r.T + tr
                uv = (pc @ K.T)[:, :2] / pc[:, 2:3]
                c, rr = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
                ok = (pc[:, 2] > rd.NEAR) & (c >= 0) & (c < width) & (rr >= 0) & (rr < height)
                cc, rc = np.where(ok, c, 0), np.where(ok, rr, 0)
                ok &= (lab[rc, cc] == i + 1) & (pc[:, 2] - depth[rc, cc] <= tolerance[i])
                keypoints[i, t, :, :2] = uv
                keypoints[i, t, :, 2] = ok
            if t % 10 == 0:
                progress(0.1 + 0.8 * t / cfg.frames, f"rendered frame {t + 1}/{cfg.frames}")
    finally:
        writer.release()
    clock["render"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress(0.92, "writing ground truth")
    info = model.info
    people = []
    for i, s in enumerate(specs):
        motion = bd.Motion(
            betas=np.asarray(s.betas, np.float32),
            poses=poses[i],
            trans=trans[i],
            expression=np.zeros((cfg.frames, model.num_expression), np.float32),
            visibility=visibility[i],
            gender=info.gender,
            fps=cfg.fps,
        )
        people.append(bd.Person(id=s.id, motion=motion, rig=model.rig(s.betas)))
    extra = {"synth": _describe(cfg, specs, model)}
    b = bd.Bundle(
        fps=float(cfg.fps),
        image_size=(width, height),
        camera=bd.Camera(
            K=np.repeat(K[None], cfg.frames, axis=0), world_to_cam=w2c, image_size=(width, height)
        ),
        people=people,
        body_model=info,
        video="../video.mp4",
        generator="troupe synth",
        extra=extra,
    )
    bundle_dir = bd.write_bundle(out / "bundle", b)
    gt = out / "gt"
    gt.mkdir(parents=True, exist_ok=True)
    tracks = {
        "fps": float(cfg.fps),
        "frame_count": cfg.frames,
        "image_size": [width, height],
        "keypoint_format": "coco17",
        "keypoint_names": list(kp.COCO17_NAMES),
        "people": [{"id": s.id, "color": s.palette.rgb8} for s in specs],
    }
    (gt / "tracks.json").write_text(json.dumps(tracks, indent=1) + "\n")
    np.savez_compressed(gt / "keypoints.npz", keypoints=keypoints, boxes=boxes, visibility=visibility,
                        ids=np.array([s.id for s in specs]))  # fmt: skip
    np.savez_compressed(gt / "labels.npz", labels=labels)
    clock["write"] = time.perf_counter() - t0
    progress(1.0, "done")
    return SynthResult(out=out, video=video_path, bundle=bundle_dir, gt=gt, seconds=clock)


def is_current(out: Path | str) -> bool:
    """Whether ``out`` holds a complete scene rendered by this ``GENERATOR_VERSION``."""
    path = Path(out) / "bundle" / "bundle.json"
    try:
        extra = json.loads(path.read_text()).get("extra") or {}
    except (OSError, ValueError):
        return False
    return (extra.get("synth") or {}).get("generator_version") == GENERATOR_VERSION and (Path(out) / "gt" / "labels.npz").is_file()


def _describe(cfg: SynthConfig, specs: list[PersonSpec], model) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    d = asdict(cfg)
    d["size"] = list(cfg.size)
    d["body_model"] = "standin" if model.standin else str(model.path)
    d["generator_version"] = GENERATOR_VERSION
    d["persons"] = [
        {"id": s.id, "behaviour": s.behaviour, "speed": round(s.plan.speed, 4), "color": s.palette.rgb8,
         "betas": [round(float(b), 4) for b in s.betas]}
        for s in specs
    ]  # fmt: skip
    return d
