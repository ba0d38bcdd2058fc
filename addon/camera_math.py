# SPDX-License-Identifier: GPL-3.0-or-later
"""Pinhole intrinsics in pixels -> Blender camera settings. numpy only (no bpy).

For an image of W x H pixels and ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (OpenCV, pixel
centres at .5, so the image spans [0, W] x [0, H]), with square pixels (pixel aspect 1):

    fit the larger side:   sensor_fit = HORIZONTAL if W >= H else VERTICAL, size S = max(W, H)
    sensor (mm):           sensor_width = sensor_height = SENSOR_MM (36, the value is arbitrary)
    focal length (mm):     lens = f * SENSOR_MM / S, with f = fx (horizontal fit) or fy (vertical)
    principal point:       shift_x = (W / 2 - cx) / S,  shift_y = (cy - H / 2) / S

Blender measures shifts in units of the fitted sensor side, x to the right and y up, while
OpenCV's y points down, hence the opposite signs. Where fx and fy differ (non-square pixels)
Blender cannot match both with a pixel aspect of 1: ``intrinsics_to_blender`` uses the fitted
side's focal length and reports the relative difference so the importer can warn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SENSOR_MM = 36.0


@dataclass
class BlenderIntrinsics:
    """Per-frame Blender camera data values (arrays of length T)."""

    lens: np.ndarray  # (T,) focal length, mm
    shift_x: np.ndarray  # (T,) principal-point shift, fraction of the fitted side
    shift_y: np.ndarray  # (T,)
    sensor_fit: str  # "HORIZONTAL" or "VERTICAL"
    sensor_mm: float  # sensor_width and sensor_height
    aspect_error: float  # max |fx - fy| / f over frames (0 for square pixels)

    @property
    def animated(self) -> bool:
        return bool(np.ptp(self.lens) > 1e-6 or np.ptp(self.shift_x) > 1e-9 or np.ptp(self.shift_y) > 1e-9)


def intrinsics_to_blender(K: np.ndarray, width: int, height: int, sensor_mm: float = SENSOR_MM) -> BlenderIntrinsics:
    """K: (T,3,3) or (3,3) in pixels; image ``width`` x ``height`` pixels."""
    K = np.asarray(K, np.float64).reshape(-1, 3, 3)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    horizontal = width >= height
    size = float(max(width, height))
    f = fx if horizontal else fy
    return BlenderIntrinsics(
        lens=f * sensor_mm / size,
        shift_x=(width / 2.0 - cx) / size,
        shift_y=(cy - height / 2.0) / size,
        sensor_fit="HORIZONTAL" if horizontal else "VERTICAL",
        sensor_mm=sensor_mm,
        aspect_error=float(np.max(np.abs(fx - fy) / f)),
    )


def image_plane_placement(K: np.ndarray, width: int, height: int, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Where a unit quad [0,1]^2 (uv = its xy) goes in camera space to fill the image at ``depth``.

    K: (T,3,3) or (3,3). The quad is scaled then moved, in the camera's local Blender frame
    (looking along -z, y up): pixel (u, v) lies at ((u - cx) / fx, -(v - cy) / fy, -1) * depth,
    so uv (0,0) is the image's bottom-left corner (u = 0, v = H).

    Returns:
        location (T,3) and scale (T,3) of the quad object parented to the camera.
    """
    K = np.asarray(K, np.float64).reshape(-1, 3, 3)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    location = np.stack([-cx / fx * depth, (cy - height) / fy * depth, np.full_like(fx, -depth)], axis=1)
    scale = np.stack([width / fx * depth, height / fy * depth, np.ones_like(fx)], axis=1)
    return location, scale
