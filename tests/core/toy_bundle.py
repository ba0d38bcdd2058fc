"""A tiny skeleton-only bundle for tests that need no body model (bundle, eval).

Each person's rig is the 55 SMPL-X joints at rough human rest positions; its "mesh" is one
vertex per joint, bound to that joint. Motion: walking along a line with swinging limbs.
"""

from __future__ import annotations

import numpy as np

from core import bundle as bd
from core.synth.scene import look_at

# Rough SMPL-X rest joint positions (m), pelvis at the origin, person facing +z, left = +x.
_BODY = [
    (0, 0, 0), (0.06, -0.09, 0), (-0.06, -0.09, 0), (0, 0.11, -0.02), (0.1, -0.47, 0), (-0.1, -0.47, 0),
    (0, 0.25, 0), (0.09, -0.87, -0.04), (-0.09, -0.87, -0.04), (0, 0.31, 0), (0.11, -0.93, 0.09),
    (-0.11, -0.93, 0.09), (0, 0.52, -0.02), (0.08, 0.43, 0), (-0.08, 0.43, 0), (0, 0.6, 0.03),
    (0.18, 0.46, -0.01), (-0.18, 0.46, -0.01), (0.44, 0.44, -0.03), (-0.44, 0.44, -0.03),
    (0.69, 0.45, -0.03), (-0.69, 0.45, -0.03), (0, 0.55, 0.05), (0.03, 0.63, 0.09), (-0.03, 0.63, 0.09),
]  # fmt: skip


def rest_joints(height_scale: float = 1.0) -> np.ndarray:
    """(55,3) rest joints: the 25 body/face joints above plus fingers fanned out from the wrists."""
    j = np.zeros((bd.NUM_JOINTS, 3))
    j[: len(_BODY)] = _BODY
    for j_idx in range(25, bd.NUM_JOINTS):
        p = bd.SMPLX_PARENTS[j_idx]
        side = 1.0 if j[p, 0] > 0 else -1.0
        j[j_idx] = j[p] + (side * 0.03, 0.0, 0.005 * (j_idx % 3))
    return j * height_scale


def make_person(
    pid: str, frames: int, *, x0: float, z0: float, speed: float, fps: float, scale: float = 1.0
) -> bd.Person:
    """A person walking along +x from (x0, z0) with swinging hips/knees/shoulders."""
    t = np.arange(frames) / fps
    joints = rest_joints(scale)
    poses = np.zeros((frames, bd.NUM_JOINTS, 3))
    phase = 2 * np.pi * 1.5 * t
    poses[:, 0, 1] = np.pi / 2  # face +x
    poses[:, 1, 0] = 0.4 * np.sin(phase)
    poses[:, 2, 0] = -0.4 * np.sin(phase)
    poses[:, 4, 0] = 0.3 * (1 - np.cos(phase))
    poses[:, 5, 0] = 0.3 * (1 + np.cos(phase))
    poses[:, 16, 2] = -1.2 + 0.2 * np.sin(phase)
    poses[:, 17, 2] = 1.2 + 0.2 * np.sin(phase)
    trans = np.stack([x0 + speed * t, np.full(frames, 0.95 * scale), np.full(frames, z0)], axis=1)
    motion = bd.Motion(
        betas=np.zeros(10, np.float32),
        poses=poses.reshape(frames, -1).astype(np.float32),
        trans=trans.astype(np.float32),
        expression=np.zeros((frames, 10), np.float32),
        visibility=np.ones(frames, np.float32),
        fps=fps,
    )
    rig = bd.Rig(
        joints=joints.astype(np.float32),
        parents=np.array(bd.SMPLX_PARENTS, np.int32),
        vertices=joints.astype(np.float32),
        faces=np.array([[0, 1, 2]], np.int32),
        weights=np.eye(bd.NUM_JOINTS, dtype=np.float32),
    )
    return bd.Person(id=pid, motion=motion, rig=rig)


def make_bundle(people: int = 3, frames: int = 20, fps: float = 30.0) -> bd.Bundle:
    """``people`` skeletons about 1.5 m apart, seen by a static camera 6 m away."""
    w, h = 320, 180
    K = np.array([[280.0, 0, w / 2], [0, 280.0, h / 2], [0, 0, 1]])
    cam = bd.Camera(
        K=np.repeat(K[None], frames, axis=0),
        world_to_cam=np.repeat(
            look_at(np.array([0.0, 1.6, -6.0]), np.array([0.0, 0.9, 0.0]))[None], frames, axis=0
        ),
        image_size=(w, h),
    )
    ps = [make_person(f"p{i}", frames, x0=-1.5 + 0.3 * i, z0=-1.5 + 1.5 * i, speed=0.8 + 0.2 * i, fps=fps,
                      scale=1.0 - 0.05 * i) for i in range(people)]  # fmt: skip
    return bd.Bundle(fps=fps, image_size=(w, h), camera=cam, people=ps, generator="troupe tests")
