"""COCO-17 keypoints and where they come from on an SMPL-X body: the one place that says so.

The synthetic ground truth (``core synth``), the 2D keypoint stage and the motion stage
(which fits SMPL-X to 2D keypoints) all import this module, so "left wrist" means the same
point everywhere.

Convention: COCO-17 order (``COCO17_NAMES``); "left" is the person's own left. Face points
(nose, eyes, ears) are SMPL-X mesh vertices (the vertex ids ``smplx.vertex_ids['smplx']``
uses for its extra joints); body points are SMPL-X joints (``bundle.JOINT_NAMES`` order).
SMPL-X hip joints sit a little higher and more inside than COCO's annotated hips; fitting
code that needs it can down-weight them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

# Limbs for drawing (pairs of COCO-17 indices), the usual COCO skeleton.
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

# Index of each keypoint's mirror image (for flip augmentation / left-right checks).
COCO17_FLIP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# Face keypoints: SMPL-X vertex ids (as in smplx.vertex_ids.vertex_ids["smplx"]).
SMPLX_FACE_VERTICES: dict[str, int] = {
    "nose": 9120,
    "left_eye": 9448,
    "right_eye": 9929,
    "left_ear": 6,
    "right_ear": 616,
}

# Body keypoints: SMPL-X joint indices (bundle.JOINT_NAMES order).
SMPLX_BODY_JOINTS: dict[str, int] = {
    "left_shoulder": 16, "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19,
    "left_wrist": 20, "right_wrist": 21, "left_hip": 1, "right_hip": 2,
    "left_knee": 4, "right_knee": 5, "left_ankle": 7, "right_ankle": 8,
}  # fmt: skip

# Foot keypoints beyond COCO-17 that detectors give (BlazePose's heel and foot index,
# COCO-WholeBody's heel and big toe; both name the toe point "big_toe" in ``extra_keypoint_names``)
# and the SMPL-X vertices they sit on (``smplx.vertex_ids["smplx"]``: LHeel, LBigToe, RHeel, RBigToe).
# They show the foot's pitch, which COCO-17 (ankles only) leaves to the priors.
FOOT_NAMES: tuple[str, ...] = ("left_heel", "left_big_toe", "right_heel", "right_big_toe")
SMPLX_FOOT_VERTICES: tuple[int, ...] = (8846, 5770, 8635, 8463)


def foot_keypoints(extra: np.ndarray | None, names: list[str] | tuple[str, ...]) -> np.ndarray | None:
    """``FOOT_NAMES`` picked from a people result's extra keypoints [N, T, K, 3] (by name; NaN and
    missing ones get confidence 0) -> [N, T, 4, 3], or None when it names none of them."""
    if extra is None or not any(n in names for n in FOOT_NAMES):
        return None
    extra = np.asarray(extra, np.float64)
    out = np.zeros((*extra.shape[:2], len(FOOT_NAMES), 3))
    for i, name in enumerate(FOOT_NAMES):
        if name in names:
            out[:, :, i] = extra[:, :, list(names).index(name)]
    bad = ~np.isfinite(out).all(-1)
    out[bad] = 0.0
    return out


# For each COCO-17 keypoint: ("vertex" | "joint", index into the SMPL-X vertices / joints).
COCO17_FROM_SMPLX: tuple[tuple[str, int], ...] = tuple(
    ("vertex", SMPLX_FACE_VERTICES[n]) if n in SMPLX_FACE_VERTICES else ("joint", SMPLX_BODY_JOINTS[n])
    for n in COCO17_NAMES
)

_FACE = [i for i, (src, _) in enumerate(COCO17_FROM_SMPLX) if src == "vertex"]
_BODY = [i for i, (src, _) in enumerate(COCO17_FROM_SMPLX) if src == "joint"]
_FACE_IDS = [COCO17_FROM_SMPLX[i][1] for i in _FACE]
_BODY_IDS = [COCO17_FROM_SMPLX[i][1] for i in _BODY]
_ORDER = np.argsort(_FACE + _BODY)  # from [face..., body...] back to COCO-17 order


def coco17_from_smplx(vertices: Any, joints: Any) -> Any:
    """COCO-17 keypoints of posed SMPL-X bodies.

    Args:
        vertices: [..., 10475, 3] SMPL-X vertices (numpy array or torch tensor).
        joints: [..., J >= 22, 3] SMPL-X joints in ``bundle.JOINT_NAMES`` order, same leading dims.

    Returns:
        [..., 17, 3] keypoints in COCO-17 order, same type (torch stays differentiable).
    """
    if vertices.shape[-2] <= max(_FACE_IDS):
        raise ValueError(
            f"coco17_from_smplx: vertices have shape {tuple(vertices.shape)}; expected [..., 10475, 3] "
            "(SMPL-X topology, face keypoints are vertices up to id 9929)"
        )
    if joints.shape[-2] < 22:
        raise ValueError(
            f"coco17_from_smplx: joints have shape {tuple(joints.shape)}; expected [..., >=22, 3]"
        )
    face = vertices[..., _FACE_IDS, :]
    body = joints[..., _BODY_IDS, :]
    if type(vertices).__module__.startswith("torch"):
        import torch

        return torch.cat([face, body], dim=-2)[..., torch.as_tensor(_ORDER, device=face.device), :]
    return np.concatenate([face, body], axis=-2)[..., _ORDER, :]
