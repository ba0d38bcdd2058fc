# SPDX-License-Identifier: GPL-3.0-or-later
"""3D Gaussian splats as point data Blender can skin and draw. numpy only (no bpy).

A splat object is a mesh of N loose vertices (the Gaussians' centres) with point attributes:
``splat_axis_x`` / ``splat_axis_y`` (the Gaussian's local x and y axes, unit vectors in
Blender's frame), ``splat_scale`` (standard deviations along x, y, z), ``splat_color`` and
``splat_alpha``, and for a skinned cloud ``skin_joint_i`` / ``skin_weight_i``. Skinning
(Geometry Nodes, ``gsplat.py``) moves the centres and turns the two axes with the blended
joint transforms; the display set-up builds each ellipsoid's rotation from the two axes.

Colour and opacity follow the 3DGS reference: ``rgb = 0.5 + C0 * f_dc`` (SH degree 0,
C0 = 0.28209479, display-referred sRGB) and ``alpha = sigmoid(opacity)``; the colour is stored
scene-linear so a Standard view transform shows the trained colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import bundle
from .axes import AxisConversion
from .rig import quaternion_to_matrix

SH_C0 = 0.28209479177387814


@dataclass
class SplatPoints:
    """Splats ready for Blender (Blender frame)."""

    positions: np.ndarray  # (N,3) centres
    axis_x: np.ndarray  # (N,3) unit local x axis of each Gaussian
    axis_y: np.ndarray  # (N,3) unit local y axis
    scales: np.ndarray  # (N,3) standard deviations along the local axes (exp of log scales)
    colors: np.ndarray  # (N,4) scene-linear RGBA, A = 1
    alphas: np.ndarray  # (N,) opacity in [0,1]
    skin_joints: np.ndarray  # (N,k) joint ids
    skin_weights: np.ndarray  # (N,k)

    @property
    def count(self) -> int:
        return int(self.scales.shape[0])


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def sh_dc_to_rgb(f_dc: np.ndarray) -> np.ndarray:
    """(N,3) SH degree-0 coefficients -> (N,3) display-referred RGB in [0,1]."""
    return np.clip(0.5 + SH_C0 * np.asarray(f_dc, np.float64), 0.0, 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def splat_points(splats: bundle.Splats, conv: AxisConversion) -> SplatPoints:
    """Convert canonical Gaussians (source frame) into Blender's frame and point attributes."""
    axes = conv.orientations(quaternion_to_matrix(splats.quats))  # (N,3,3) columns = local axes
    rgb = srgb_to_linear(sh_dc_to_rgb(splats.sh[:, 0, :]))
    colors = np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1)
    return SplatPoints(
        positions=conv.points(splats.means),
        axis_x=axes[:, :, 0],
        axis_y=axes[:, :, 1],
        scales=np.exp(np.asarray(splats.log_scales, np.float64)),
        colors=colors,
        alphas=sigmoid(splats.opacity).reshape(-1),
        skin_joints=np.asarray(splats.skin_joints, np.int64),
        skin_weights=np.asarray(splats.skin_weights, np.float64),
    )
