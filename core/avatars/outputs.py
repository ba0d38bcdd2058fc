"""What the avatar optimisation leaves in its folder, and the renders a person looks at.

Layout of ``<job>/avatars/`` (a valid bundle, so ``python -m core validate`` reads it)::

    bundle.json, camera.npz      as the motion stage's bundle
    people/<id>/motion.npz       the motion, with the refined poses when pose refinement is on
    people/<id>/rig.npz          unchanged
    people/<id>/splats.ply       canonical Gaussians (3DGS layout + top-k skin weights)
    config.json                  the resolved AvatarConfig
    metrics.json                 held-out PSNR / SSIM inside the people's masks (before and after),
                                 speed, Gaussian counts, loss history
    renders/heldout/<frame>.png  ground truth | render, for held-out frames
    renders/orbit_<id>.png       a contact sheet of novel views orbiting the person
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import bundle
from .fit import AvatarResult, Avatars, _Data, cpu_threads


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """world_to_cam (4,4) of an OpenCV camera at ``eye`` looking at ``target`` with world +Y up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)  # right = down x forward
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, y, z])
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def orbit_cameras(center: np.ndarray, world_to_cam: np.ndarray, views: int, radius: float,
                  height: float = 0.3) -> np.ndarray:  # fmt: skip
    """(views,4,4) cameras on a horizontal circle of ``radius`` around ``center``, ``height`` above
    it, looking at it; the first one on the side of the given camera."""
    eye0 = -world_to_cam[:3, :3].T @ world_to_cam[:3, 3]
    a0 = math.atan2(eye0[0] - center[0], eye0[2] - center[2])
    out = []
    for k in range(views):
        a = a0 + 2 * math.pi * k / views
        eye = center + np.array([radius * math.sin(a), height, radius * math.cos(a)])
        out.append(look_at(eye, center))
    return np.stack(out)


@torch.no_grad()
def render_orbit(
    avatars: Avatars, data: _Data, person: int, frame: int, views: int, sh_degree: int
) -> np.ndarray:
    """Novel views (views,H,W,3) uint8 RGB of one person at ``frame`` on a white background, with the
    frame's intrinsics, from a circle around the pelvis."""
    tr = avatars.transforms(torch.tensor([frame], device=avatars.device))[0, person, 0]  # pelvis [4,4]
    pelvis = tr[:3, :3] @ avatars.joints[person, 0] + tr[:3, 3]  # the orbit's centre
    # Close enough that 2.4 m of height fill the image (the whole person, with a margin).
    radius = max(1.0, 2.4 * float(data.Ks[frame, 1, 1]) / data.height)
    vm = orbit_cameras(
        pelvis.cpu().double().numpy(), data.viewmats[frame].cpu().double().numpy(), views, radius
    )
    vm_t = torch.as_tensor(vm, dtype=torch.float32, device=avatars.device)[:, None]
    ks = data.Ks[frame][None, None].expand(views, 1, 3, 3)
    frames = torch.full((views,), frame, device=avatars.device)
    hidden = torch.ones(views, len(avatars.people), dtype=torch.bool, device=avatars.device)
    hidden[:, person] = False
    imgs = []
    for i in range(views):  # one view at a time keeps memory flat
        out = avatars.render(frames[i : i + 1], vm_t[i : i + 1], ks[i : i + 1], data.width, data.height,
                             sh_degree, hidden[i : i + 1])  # fmt: skip
        imgs.append((out.color[0, 0, ..., :3] + 1.0 - out.alpha[0, 0]).clamp(0, 1))
    return (torch.stack(imgs).cpu().numpy() * 255).round().astype(np.uint8)


def contact_sheet(images: np.ndarray, columns: int = 4) -> np.ndarray:
    """(N,H,W,3) -> one grid image."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return sheet


def best_frame(data: _Data, person: int, frames: list[int]) -> int:
    """The frame (of ``frames``) where the person's mask is largest."""
    return max((int(data.area[t, person]), t) for t in frames)[1]


def write_outputs(result: AvatarResult, out_dir: Path | str) -> Path:
    """Write the bundle with splats, config, metrics and renders into ``out_dir``."""
    device = result.avatars.device if result.avatars is not None else "cpu"
    with cpu_threads(result.config, device):
        return _write_outputs(result, Path(out_dir))


def _write_outputs(result: AvatarResult, out_dir: Path) -> Path:
    out = Path(out_dir)
    bundle.write_bundle(out, result.bundle)
    (out / "config.json").write_text(json.dumps(result.config.to_json(), indent=2) + "\n")
    metrics = dict(result.metrics)
    metrics["heldout_frames"] = result.heldout_frames
    metrics["history"] = result.history
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    avatars, data = result.avatars, result.data
    if avatars is None or data is None:
        return out
    deg = result.bundle.people[0].splats.sh_degree if result.bundle.people[0].splats is not None else 0
    (out / "renders" / "heldout").mkdir(parents=True, exist_ok=True)
    for t, img in sorted(result.heldout_images.items()):
        cv2.imwrite(str(out / "renders" / "heldout" / f"{t:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    frames_all = result.train_frames + result.heldout_frames
    for i, person in enumerate(result.bundle.people):
        cfg_frame = result.config.orbit_frame
        frame = cfg_frame if 0 <= cfg_frame < len(data.frames) else best_frame(data, i, frames_all)
        views = render_orbit(avatars, data, i, frame, result.config.orbit_views, deg)
        sheet = contact_sheet(views, columns=min(4, len(views)))
        cv2.imwrite(str(out / "renders" / f"orbit_{person.id}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out
