"""The static background as a plate, so the people's Gaussians are not asked to explain it.

For frame t the plate is the frame itself outside the people's (dilated) masks, and inside
them the background as seen in other frames: the per-pixel median over frames where that
pixel is free (static camera; pixels never free are inpainted), or OpenCV inpainting of the
frame (moving camera). Renders are composited over it: ``color + (1 - alpha) * plate[t]``.
Static plates are computed on the device and cost one image of memory.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import bundle


def is_static(camera: bundle.Camera, tol: float = 1e-5) -> bool:
    return bool(np.abs(camera.world_to_cam - camera.world_to_cam[:1]).max() <= tol
                and np.abs(camera.K - camera.K[:1]).max() <= tol * 1e3)  # fmt: skip


def dilate(masks: Tensor, pixels: int) -> Tensor:
    """[T,H,W] bool -> the same grown by ``pixels`` (square neighbourhood)."""
    if pixels <= 0:
        return masks.bool()
    k = 2 * pixels + 1
    if masks.is_cuda:
        return F.max_pool2d(masks[:, None].half(), k, stride=1, padding=pixels)[:, 0] > 0
    kernel = np.ones((k, k), np.uint8)  # OpenCV is much faster than max_pool2d on the CPU
    grown = [cv2.dilate(m, kernel) for m in masks.numpy().astype(np.uint8)]
    return torch.as_tensor(np.stack(grown) > 0)


class Plates:
    """Background plate of every frame: ``plates.get(frames)`` -> float [B,H,W,3] in [0,1]."""

    def __init__(self, frames: Tensor, occupied: Tensor, static: bool, max_median_frames: int = 31) -> None:
        """frames [T,H,W,3] uint8 and occupied [T,H,W] bool (people, dilated), on one device."""
        self.frames = frames
        self.occupied = occupied
        self.median: Tensor | None = None
        self._median_float: Tensor | None = None
        self.inpainted: Tensor | None = None
        num_t = len(frames)
        if static:
            pick = (
                torch.linspace(0, num_t - 1, min(num_t, max_median_frames), device=frames.device)
                .round()
                .long()
            )
            stack = frames[pick].float()
            stack[occupied[pick]] = torch.nan
            median = torch.nanmedian(stack, dim=0).values  # NaN where a pixel is never free
            never = torch.isnan(median[..., 0])
            median = torch.nan_to_num(median).clamp(0, 255).round().to(torch.uint8)
            if bool(never.any()):
                filled = cv2.inpaint(
                    median.cpu().numpy(), never.cpu().numpy().astype(np.uint8), 5, cv2.INPAINT_TELEA
                )
                median = torch.as_tensor(filled, device=frames.device)
            self.median = median
        else:
            out = frames.cpu().numpy().copy()
            occ = occupied.cpu().numpy()
            for t in range(num_t):
                if occ[t].any():
                    out[t] = cv2.inpaint(out[t], occ[t].astype(np.uint8), 5, cv2.INPAINT_TELEA)
            self.inpainted = torch.as_tensor(out, device=frames.device)

    def crop(self, t: int, y0: int, y1: int, x0: int, x1: int) -> Tensor:
        """The background behind the people's pixels of frame ``t`` in a window -> float [h,w,3] in [0,1].

        Only meant where the loss reads it, inside the (dilated) masks: a static camera's median
        is returned everywhere (the frame itself shows outside the masks)."""
        if self.median is not None:
            if self._median_float is None:
                self._median_float = self.median.float() / 255.0
            return self._median_float[y0:y1, x0:x1]
        assert self.inpainted is not None
        return self.inpainted[t, y0:y1, x0:x1].float() / 255.0

    def get(self, frames: Tensor) -> Tensor:
        if self.median is not None:
            img = torch.where(self.occupied[frames][..., None], self.median, self.frames[frames])
        else:
            assert self.inpainted is not None
            img = self.inpainted[frames]
        return img.float() / 255.0
