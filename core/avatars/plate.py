"""The static background as a plate, so the people's Gaussians are not asked to explain it.

For frame t the plate is the frame itself outside the people's (dilated) masks, and inside
them the background as seen in other frames: the per-pixel median over frames where that
pixel is free (static camera), or OpenCV inpainting of the frame (moving camera, or pixels
never free). Renders are composited over it: ``color + (1 - alpha) * plate[t]``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import bundle


def is_static(camera: bundle.Camera, tol: float = 1e-5) -> bool:
    return bool(np.abs(camera.world_to_cam - camera.world_to_cam[:1]).max() <= tol
                and np.abs(camera.K - camera.K[:1]).max() <= tol * 1e3)  # fmt: skip


def dilate(masks: np.ndarray, pixels: int) -> np.ndarray:
    """(T,H,W) bool -> the same grown by ``pixels``."""
    if pixels <= 0:
        return masks.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])


def make_plates(
    frames: np.ndarray, occupied: np.ndarray, static: bool, max_median_frames: int = 60
) -> np.ndarray:
    """Background plate per frame.

    Args:
        frames: (T,H,W,3) uint8.
        occupied: (T,H,W) bool, pixels covered by people (already dilated).
        static: the camera does not move (a median over time is valid).

    Returns:
        (T,H,W,3) uint8 plates.
    """
    num_t = len(frames)
    plates = frames.copy()
    if static:
        pick = np.linspace(0, num_t - 1, min(num_t, max_median_frames)).round().astype(int)
        stack = frames[pick].astype(np.float32)
        stack[occupied[pick]] = np.nan
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
                median = np.nanmedian(stack, axis=0)
        never = np.isnan(median[..., 0])
        median = np.nan_to_num(median).clip(0, 255).astype(np.uint8)
        if never.any():
            median = cv2.inpaint(median, never.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        for t in range(num_t):
            plates[t][occupied[t]] = median[occupied[t]]
        return plates
    for t in range(num_t):
        if occupied[t].any():
            plates[t] = cv2.inpaint(frames[t], occupied[t].astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return plates
