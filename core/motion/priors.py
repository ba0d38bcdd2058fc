"""Pose, shape and temporal priors that need no licensed data.

Joint limits: per body joint, a range for each axis-angle component in the joint's own rest
frame (SMPL-X rest frames are aligned with the body: x = the person's left, y = up,
z = forward), read as approximate flexion (x), twist (y) and side-bend (z) angles. Ranges come
from the usual anatomical ranges of motion, a little wider (the components of an axis-angle are
not Euler angles). Left and right joints are mirror images (x = -x), which maps an axis-angle
(x, y, z) to (x, -y, -z), so only the left side and the spine are written out.

Outside its range a component pays a quadratic penalty; inside it pays nothing. A small L2 on
the body pose keeps unobserved joints near the rest pose, an L2 on betas keeps the shape in the
range the model was built for.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import bundle

# (joint name) -> ((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi)) in radians; left side and centre.
_LIMITS: dict[str, tuple[tuple[float, float], ...]] = {
    "left_hip": ((-2.5, 0.6), (-0.9, 0.9), (-0.6, 1.3)),  # x<0 = thigh forward; z>0 = leg out
    "spine1": ((-0.5, 1.0), (-0.6, 0.6), (-0.5, 0.5)),  # x>0 = bend forward
    "left_knee": ((-0.1, 2.7), (-0.3, 0.3), (-0.2, 0.2)),  # x>0 = flexion
    "spine2": ((-0.4, 0.8), (-0.5, 0.5), (-0.4, 0.4)),
    "left_ankle": ((-0.7, 1.0), (-0.5, 0.5), (-0.5, 0.5)),  # x>0 = toes down
    "spine3": ((-0.4, 0.8), (-0.5, 0.5), (-0.4, 0.4)),
    "left_foot": ((-0.6, 0.6), (-0.2, 0.2), (-0.2, 0.2)),
    "neck": ((-0.7, 0.9), (-0.9, 0.9), (-0.6, 0.6)),
    "left_collar": ((-0.4, 0.4), (-0.5, 0.5), (-0.5, 0.6)),
    "head": ((-0.6, 0.7), (-0.9, 0.9), (-0.5, 0.5)),
    "left_shoulder": ((-1.7, 1.7), (-2.2, 0.9), (-1.7, 1.7)),  # y<0 = arm forward; z>0 = arm up
    "left_elbow": ((-1.7, 1.7), (-2.7, 0.1), (-0.3, 0.3)),  # y<0 = flexion
    "left_wrist": ((-1.2, 1.2), (-0.9, 0.9), (-1.2, 1.2)),
}


# (joint name) -> the range each axis usually stays in (radians), left side and centre: where
# people spend most of their time when they stand, walk, run, dance or sit. Inside it a joint pays
# nothing; outside it pays a small quadratic penalty (``w_pose``), so a monocular fit that may
# explain a leg by a bent knee toward the camera or by a straight leg swung inwards takes the
# usual one. Joints that COCO-17 keypoints do not pin down (toes, ankle twist, collars, wrists)
# get narrow ranges around the rest pose and a higher weight (``_COMFORT_WEIGHT``).
_COMFORT: dict[str, tuple[tuple[float, float], ...]] = {
    "left_hip": ((-1.3, 0.35), (-0.15, 0.15), (-0.12, 0.45)),  # mostly flexion; little adduction (z < 0)
    "spine1": ((-0.15, 0.35), (-0.05, 0.05), (-0.12, 0.12)),
    "left_knee": ((0.0, 1.9), (-0.05, 0.05), (-0.05, 0.05)),
    "spine2": ((-0.1, 0.3), (-0.05, 0.05), (-0.1, 0.1)),
    "left_ankle": ((-0.35, 0.45), (-0.1, 0.1), (-0.15, 0.15)),
    "spine3": ((-0.1, 0.3), (-0.05, 0.05), (-0.1, 0.1)),
    "left_foot": ((-0.05, 0.05), (-0.05, 0.05), (-0.05, 0.05)),
    "neck": ((-0.25, 0.45), (-0.5, 0.5), (-0.25, 0.25)),
    "left_collar": ((-0.1, 0.1), (-0.15, 0.15), (-0.15, 0.25)),
    "head": ((-0.35, 0.45), (-0.6, 0.6), (-0.25, 0.25)),
    "left_shoulder": ((-0.9, 0.9), (-1.5, 0.6), (-1.5, 0.5)),  # arm down (z -1.2) to about horizontal
    "left_elbow": ((-0.3, 0.3), (-2.3, 0.0), (-0.1, 0.1)),
    "left_wrist": ((-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)),
}
_COMFORT_WEIGHT = {"left_foot": 20.0, "left_ankle": 3.0, "left_collar": 10.0, "left_wrist": 5.0, "spine1": 20.0, "spine2": 20.0, "spine3": 20.0}


def _mirrored_table(spec: dict[str, tuple[tuple[float, float], ...]], root: float) -> np.ndarray:
    """[22, 3, 2] (lo, hi) per joint and axis for pelvis + 21 body joints from a left-and-centre
    ``spec``; the pelvis gets (-root, root)."""
    table = np.zeros((22, 3, 2))
    table[0, :, 0], table[0, :, 1] = -root, root
    for j, name in enumerate(bundle.JOINT_NAMES[1:22], start=1):
        if name in spec:
            table[j] = spec[name]
        else:
            left = spec[name.replace("right_", "left_")]
            table[j, 0] = left[0]
            table[j, 1] = (-left[1][1], -left[1][0])
            table[j, 2] = (-left[2][1], -left[2][0])
    return table


def joint_limit_table() -> np.ndarray:
    """[22, 3, 2] (lo, hi) per joint and axis for pelvis + 21 body joints (pelvis unlimited)."""
    return _mirrored_table(_LIMITS, np.inf)


def comfort_table() -> np.ndarray:
    """[22, 3, 2] the usual range of each joint and axis (``_COMFORT``; pelvis unlimited)."""
    return _mirrored_table(_COMFORT, np.inf)


def comfort_weights() -> np.ndarray:
    """[21] weight of each body joint in ``Priors.comfort_terms`` (1 = the default)."""
    return np.array([_COMFORT_WEIGHT.get(n.replace("right_", "left_"), 1.0) for n in bundle.JOINT_NAMES[1:22]])


class Priors(torch.nn.Module):
    """Differentiable prior terms (sums over the batch; callers normalise)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        f32 = dict(dtype=torch.float32, device=device)
        t = torch.as_tensor(joint_limit_table()[1:], **f32)  # [21,3,2]
        self.register_buffer("lo", t[..., 0])
        self.register_buffer("hi", t[..., 1])
        c = torch.as_tensor(comfort_table()[1:], **f32)
        self.register_buffer("comfort_lo", c[..., 0])
        self.register_buffer("comfort_hi", c[..., 1])
        self.register_buffer("comfort_w", torch.as_tensor(comfort_weights(), **f32))

    @staticmethod
    def _excess(body_pose: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        p = body_pose.reshape(*body_pose.shape[:-1], 21, 3)
        over = torch.relu(p - hi) + torch.relu(lo - p)
        return (over**2).sum(-1)

    def joint_limit_terms(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] body pose -> [..., 21] squared excess over the limits, per joint."""
        return self._excess(body_pose, self.lo, self.hi)

    def joint_limits(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] body pose -> [...] squared excess over the limits."""
        return self.joint_limit_terms(body_pose).sum(-1)

    def comfort_terms(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] -> [..., 21] weighted squared excess over the usual ranges (``comfort_table``), per joint."""
        return self.comfort_w * self._excess(body_pose, self.comfort_lo, self.comfort_hi)

    @staticmethod
    def shape_l2(betas: torch.Tensor) -> torch.Tensor:
        """[..., nb] -> [...]"""
        return (betas**2).sum(-1)


def second_difference(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Discrete acceleration along ``dim`` (length T -> T-2)."""
    n = x.shape[dim]
    return x.narrow(dim, 2, n - 2) - 2 * x.narrow(dim, 1, n - 2) + x.narrow(dim, 0, n - 2)


def first_difference(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    n = x.shape[dim]
    return x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)


def gmof(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals ``x`` (elementwise), saturating at sigma^2."""
    s2 = sigma * sigma
    return s2 * x / (x + s2)
