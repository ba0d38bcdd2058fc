"""Draw fitted bodies over video frames (for checking a fit by eye and for docs/images).

Each person's posed SMPL-X mesh is projected with the bundle's camera and filled
triangle by triangle, far to near (painter's order, one flat colour per person, shaded by the
facing of each triangle), then blended over the frame; the floor grid (y = 0) is drawn under
them so "standing on the floor" can be judged.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import bundle

COLORS = ((230, 120, 60), (60, 180, 240), (90, 200, 90), (200, 90, 200), (60, 220, 220), (220, 200, 80))  # BGR


def posed_vertices(person: bundle.Person, frame: int) -> np.ndarray:
    """[V, 3] world vertices of a bundle person at a bundle frame (rig + motion, LBS)."""
    _, skin = bundle.forward_kinematics(
        person.rig.joints, person.rig.parents, person.motion.rotvecs[frame : frame + 1], person.motion.trans[frame : frame + 1]
    )
    return bundle.skin_points(person.rig.vertices, None, person.rig.weights, skin[0])


def draw_floor(img: np.ndarray, cam: bundle.Camera, frame: int, centre: np.ndarray, half: float = 3.0) -> None:
    ticks = np.arange(-half, half + 1e-6, 0.5)
    for a in ticks:
        for line in (
            np.array([[centre[0] + a, 0, centre[2] - half], [centre[0] + a, 0, centre[2] + half]]),
            np.array([[centre[0] - half, 0, centre[2] + a], [centre[0] + half, 0, centre[2] + a]]),
        ):
            pts = np.linspace(line[0], line[1], 20)
            pc = pts @ cam.world_to_cam[frame, :3, :3].T + cam.world_to_cam[frame, :3, 3]
            keep = pc[:, 2] > 0.1
            if keep.sum() < 2:
                continue
            uv = cam.project(pts[keep], frame)
            cv2.polylines(img, [np.round(uv * 4).astype(np.int32)], False, (200, 200, 200), 1, cv2.LINE_AA, shift=2)


def draw_bodies(img: np.ndarray, b: bundle.Bundle, frame: int, alpha: float = 0.55) -> np.ndarray:
    """The frame (BGR, of the bundle's image size) with everyone seen at ``frame`` drawn over it."""
    out = img.copy()
    layer = img.copy()
    cam = b.camera
    tris = []
    centres = []
    for i, p in enumerate(b.people):
        if p.motion.visibility[frame] <= 0:
            continue
        v = posed_vertices(p, frame)
        centres.append(v.mean(0))
        pc = v @ cam.world_to_cam[frame, :3, :3].T + cam.world_to_cam[frame, :3, 3]
        if (pc[:, 2] < 0.1).any():
            continue
        uv = cam.project(v, frame)
        f = p.rig.faces
        tri_c = pc[f]  # [F,3,3]
        normal = np.cross(tri_c[:, 1] - tri_c[:, 0], tri_c[:, 2] - tri_c[:, 0])
        view = -tri_c.mean(1)
        shade = np.abs((normal * view).sum(1)) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(view, axis=1) + 1e-12)
        depth = tri_c[:, :, 2].mean(1)
        color = np.array(COLORS[i % len(COLORS)], np.float64)
        tris.append((depth, uv[f], color[None] * (0.35 + 0.65 * shade[:, None])))
    if centres:
        draw_floor(out, cam, frame, np.mean(centres, 0))
        layer = out.copy()
    if tris:
        depth = np.concatenate([t[0] for t in tris])
        uv = np.concatenate([t[1] for t in tris])
        col = np.concatenate([t[2] for t in tris])
        for k in np.argsort(-depth):
            cv2.fillConvexPoly(layer, np.round(uv[k] * 4).astype(np.int32), col[k].tolist(), cv2.LINE_8, shift=2)
    return cv2.addWeighted(layer, alpha, out, 1 - alpha, 0)


def contact_sheet(images: list[np.ndarray], width: int = 1280) -> np.ndarray:
    """Frames side by side, scaled to ``width`` in all."""
    h = min(im.shape[0] for im in images)
    row = np.concatenate([cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h)) for im in images], axis=1)
    scale = width / row.shape[1]
    return cv2.resize(row, (width, round(row.shape[0] * scale)), interpolation=cv2.INTER_AREA)
