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


def joint_limit_table() -> np.ndarray:
    """[22, 3, 2] (lo, hi) per joint and axis for pelvis + 21 body joints (pelvis unlimited)."""
    table = np.zeros((22, 3, 2))
    table[0, :, 0], table[0, :, 1] = -np.inf, np.inf
    for j, name in enumerate(bundle.JOINT_NAMES[1:22], start=1):
        if name in _LIMITS:
            table[j] = _LIMITS[name]
        else:
            left = _LIMITS[name.replace("right_", "left_")]
            table[j, 0] = left[0]
            table[j, 1] = (-left[1][1], -left[1][0])
            table[j, 2] = (-left[2][1], -left[2][0])
    return table


# Relative weight of the L2 pull toward the rest pose, per body joint: joints that COCO-17
# keypoints do not pin down (feet, ankles' twist, collars, wrists, spine) are held harder.
_REST_PULL = {"left_foot": 50.0, "left_ankle": 5.0, "left_collar": 20.0, "left_wrist": 10.0,
              "spine1": 5.0, "spine2": 5.0, "spine3": 5.0, "neck": 5.0, "head": 5.0}  # fmt: skip


def rest_pull_weights() -> np.ndarray:
    """[21] weight of each body joint in ``Priors.pose_l2`` (1 = the default)."""
    w = np.ones(21)
    for j, name in enumerate(bundle.JOINT_NAMES[1:22]):
        w[j] = _REST_PULL.get(name.replace("right_", "left_"), 1.0)
    return w


class Priors(torch.nn.Module):
    """Differentiable prior terms (sums over the batch; callers normalise)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        t = torch.as_tensor(joint_limit_table()[1:], dtype=torch.float32, device=device)  # [21,3,2]
        self.register_buffer("lo", t[..., 0])
        self.register_buffer("hi", t[..., 1])
        self.register_buffer("pull", torch.as_tensor(rest_pull_weights(), dtype=torch.float32, device=device)[:, None])

    def joint_limits(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] body pose -> [...] squared excess over the limits."""
        p = body_pose.reshape(*body_pose.shape[:-1], 21, 3)
        over = torch.relu(p - self.hi) + torch.relu(self.lo - p)
        return (over**2).sum(dim=(-1, -2))

    def pose_l2(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] -> [...] weighted squared distance to the rest pose (``rest_pull_weights``)."""
        p = body_pose.reshape(*body_pose.shape[:-1], 21, 3)
        return (self.pull * p**2).sum((-1, -2))

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
