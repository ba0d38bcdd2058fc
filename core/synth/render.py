"""A small CPU renderer for synthetic scenes: z-buffered triangles in numpy, and a ray-cast
background (textured ground, walls, sky).

Convention: OpenCV cameras (x right, y down, +z forward), ``K`` in pixels, ``world_to_cam`` 4x4.
Pixel (row r, column c) is the unit square [c, c+1) x [r, r+1) of the continuous image
coordinates that ``K`` projects to, and is sampled at its centre (c + 0.5, r + 0.5), the same
convention as ``bundle.Camera.project``. Depth is the camera z (metres).

People are always drawn over the background: a body standing on the ground, seen by a camera
above the ground and inside the walls, is never hidden by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

NEAR = 0.05  # m: triangles with a vertex closer than this to the camera plane are dropped
_MAX_CANDIDATES = 1 << 21  # pixels tested per batch of triangles (memory bound)


@dataclass
class Fragments:
    """Candidate surface samples (before z-buffering) of a set of triangles on a pixel canvas."""

    pixel: np.ndarray  # [M] int64 flat index row * width + col on the canvas
    depth: np.ndarray  # [M] float32 camera z
    face: np.ndarray  # [M] int32 triangle index
    bary: np.ndarray  # [M, 3] float32 perspective-correct barycentric weights


def rasterize(
    xy: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int, cull_back: bool = True
) -> Fragments:
    """Every pixel centre inside every triangle (no z-test yet).

    Args:
        xy: [V, 2] continuous pixel coordinates of the vertices on this canvas.
        z: [V] camera depth of the vertices.
        faces: [F, 3] vertex indices, counter-clockwise seen from outside (outward normals by the
            right-hand rule).
        width, height: canvas size in pixels.
        cull_back: drop triangles facing away from the camera (for closed, outward-oriented meshes;
            such a face looks clockwise in the y-down image).
    """
    faces = np.asarray(faces)
    zf = z[faces]  # [F, 3]
    keep = (zf > NEAR).all(axis=1)
    p = xy[faces]  # [F, 3, 2]
    area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (
        p[:, 2, 0] - p[:, 0, 0]
    )
    # An outward, counter-clockwise face seen from outside in a y-down image has a negative area.
    keep &= (area < -1e-12) if cull_back else (np.abs(area) > 1e-12)
    lo = np.ceil(p.min(axis=1) - 0.5).astype(np.int64)  # first pixel whose centre may be inside
    hi = np.floor(p.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    keep &= (hi >= lo).all(axis=1)
    idx = np.nonzero(keep)[0]
    span = (hi[idx] - lo[idx] + 1).max(axis=1)
    bucket = np.ceil(np.log2(np.maximum(span, 1))).astype(np.int64)
    out: list[tuple[np.ndarray, ...]] = []
    for b in np.unique(bucket):
        k = 1 << int(b)
        sel = idx[bucket == b]
        gy, gx = np.divmod(np.arange(k * k), k)
        per = max(1, _MAX_CANDIDATES // (k * k))
        for s in range(0, len(sel), per):
            f = sel[s : s + per]
            px = lo[f, 0:1] + gx  # [n, k*k]
            py = lo[f, 1:2] + gy
            ok = (px <= hi[f, 0:1]) & (py <= hi[f, 1:2])
            cx, cy = px + 0.5, py + 0.5
            v = p[f]  # [n, 3, 2]
            w = []
            for a, c in ((1, 2), (2, 0), (0, 1)):  # weight of vertex i = area opposite to it
                w.append(
                    (v[:, c, 0:1] - v[:, a, 0:1]) * (cy - v[:, a, 1:2])
                    - (v[:, c, 1:2] - v[:, a, 1:2]) * (cx - v[:, a, 0:1])
                )
            bw = np.stack(w, -1) / area[f][:, None, None]  # [n, k*k, 3] screen-space barycentrics
            ok &= (bw >= -1e-7).all(-1)
            if not ok.any():
                continue
            rows, cols = np.nonzero(ok)
            bsel = bw[rows, cols]
            inv = bsel / zf[f[rows]]  # perspective-correct interpolation
            s_inv = inv.sum(-1)
            out.append(
                (
                    py[rows, cols] * width + px[rows, cols],
                    (1.0 / s_inv).astype(np.float32),
                    f[rows].astype(np.int32),
                    (inv / s_inv[:, None]).astype(np.float32),
                )
            )
    if not out:
        return Fragments(
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, 3), np.float32),
        )
    return Fragments(*(np.concatenate(x) for x in zip(*out)))


def nearest(frags: Fragments) -> np.ndarray:
    """Indices into ``frags`` of the nearest fragment of every covered pixel (the z-buffer)."""
    if len(frags.pixel) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((frags.depth, frags.pixel))
    pix = frags.pixel[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    return order[first]


def vertex_normals(verts: np.ndarray, faces: np.ndarray, incidence) -> np.ndarray:  # type: ignore[no-untyped-def]
    """[V, 3] unit normals: area-weighted face normals summed at the vertices.
    ``incidence`` is the sparse [V, F] vertex-face matrix (``face_incidence``)."""
    v = verts[faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    vn = np.asarray(incidence @ n)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def face_incidence(faces: np.ndarray, num_vertices: int):  # type: ignore[no-untyped-def]
    """Sparse [V, F] matrix with a 1 where the vertex belongs to the face."""
    from scipy.sparse import csr_matrix

    f = np.asarray(faces)
    rows = f.reshape(-1)
    cols = np.repeat(np.arange(len(f)), 3)
    return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, len(f)))


# --------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, size: int, octaves: tuple[int, ...]) -> np.ndarray:
    """[size, size] tileable multi-octave value noise in about [-1, 1]."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for cells in octaves:
        g = rng.normal(size=(cells, cells)).astype(np.float32)
        g = np.concatenate([g, g[:1]], 0)
        g = np.concatenate([g, g[:, :1]], 1)  # wrap so the tile repeats seamlessly
        up = cv2.resize(g, (size + size // cells, size + size // cells), interpolation=cv2.INTER_CUBIC)
        out += amp * up[:size, :size]
        amp *= 0.55
    return out / max(np.abs(out).max(), 1e-6)


def _remap(tex: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of [S, S, 3] ``tex`` at texel coordinates x, y [N] -> [N, 3]."""
    n = len(x)
    cols = 1024  # cv2.remap wants 2D maps under 32767 on a side
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(
        tex, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
    )
    return out.reshape(-1, 3)[:n]


def _mips(tex: np.ndarray, levels: int = 6) -> list[np.ndarray]:
    out = [tex]
    for _ in range(levels - 1):
        out.append(cv2.pyrDown(out[-1]))
    return out


@dataclass
class Backdrop:
    """A room: a textured ground (y = 0), four textured walls at |x| = |z| = ``half`` and a sky.

    Textures are tiles repeated every ``tile`` metres, with mip levels against shimmering.
    """

    ground: list[np.ndarray]  # mip levels of an [S, S, 3] float32 RGB tile in 0..1
    wall: list[np.ndarray]
    tile: float = 6.0  # m per texture tile
    half: float = 11.0  # m from the centre to each wall
    wall_height: float = 4.5  # m
    sky_top: tuple[float, float, float] = (0.45, 0.62, 0.86)
    sky_horizon: tuple[float, float, float] = (0.82, 0.87, 0.92)
    _cache: tuple | None = field(default=None, repr=False)  # last camera's ray cast

    @classmethod
    def generate(cls, rng: np.random.Generator, size: int = 512) -> Backdrop:
        """Paving of large tiles with grout lines and stains on the ground; stone courses on the walls."""
        n1 = _noise(rng, size, (4, 16, 64))
        n2 = _noise(rng, size, (8, 32, 128))
        base = np.array(rng.choice([(0.55, 0.52, 0.46), (0.48, 0.5, 0.44), (0.58, 0.5, 0.42)]), np.float32)
        g = base * (1 + 0.22 * n1[..., None]) + 0.05 * n2[..., None]
        cells = 6  # 1 m paving slabs on a 6 m tile
        u = (np.arange(size) * cells / size) % 1.0
        line = np.minimum(u, 1 - u) < 0.012
        grout = line[None, :] | line[:, None]
        slab = rng.uniform(0.85, 1.15, (cells, cells)).astype(np.float32)
        g *= np.kron(slab, np.ones((size // cells + 1, size // cells + 1), np.float32))[:size, :size, None]
        g[grout] *= 0.45
        # walls: courses of stone blocks, each block its own tint
        w_base = np.array(rng.choice([(0.62, 0.45, 0.36), (0.55, 0.55, 0.58), (0.66, 0.6, 0.48)]), np.float32)
        rows = 12
        block_h = size // rows
        wall = np.empty((size, size, 3), np.float32)
        for r in range(rows):
            shift = (r % 2) * (size // 12)
            tints = rng.uniform(0.75, 1.2, 6)
            cols = ((np.arange(size) + shift) // (size // 6)) % 6
            wall[r * block_h : (r + 1) * block_h] = w_base * tints[cols][None, :, None]
        wall[rows * block_h :] = w_base
        wall *= 1 + 0.15 * n2[..., None]
        yy = np.arange(size) % block_h
        xx = np.arange(size)
        mortar = (yy < 2)[:, None] | (
            ((xx[None, :] + (np.arange(size)[:, None] // block_h % 2) * (size // 12)) % (size // 6)) < 2
        )
        wall[mortar] = 0.3
        return cls(ground=_mips(np.clip(g, 0, 1)), wall=_mips(np.clip(wall, 0, 1)))

    def _sample(
        self, mips: list[np.ndarray], u: np.ndarray, v: np.ndarray, footprint: np.ndarray
    ) -> np.ndarray:
        """Texture colour at tile coordinates u, v (metres) for pixels covering ``footprint`` m."""
        size = mips[0].shape[0]
        texel = self.tile / size
        lvl = np.clip(np.log2(np.maximum(footprint / texel, 1e-6)), 0, len(mips) - 1)
        lo = np.floor(lvl).astype(int)
        hi = np.minimum(lo + 1, len(mips) - 1)
        frac = lvl - lo
        out = np.zeros((len(u), 3), np.float32)
        for level in range(int(lo.min()), int(hi.max()) + 1):
            sel = np.nonzero((lo == level) | (hi == level))[0]
            s = mips[level].shape[0]
            col = _remap(mips[level], (u[sel] / self.tile) * s - 0.5, (v[sel] / self.tile) * s - 0.5)
            w = (lo[sel] == level) * (1 - frac[sel]) + (hi[sel] == level) * frac[sel]  # trilinear
            out[sel] += w[:, None].astype(np.float32) * col
        return out

    def render(
        self,
        K: np.ndarray,
        world_to_cam: np.ndarray,
        width: int,
        height: int,
        shadows: np.ndarray | None = None,
    ) -> np.ndarray:
        """[H, W, 3] float32 RGB of the empty room seen by the camera.

        ``shadows``: [P, 3] (x, z, radius) soft contact shadows on the ground (blob under each person).
        The shadow-free image of the last camera is kept, so a static camera ray-casts once.
        """
        key = (
            np.asarray(K, np.float64).tobytes(),
            np.asarray(world_to_cam, np.float64).tobytes(),
            width,
            height,
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, *self._cast(K, world_to_cam, width, height))
        _, base, ground, gx, gz = self._cache
        img = base.copy()
        if shadows is not None and len(ground):
            shade = np.ones(len(gx), np.float32)
            for sx, sz, rad in shadows:
                d2 = (gx - np.float32(sx)) ** 2 + (gz - np.float32(sz)) ** 2
                near = np.nonzero(d2 < (3 * rad) ** 2)[0]
                shade[near] *= 1 - 0.45 * np.exp(-d2[near] / np.float32(2 * rad**2))
            flat = img.reshape(-1, 3)
            flat[ground] *= shade[:, None]
        return img

    def _cast(
        self, K: np.ndarray, world_to_cam: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, ...]:
        """Shadow-free image [H, W, 3], flat indices of ground pixels and their ground x, z."""
        r = world_to_cam[:3, :3]
        cam = -r.T @ world_to_cam[:3, 3]
        f = 0.5 * (K[0, 0] + K[1, 1])
        cols, rows = np.meshgrid(
            np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5
        )
        pix = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size, np.float32)], -1)
        d = pix @ (np.linalg.inv(K).T @ r).astype(np.float32)  # [N, 3] world ray directions (camera z = 1)
        dist = np.linalg.norm(d, axis=1)
        dn = d / dist[:, None]
        # sky: vertical gradient by elevation
        elev = np.clip(dn[:, 1], 0, 1)[:, None] ** 0.6
        img = (
            np.array(self.sky_horizon, np.float32) * (1 - elev) + np.array(self.sky_top, np.float32) * elev
        ).astype(np.float32)
        # walls
        t_wall = np.full(len(d), np.inf, np.float32)
        wall_u = np.zeros(len(d), np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, other in ((0, 2), (2, 0)):
                for sign in (-1.0, 1.0):
                    t = (sign * self.half - cam[axis]) / d[:, axis]
                    better = (t > 0) & (t < t_wall)
                    t_wall[better] = t[better]
                    wall_u[better] = cam[other] + t[better] * d[better, other] + (axis + sign) * 3.1
            t_g = -cam[1] / d[:, 1]
        y_wall = cam[1] + t_wall * d[:, 1]
        on_ground = (d[:, 1] < 0) & (t_g < t_wall)
        on_wall = np.isfinite(t_wall) & (y_wall <= self.wall_height) & (y_wall >= 0) & ~on_ground
        if on_wall.any():
            fp = t_wall[on_wall] * dist[on_wall] / f
            fp /= np.maximum(np.abs(dn[on_wall][:, [0, 2]]).max(axis=1), 0.2)
            img[on_wall] = 0.9 * self._sample(
                self.wall, wall_u[on_wall], self.wall_height - y_wall[on_wall], fp
            )
        ground = np.nonzero(on_ground)[0]
        tg = t_g[ground]
        gx = (cam[0] + tg * d[ground, 0]).astype(np.float32)
        gz = (cam[2] + tg * d[ground, 2]).astype(np.float32)
        if len(ground):
            fp = tg * dist[ground] / f / np.maximum(np.sqrt(np.abs(dn[ground, 1])), 0.05)
            img[ground] = self._sample(self.ground, gx, gz, fp)
        return img.reshape(height, width, 3), ground, gx, gz
