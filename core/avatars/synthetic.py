"""Tiny procedural multi-person scenes for the avatar tests and CPU benchmarks.

Independent of the body model and of the Gaussian renderer: each person is a mannequin of
ellipsoids around a 55-joint skeleton (a ``bundle.Rig``), posed by ``bundle`` FK/LBS and drawn
as a triangle mesh with a painter's algorithm (OpenCV polygons), with flat colours per body
part and a simple Lambert term, over a static textured background. The result has exactly
the avatar stage's inputs: frames (T,H,W,3) uint8, labels (T,H,W) uint8 (0 = background,
i+1 = person i) and a motion bundle (camera + people with motion and rig).

For larger scenes with the SMPL-X stand-in, use ``python -m core synth`` (``core.synth``);
``load_synth(DIR)`` reads one in the same form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import bundle
from .outputs import look_at

# Rest joint positions of the main body joints (metres; +Y up, body faces +Z, left = +X).
_BODY = {
    0: (0.0, 0.95, 0.0), 1: (0.09, 0.88, 0.0), 2: (-0.09, 0.88, 0.0), 3: (0.0, 1.05, 0.0),
    4: (0.1, 0.5, 0.0), 5: (-0.1, 0.5, 0.0), 6: (0.0, 1.17, 0.0), 7: (0.1, 0.09, 0.0),
    8: (-0.1, 0.09, 0.0), 9: (0.0, 1.3, 0.0), 10: (0.1, 0.02, 0.1), 11: (-0.1, 0.02, 0.1),
    12: (0.0, 1.48, 0.0), 13: (0.07, 1.42, 0.0), 14: (-0.07, 1.42, 0.0), 15: (0.0, 1.6, 0.0),
    16: (0.18, 1.42, 0.0), 17: (-0.18, 1.42, 0.0), 18: (0.45, 1.42, 0.0), 19: (-0.45, 1.42, 0.0),
    20: (0.7, 1.42, 0.0), 21: (-0.7, 1.42, 0.0),
}  # fmt: skip

# (joint, child or None, radius, part) ellipsoids; part picks the colour.
_SEGMENTS = [
    (0, 3, 0.15, "torso"), (3, 9, 0.16, "torso"), (9, 12, 0.15, "torso"), (12, 15, 0.06, "skin"),
    (15, None, 0.11, "skin"), (1, 4, 0.08, "legs"), (2, 5, 0.08, "legs"), (4, 7, 0.06, "legs"),
    (5, 8, 0.06, "legs"), (7, 10, 0.045, "shoes"), (8, 11, 0.045, "shoes"), (16, 18, 0.05, "torso"),
    (17, 19, 0.05, "torso"), (18, 20, 0.04, "skin"), (19, 21, 0.04, "skin"),
]  # fmt: skip

PART_COLORS = [
    {"torso": (200, 60, 50), "legs": (40, 60, 140), "skin": (225, 180, 150), "shoes": (30, 30, 30)},
    {"torso": (60, 170, 80), "legs": (120, 100, 60), "skin": (170, 120, 90), "shoes": (200, 200, 200)},
    {"torso": (230, 200, 40), "legs": (50, 50, 50), "skin": (240, 200, 170), "shoes": (120, 40, 40)},
]


def mannequin_rig(scale: float = 1.0, rings: int = 10, sectors: int = 14) -> tuple[bundle.Rig, np.ndarray]:
    """A 55-joint rig with an ellipsoid mesh; returns the rig and a part index per face."""
    joints = np.zeros((bundle.NUM_JOINTS, 3))
    parents = np.asarray(bundle.SMPLX_PARENTS)
    for j in range(bundle.NUM_JOINTS):  # hands, jaw and eyes: just off their parent joint
        joints[j] = _BODY[j] if j in _BODY else joints[parents[j]] + (0.0, 0.0, 0.01)
    joints = joints * scale
    verts, faces, weights, face_part = [], [], [], []
    parts = list(PART_COLORS[0])
    for j, child, radius, part in _SEGMENTS:
        a = joints[j]
        b = joints[child] if child is not None else a + np.array([0, 0.12 * scale, 0])
        axis = b - a
        length = np.linalg.norm(axis)
        d = axis / length
        tmp = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 0, 1.0])
        e1 = np.cross(d, tmp)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        centre = 0.5 * (a + b)
        base = len(verts)
        for i in range(rings + 1):
            th = np.pi * i / rings
            for k in range(sectors):
                ph = 2 * np.pi * k / sectors
                along = -np.cos(th) * (0.5 * length + radius * 0.6)
                p = centre + d * along + radius * scale * np.sin(th) * (np.cos(ph) * e1 + np.sin(ph) * e2)
                s = np.clip(np.dot(p - a, d) / length, 0, 1)
                w = np.zeros(bundle.NUM_JOINTS)
                blend = 0.5 * np.clip((s - 0.75) / 0.25, 0, 1) if child is not None else 0.0
                w[j] = 1 - blend
                if child is not None:
                    w[child] += blend
                verts.append(p)
                weights.append(w)
        for i in range(rings):
            for k in range(sectors):
                v00 = base + i * sectors + k
                v01 = base + i * sectors + (k + 1) % sectors
                v10 = v00 + sectors
                v11 = v01 + sectors
                faces += [(v00, v10, v11), (v00, v11, v01)]
                face_part += [parts.index(part)] * 2
    rig = bundle.Rig(
        joints=joints.astype(np.float32),
        parents=parents.astype(np.int32),
        vertices=np.asarray(verts, np.float32),
        faces=np.asarray(faces, np.int32),
        weights=np.asarray(weights, np.float32),
    )
    return rig, np.asarray(face_part)


def walk_motion(frames: int, phase: float, x0: float, z0: float, speed: float, fps: float) -> bundle.Motion:
    """Arms and legs swinging, a slow turn, walking along x."""
    t = np.arange(frames) / fps
    poses = np.zeros((frames, bundle.NUM_POSE))
    rv = poses.reshape(frames, bundle.NUM_JOINTS, 3)
    swing = np.sin(2 * np.pi * 1.2 * t + phase)
    rv[:, 0, 1] = 0.6 * np.sin(0.5 * t + phase)  # pelvis yaw
    rv[:, 1, 0], rv[:, 2, 0] = 0.5 * swing, -0.5 * swing  # hips
    rv[:, 4, 0], rv[:, 5, 0] = 0.4 * np.clip(swing, 0, None), 0.4 * np.clip(-swing, 0, None)  # knees
    rv[:, 16, 2], rv[:, 17, 2] = -1.1 + 0.2 * swing, 1.1 + 0.2 * swing  # arms down-ish
    rv[:, 18, 1], rv[:, 19, 1] = 0.4 * swing, 0.4 * swing  # elbows
    trans = np.stack([x0 + speed * t, np.zeros(frames), np.full(frames, z0)], 1)
    return bundle.Motion(
        betas=np.zeros(10, np.float32),
        poses=poses.astype(np.float32),
        trans=trans.astype(np.float32),
        expression=np.zeros((frames, 10), np.float32),
        visibility=np.ones(frames, np.float32),
        fps=fps,
    )


@dataclass
class Scene:
    frames: np.ndarray  # (T,H,W,3) uint8
    labels: np.ndarray  # (T,H,W) uint8, 0 = background, i+1 = person i
    motion: bundle.Bundle  # camera + people (motion, rig), no splats
    background: np.ndarray  # (H,W,3) uint8, the true static background (zeros when unknown)


def background_image(width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.stack([90 + 60 * ys / height, 110 + 40 * np.sin(xs / 7.0), 140 - 50 * ys / height], -1)
    img[(xs // 12 + ys // 12) % 2 == 0] *= 0.85
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scene(people: int = 2, frames: int = 12, width: int = 96, height: int = 72, fps: float = 10.0,
               seed: int = 0) -> Scene:  # fmt: skip
    """Render ``people`` walking mannequins seen by a static camera."""
    rng = np.random.default_rng(seed)
    f = 1.1 * width
    k = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    w2c = look_at(np.array([0.0, 1.2, 4.2]), np.array([0.0, 0.9, 0.0]))
    camera = bundle.Camera(K=np.repeat(k[None], frames, 0), world_to_cam=np.repeat(w2c[None], frames, 0),
                           image_size=(width, height))  # fmt: skip
    persons, meshes = [], []
    for i in range(people):
        rig, face_part = mannequin_rig(scale=1.0 + 0.05 * rng.standard_normal())
        x0 = (i - (people - 1) / 2) * 0.9
        motion = walk_motion(
            frames, phase=rng.uniform(0, 6), x0=x0, z0=-0.4 * i, speed=0.1 * (-1) ** i, fps=fps
        )
        persons.append(bundle.Person(id=f"p{i}", motion=motion, rig=rig))
        meshes.append(face_part)
    bg = background_image(width, height)
    out = np.repeat(bg[None], frames, 0).copy()
    labels = np.zeros((frames, height, width), np.uint8)
    light = np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5])
    for t in range(frames):
        tris, depth, color, label = [], [], [], []
        for i, p in enumerate(persons):
            _, skin = bundle.forward_kinematics(p.rig.joints, p.rig.parents, p.motion.rotvecs[t : t + 1],
                                                p.motion.trans[t : t + 1])  # fmt: skip
            v = bundle.skin_points(p.rig.vertices, None, p.rig.weights, skin[0])
            tri = v[p.rig.faces]
            nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
            shade = 0.55 + 0.45 * np.clip(nrm @ light, 0, 1)
            pal = np.array([PART_COLORS[i % len(PART_COLORS)][n] for n in PART_COLORS[0]], np.float64)
            uv = camera.project(tri.reshape(-1, 3), t).reshape(-1, 3, 2)
            zc = (tri.reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3])[:, 2].reshape(-1, 3).mean(1)
            tris.append(uv)
            depth.append(zc)
            color.append(pal[meshes[i]] * shade[:, None])
            label.append(np.full(len(uv), i + 1))
        uv_all = np.concatenate(tris)
        order = np.argsort(-np.concatenate(depth))  # far to near
        col_all = np.concatenate(color)
        lab_all = np.concatenate(label)
        img = out[t]
        for idx in order:
            poly = np.round(uv_all[idx] * 16).astype(np.int32)
            cv2.fillConvexPoly(img, poly, tuple(float(c) for c in col_all[idx]), lineType=cv2.LINE_8, shift=4)
            cv2.fillConvexPoly(labels[t], poly, int(lab_all[idx]), lineType=cv2.LINE_8, shift=4)
    motion = bundle.Bundle(fps=fps, image_size=(width, height), camera=camera, people=persons)
    return Scene(frames=out, labels=labels, motion=motion, background=bg)


def load_synth(folder: str | Path) -> Scene:
    """Read a ``python -m core synth`` output (video.mp4, gt/labels.npz, bundle/) as a Scene."""
    folder = Path(folder)
    motion = bundle.read_bundle(folder / "bundle")
    cap = cv2.VideoCapture(str(folder / "video.mp4"))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    cap.release()
    if len(frames) != motion.frame_count:
        raise ValueError(
            f"{folder / 'video.mp4'}: {len(frames)} frames decoded, the bundle has {motion.frame_count}"
        )
    with np.load(folder / "gt" / "labels.npz", allow_pickle=False) as z:
        labels = z["labels"]
    return Scene(frames=np.stack(frames), labels=labels.astype(np.uint8), motion=motion,
                 background=np.zeros_like(frames[0]))  # fmt: skip
