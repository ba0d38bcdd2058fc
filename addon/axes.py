# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place where Troupe's frame becomes Blender's frame. numpy only (no bpy).

Convention:
    - Troupe (the bundle, SMPL-X, AMASS after its own fix-up): right-handed, +Y up, metres.
      Cameras are OpenCV: x right, y down, looking along +z.
    - Blender: right-handed, +Z up, metres. Cameras look along -Z with +Y up in the image.

The change of basis is the rotation ``YUP_TO_ZUP`` (+90 degrees about X): (x, y, z) -> (x, -z, y).
Every module of the add-on converts through ``Y_UP`` below and nowhere else, the way
glTF-Blender-IO injects its ``set_convert_functions`` everywhere; a location, a rotation
matrix, a local frame, a 4x4 transform and an OpenCV camera pose each have one method, all derived from the
single matrix.
"""

from __future__ import annotations

import numpy as np

# Rotation taking a +Y-up vector to Blender's +Z-up frame: x -> x, y -> z, z -> -y.
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# OpenCV camera axes (x right, y down, z forward) -> Blender camera axes (x right, y up, -z forward).
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])


class AxisConversion:
    """Converts arrays from a source frame into Blender's frame with one rotation ``matrix``."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.asarray(matrix, np.float64)  # (3,3) proper rotation
        self.matrix4 = np.eye(4)
        self.matrix4[:3, :3] = self.matrix

    def points(self, p: np.ndarray) -> np.ndarray:
        """(...,3) positions or directions -> (...,3) in Blender's frame (float64)."""
        return np.asarray(p, np.float64) @ self.matrix.T

    def rotations(self, r: np.ndarray) -> np.ndarray:
        """(...,3,3) rotations acting on source-frame vectors -> the same rotations in Blender's frame."""
        return self.matrix @ np.asarray(r, np.float64) @ self.matrix.T

    def orientations(self, r: np.ndarray) -> np.ndarray:
        """(...,3,3) local frames (columns = a body's axes in source coordinates) -> the same axes
        in Blender's frame. Unlike ``rotations``, the local side is not converted."""
        return self.matrix @ np.asarray(r, np.float64)

    def transforms(self, m: np.ndarray) -> np.ndarray:
        """(...,4,4) rigid/affine transforms of the source frame -> the same in Blender's frame."""
        return self.matrix4 @ np.asarray(m, np.float64) @ self.matrix4.T

    def camera_matrix_world(self, world_to_cam: np.ndarray) -> np.ndarray:
        """(...,4,4) OpenCV world-to-camera -> (...,4,4) Blender camera object ``matrix_world``."""
        cam_to_world = np.linalg.inv(np.asarray(world_to_cam, np.float64))
        flip = np.eye(4)
        flip[:3, :3] = OPENCV_TO_BLENDER_CAMERA
        return self.matrix4 @ cam_to_world @ flip


Y_UP = AxisConversion(YUP_TO_ZUP)  # Troupe bundles, SMPL-X models, AMASS files after their fix-up
IDENTITY = AxisConversion(np.eye(3))  # data that is already +Z up
# 3DGS trainers work in COLMAP/OpenCV world frames, usually with -Y up: (x, y, z) -> (x, z, -y).
Y_DOWN = AxisConversion(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]))
