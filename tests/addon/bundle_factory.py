"""Small, fast Troupe bundles made with numpy (no body model): fixtures for the add-on tests.

``make_bundle`` writes a valid bundle of stick-figure people with SMPL-X's 55 joints and
parents in a T-pose, a small skinned mesh (an octahedron around every joint, weights blended
over nearby joints), random Gaussian splats with top-4 skin weights, smooth random motion
with some frames marked not visible, and a moving camera with an off-centre principal point
(optionally zooming). The real end-to-end tests use ``python -m core synth`` bundles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _bundle_module():
    from troupe.core import bundle  # the package the add-on itself uses

    return bundle


# Rest offsets from the parent (metres, +Y up, the body faces +Z, its left is +X).
_OFFSETS = {
    "pelvis": (0.0, 0.95, 0.0), "left_hip": (0.06, -0.09, 0.0), "right_hip": (-0.06, -0.09, 0.0),
    "spine1": (0.0, 0.11, -0.01), "left_knee": (0.04, -0.38, 0.0), "right_knee": (-0.04, -0.38, 0.0),
    "spine2": (0.0, 0.13, 0.0), "left_ankle": (0.0, -0.40, -0.04), "right_ankle": (0.0, -0.40, -0.04),
    "spine3": (0.0, 0.05, 0.02), "left_foot": (0.02, -0.06, 0.12), "right_foot": (-0.02, -0.06, 0.12),
    "neck": (0.0, 0.21, -0.03), "left_collar": (0.07, 0.11, -0.01), "right_collar": (-0.07, 0.11, -0.01),
    "head": (0.0, 0.09, 0.05), "left_shoulder": (0.11, 0.04, -0.01), "right_shoulder": (-0.11, 0.04, -0.01),
    "left_elbow": (0.26, 0.0, 0.0), "right_elbow": (-0.26, 0.0, 0.0), "left_wrist": (0.25, 0.0, 0.0),
    "right_wrist": (-0.25, 0.0, 0.0), "jaw": (0.0, 0.02, 0.01), "left_eye_smplhf": (0.03, 0.06, 0.09),
    "right_eye_smplhf": (-0.03, 0.06, 0.09),
}  # fmt: skip
_FINGERS = {
    "index": ((0.09, 0.0, 0.03), 0.035), "middle": ((0.095, 0.0, 0.01), 0.04),
    "pinky": ((0.08, 0.0, -0.04), 0.028), "ring": ((0.09, 0.0, -0.015), 0.035),
    "thumb": ((0.03, -0.01, 0.03), 0.03),
}  # fmt: skip


def rest_joints() -> np.ndarray:
    """(55,3) T-pose joints of a 1.7 m stick figure standing on y = 0."""
    b = _bundle_module()
    idx = {n: i for i, n in enumerate(b.JOINT_NAMES)}
    joints = np.zeros((55, 3))
    for j, name in enumerate(b.JOINT_NAMES):
        parent = b.SMPLX_PARENTS[j]
        base = joints[parent] if parent >= 0 else np.zeros(3)
        if name in _OFFSETS:
            joints[j] = base + _OFFSETS[name]
            continue
        side = 1.0 if name.startswith("left") else -1.0
        finger = name.split("_")[1][:-1]
        level = int(name[-1])
        knuckle, length = _FINGERS[finger]
        if level == 1:
            joints[j] = base + np.array(knuckle) * [side, 1, 1]
        else:
            joints[j] = base + np.array([side * length, 0.0, 0.0])
    assert idx["pelvis"] == 0
    return joints


def _octahedra(joints: np.ndarray, radius: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    faces1 = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    verts = (joints[:, None, :] + radius * dirs[None]).reshape(-1, 3)
    faces = (faces1[None] + 6 * np.arange(len(joints))[:, None, None]).reshape(-1, 3)
    return verts, faces


def _soft_weights(points: np.ndarray, joints: np.ndarray, sigma: float = 0.06) -> np.ndarray:
    d2 = ((points[:, None, :] - joints[None]) ** 2).sum(-1)
    logits = -d2 / (2 * sigma**2)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w[w < 1e-3] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def make_person(pid: str, frames: int, rng: np.random.Generator, offset_x: float, splat_count: int = 400):
    b = _bundle_module()
    joints = rest_joints() * rng.uniform(0.95, 1.05)
    verts, faces = _octahedra(joints)
    weights = _soft_weights(verts, joints)
    t = np.arange(frames)[:, None, None]
    amp = rng.uniform(0.1, 0.5, (1, 55, 3))
    freq = rng.uniform(0.05, 0.2, (1, 55, 3))
    phase = rng.uniform(0, 2 * np.pi, (1, 55, 3))
    rotvecs = amp * np.sin(freq * t + phase)
    yaw = 0.8 * np.sin(0.03 * np.arange(frames) + rng.uniform(0, 6))
    rotvecs[:, 0] = np.stack([0.2 * np.sin(0.07 * np.arange(frames)), yaw, 0.1 * np.cos(0.05 * np.arange(frames))], 1)
    trans = np.stack([offset_x + 0.01 * np.arange(frames), 0.02 * np.sin(0.2 * np.arange(frames)),
                      0.3 * np.sin(0.04 * np.arange(frames))], 1)  # fmt: skip
    vis = np.ones(frames, np.float32)
    vis[frames // 3 : frames // 3 + 3] = 0.0
    vis[-2:] = 0.5
    motion = b.Motion(betas=np.zeros(10, np.float32), poses=rotvecs.reshape(frames, -1).astype(np.float32),
                      trans=trans.astype(np.float32), expression=np.zeros((frames, 10), np.float32),
                      visibility=vis)  # fmt: skip
    rig = b.Rig(joints=joints.astype(np.float32), parents=np.array(b.SMPLX_PARENTS, np.int32),
                vertices=verts.astype(np.float32), faces=faces.astype(np.int32), weights=weights.astype(np.float32))  # fmt: skip
    centres = joints[rng.integers(0, 25, splat_count)] + rng.normal(0, 0.05, (splat_count, 3))
    ids, wts = b.dense_to_topk(_soft_weights(centres, joints, 0.08), 4)
    quats = rng.normal(size=(splat_count, 4))
    splats = b.Splats(means=centres.astype(np.float32), sh=rng.normal(0, 1, (splat_count, 4, 3)).astype(np.float32),
                      opacity=rng.normal(1, 1, splat_count).astype(np.float32),
                      log_scales=np.log(rng.uniform(0.005, 0.03, (splat_count, 3))).astype(np.float32),
                      quats=quats.astype(np.float32), skin_joints=ids, skin_weights=wts)  # fmt: skip
    return b.Person(id=pid, motion=motion, rig=rig, splats=splats, name=pid)


def look_at_world_to_cam(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera (x right, y down, z forward) looking from ``eye`` at ``target`` (+Y up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ eye
    return m


def make_bundle(root: Path, people: int = 2, frames: int = 32, size: tuple[int, int] = (320, 180),
                seed: int = 0, zoom: bool = False, fps: float = 30.0, video: str | None = None,
                frame_start: int = 0, frame_step: int = 1) -> Path:  # fmt: skip
    """Write a bundle into ``root`` and return it."""
    b = _bundle_module()
    rng = np.random.default_rng(seed)
    persons = [make_person(f"p{i}", frames, rng, offset_x=1.2 * (i - (people - 1) / 2)) for i in range(people)]
    w, h = size
    K = np.tile(np.array([[300.0, 0, w / 2 + 7.3], [0, 300.0, h / 2 - 4.1], [0, 0, 1]]), (frames, 1, 1))
    if zoom:
        K[:, 0, 0] = K[:, 1, 1] = 300.0 + 2.0 * np.arange(frames)
        K[:, 0, 2] += 0.2 * np.arange(frames)
    w2c = np.stack([look_at_world_to_cam(np.array([0.3 + 0.01 * t, 1.5, 6.0]), np.array([0.0, 0.9, 0.0]))
                    for t in range(frames)])  # fmt: skip
    cam = b.Camera(K=K, world_to_cam=w2c, image_size=(w, h))
    bun = b.Bundle(fps=fps, image_size=(w, h), camera=cam, people=persons, video=video,
                   frame_start=frame_start, frame_step=frame_step)
    return b.write_bundle(root, bun)
