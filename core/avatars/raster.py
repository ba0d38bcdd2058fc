"""Gaussian rasterisation with one API and two backends.

Backends:
    ``gsplat``  gsplat 1.5.3 (``gsplat.rasterization``) on CUDA: fast, compiled on first use.
    ``torch``   a pure-torch reference (CPU or CUDA): differentiable by autograd, sparse
                compositing over (Gaussian, pixel) pairs. Slow; for CI, tests and checks.
    ``auto``    gsplat when the tensors are on CUDA and gsplat imports, else torch.

Conventions (the same for both backends, those of gsplat):
    - cameras are OpenCV pinhole (x right, y down, looking along +z); ``viewmats`` are
      world-to-camera 4x4, ``Ks`` are 3x3 in pixels; pixel (i, j) has its centre at (i+.5, j+.5);
    - Gaussians: ``quats`` w,x,y,z (normalised here), ``log_scales`` (scale = exp),
      ``opacity_logits`` (opacity = sigmoid);
    - colours are post-activation values ``[N, D]`` (or per camera ``[C, N, D]``) or, with
      ``sh_degree`` set, spherical-harmonic coefficients ``[N, K, 3]`` evaluated along the
      direction camera centre -> Gaussian, plus 0.5, clamped at 0 (as the 3DGS reference);
    - the projected 2D covariance gets ``eps2d`` (0.3 px^2) added; ``antialiased`` scales the
      opacity by sqrt(det(cov) / det(cov + eps2d I)) (Mip-Splatting), as gsplat's "antialiased";
    - Gaussians whose camera depth lies outside [near_plane, far_plane] are dropped;
    - per pixel, front-to-back by depth: alpha = min(0.999, opacity * exp(-0.5 d^T conic d)),
      contributions below 1/255 skipped, compositing stops before transmittance reaches 1e-4;
    - outputs: colour (plus ``backgrounds`` * (1 - alpha)), alpha, and expected depth
      sum(w z) / alpha.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_STOP = 1e-4

BACKENDS = ("auto", "torch", "gsplat")

log = logging.getLogger("troupe.avatars")


@dataclass
class Render:
    """What a rasterisation returns (C cameras, optional leading batch B)."""

    color: Tensor  # [(B,) C, H, W, D]
    alpha: Tensor  # [(B,) C, H, W, 1]
    depth: Tensor  # [(B,) C, H, W, 1] expected camera depth (0 where nothing is seen)
    means2d: Tensor  # [(B,) C, N, 2] projected centres (retains grad, for densification)
    radii: Tensor  # [(B,) C, N, 2] int pixel radii, 0 = not drawn
    backend: str


def gsplat_available() -> bool:
    """gsplat imports (its CUDA kernels may still fail to build: see ``gsplat_problem``)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken dependency at import
        return False
    return True


@functools.lru_cache(maxsize=1)
def gsplat_problem() -> str | None:
    """None when gsplat's CUDA kernels load (built on first use, minutes), else what is wrong."""
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:
        return f"gsplat could not build or load its CUDA kernels ({type(exc).__name__}: {exc})"
    if _C is None:
        return "gsplat found no CUDA toolkit (nvcc, CUDA_HOME) to build its kernels"
    return None


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"rasteriser backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "torch":
        return backend
    if device.type != "cuda":
        if backend == "gsplat":
            raise ValueError("the gsplat backend needs CUDA tensors; use backend='torch' on the CPU")
        return "torch"
    if backend == "auto" and not gsplat_available():
        log.warning("gsplat is not installed: rendering with the (slow) torch reference on the GPU")
        return "torch"
    problem = gsplat_problem()
    if problem:
        raise RuntimeError(f"{problem}. Install the CUDA toolkit matching torch {torch.version.cuda} "
                           "(or set backend='torch' / run on the CPU)")  # fmt: skip
    return "gsplat"


# --------------------------------------------------------------------------------------
# Small geometry shared with the avatar model
# --------------------------------------------------------------------------------------


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] quaternions w,x,y,z (any norm) -> [..., 3, 3] rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


# Real spherical-harmonic basis constants (degree 0..3), in the 3DGS ordering.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """[..., 3] directions (any length) -> [..., (degree+1)^2] real SH basis values."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, not {degree}")
    x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy), _C3[1] * x * y * z, _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy),
        ]  # fmt: skip
    return torch.stack(out, dim=-1)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH coefficients [..., K, 3] seen along dirs [..., 3] -> colour [..., 3] (+0.5, clamped >= 0)."""
    nb = (degree + 1) ** 2
    if coeffs.shape[-2] < nb:
        raise ValueError(f"SH degree {degree} needs {nb} coefficients per channel, got {coeffs.shape[-2]}")
    if degree == 0:  # no view dependence: the directions are not needed
        return torch.clamp_min(coeffs[..., 0, :] * _C0 + 0.5, 0.0)
    basis = sh_basis(degree, dirs)
    return torch.clamp_min((basis[..., None] * coeffs[..., :nb, :]).sum(-2) + 0.5, 0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colour in [0,1] -> DC SH coefficient (so that ``sh_to_color`` gives the colour back)."""
    return (rgb - 0.5) / _C0


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def rasterize(
    means: Tensor,  # [(B,) N, 3] world
    quats: Tensor,  # [(B,) N, 4] wxyz
    log_scales: Tensor,  # [(B,) N, 3]
    opacity_logits: Tensor,  # [(B,) N]
    colors: Tensor,  # [(B,) (C,) N, D] or SH [(B,) N, K, 3] with sh_degree
    viewmats: Tensor,  # [(B,) C, 4, 4] world-to-camera
    Ks: Tensor,  # [(B,) C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    backgrounds: Tensor | None = None,  # [(B,) C, D]
    backend: str = "auto",
) -> Render:
    """Render Gaussians into C cameras (see the module docstring for every convention).

    A leading batch dimension B renders B different sets of Gaussians (e.g. the same people
    posed at B frames) with B sets of cameras in one call.
    """
    batched = means.dim() == 3
    if means.dim() not in (2, 3) or means.shape[-1] != 3:
        raise ValueError(f"means must be [N, 3] or [B, N, 3], got {tuple(means.shape)}")
    n = means.shape[-2]
    bd = means.shape[:-2]
    for name, t, tail in (("quats", quats, (n, 4)), ("log_scales", log_scales, (n, 3)),
                          ("opacity_logits", opacity_logits, (n,))):  # fmt: skip
        if tuple(t.shape) != tuple(bd) + tail:
            raise ValueError(f"{name} must have shape {tuple(bd) + tail}, got {tuple(t.shape)}")
    if viewmats.dim() != len(bd) + 3 or viewmats.shape[-2:] != (4, 4):
        raise ValueError(
            f"viewmats must be {'[B, C, 4, 4]' if batched else '[C, 4, 4]'}, got {tuple(viewmats.shape)}"
        )
    if Ks.shape != viewmats.shape[:-2] + (3, 3):
        raise ValueError(f"Ks must be {tuple(viewmats.shape[:-2]) + (3, 3)}, got {tuple(Ks.shape)}")
    if sh_degree is not None and (colors.shape[-1] != 3 or colors.shape[-2] < (sh_degree + 1) ** 2):
        raise ValueError(
            f"with sh_degree={sh_degree} colors must be [N, K>={(sh_degree + 1) ** 2}, 3], got {tuple(colors.shape)}"
        )
    chosen = pick_backend(backend, means.device)
    args = (means, quats, log_scales, opacity_logits, colors, viewmats, Ks, width, height,
            sh_degree, near_plane, far_plane, eps2d, antialiased, backgrounds)  # fmt: skip
    if chosen == "gsplat":
        return _rasterize_gsplat(*args)
    if batched:
        return _rasterize_torch(*args)
    # The reference works on a batch: add B = 1 and take it off again.
    one = [a[None] for a in args[:7]]
    out = _rasterize_torch(
        *one, *args[7:14], None if backgrounds is None else backgrounds[None], unbatched=True
    )
    return Render(color=out.color[0], alpha=out.alpha[0], depth=out.depth[0], means2d=out.means2d,
                  radii=out.radii[0], backend="torch")  # fmt: skip


def _rasterize_gsplat(means, quats, log_scales, opacity_logits, colors, viewmats, Ks, width, height,  # type: ignore[no-untyped-def]
                      sh_degree, near_plane, far_plane, eps2d, antialiased, backgrounds) -> Render:  # fmt: skip
    from gsplat import rasterization

    out, alpha, meta = rasterization(
        means, quats, torch.exp(log_scales), torch.sigmoid(opacity_logits), colors, viewmats, Ks,
        width, height, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=backgrounds, render_mode="RGB+ED",
        rasterize_mode="antialiased" if antialiased else "classic",
    )  # fmt: skip
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    return Render(color=out[..., :-1], alpha=alpha, depth=out[..., -1:], means2d=means2d,
                  radii=meta["radii"], backend="gsplat")  # fmt: skip


# --------------------------------------------------------------------------------------
# Pure-torch reference
# --------------------------------------------------------------------------------------


def _project(means, quats, log_scales, viewmats, Ks, width, height, eps2d):  # type: ignore[no-untyped-def]
    """Project B sets of N Gaussians into B x C cameras.

    means [B,N,3], quats [B,N,4], log_scales [B,N,3], viewmats [B,C,4,4], Ks [B,C,3,3] ->
    camera depth [B,C,N], 2D means [B,C,N,2], 2D covariance plus eps2d [B,C,N,2,2], its
    determinant [B,C,N] and the antialiasing compensation [B,C,N]."""
    rw, tw = viewmats[..., :3, :3], viewmats[..., :3, 3]  # [B,C,3,3], [B,C,3]
    mc = torch.einsum("bcij,bnj->bcni", rw, means) + tw[:, :, None]  # [B,C,N,3]
    m = quat_to_rotmat(quats) * torch.exp(log_scales)[..., None, :]  # [B,N,3,3]
    cov = m @ m.transpose(-1, -2)
    cov_c = torch.einsum("bcij,bnjk,bclk->bcnil", rw, cov, rw)  # [B,C,N,3,3]
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [B,C,1]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    x, y, z = mc.unbind(-1)
    # Jacobian of the projection, evaluated with the centre clamped to 1.3x the field of view
    # (as 3DGS and gsplat do, so Gaussians far outside the image do not blow up).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.clamp(x / z, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.clamp(y / z, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1)
    jac = jac.reshape(z.shape + (2, 3))
    cov2 = jac @ cov_c @ jac.transpose(-1, -2)
    det0 = cov2[..., 0, 0] * cov2[..., 1, 1] - cov2[..., 0, 1] * cov2[..., 1, 0]
    cov2 = cov2 + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    det = cov2[..., 0, 0] * cov2[..., 1, 1] - cov2[..., 0, 1] * cov2[..., 1, 0]
    comp = torch.sqrt(torch.clamp(det0 / det.clamp_min(1e-10), min=0.0))
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    return z, means2d, cov2, det, comp


def _pairs(means2d: Tensor, radii: Tensor, ids: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every (Gaussian, pixel) pair inside each drawn Gaussian's pixel box (no grad).

    Returns gaussian ids [M] and the pixels' columns and rows [M]."""
    mx, my = means2d[ids, 0].detach(), means2d[ids, 1].detach()
    rx, ry = radii[ids, 0].to(mx.dtype), radii[ids, 1].to(mx.dtype)
    # Pixel centres i + 0.5 inside [m - r, m + r].
    x0 = torch.ceil(mx - rx - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(mx + rx - 0.5).clamp(0, width - 1).long()
    y0 = torch.ceil(my - ry - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(my + ry - 0.5).clamp(0, height - 1).long()
    nx = (x1 - x0 + 1).clamp_min(0)
    ny = (y1 - y0 + 1).clamp_min(0)
    counts = nx * ny
    g = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=ids.device) - start[g]
    px = x0[g] + local % nx[g]
    py = y0[g] + local // nx[g]
    return ids[g], px, py


def _rasterize_torch(means, quats, log_scales, opacity_logits, colors, viewmats, Ks, width, height,  # type: ignore[no-untyped-def]
                     sh_degree, near_plane, far_plane, eps2d, antialiased, backgrounds,
                     unbatched: bool = False) -> Render:  # fmt: skip
    """The reference on batched inputs (leading B on every tensor). With ``unbatched`` (B = 1)
    the returned ``means2d`` is [C,N,2], the tensor whose gradient densification reads."""
    num_b, num_c = viewmats.shape[:2]
    n = means.shape[1]
    z, means2d, cov2, det, comp = _project(means, quats, log_scales, viewmats, Ks, width, height, eps2d)
    means2d_out = means2d[0] if unbatched else means2d
    if means2d_out.requires_grad:
        means2d_out.retain_grad()
    means2d = means2d_out[None] if unbatched else means2d_out
    opac = torch.sigmoid(opacity_logits)[:, None]  # [B,1,N]
    opac = opac * comp if antialiased else opac.expand(num_b, num_c, n)
    conic = (
        torch.stack([cov2[..., 1, 1], -cov2[..., 0, 1], cov2[..., 0, 0]], -1)
        / det.clamp_min(1e-10)[..., None]
    )
    with torch.no_grad():
        valid = (z >= near_plane) & (z <= far_plane) & (det > 0) & (opac >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(
            max=3.33
        )
        diag = torch.stack([cov2[..., 0, 0], cov2[..., 1, 1]], -1).clamp_min(0)
        rad = torch.ceil(extend[..., None] * torch.sqrt(diag))
        valid &= (rad > 0).all(-1)
        valid &= (means2d[..., 0] + rad[..., 0] > 0) & (means2d[..., 0] - rad[..., 0] < width)
        valid &= (means2d[..., 1] + rad[..., 1] > 0) & (means2d[..., 1] - rad[..., 1] < height)
        radii = torch.where(valid[..., None], rad, torch.zeros_like(rad)).int()
    color_bc, alpha_bc, depth_bc = [], [], []
    for b in range(num_b):
        for c in range(num_c):
            if sh_degree is not None:
                campos = -viewmats[b, c, :3, :3].T @ viewmats[b, c, :3, 3]
                col = sh_to_color(sh_degree, means[b] - campos, colors[b])
            else:
                col = colors[b, c] if colors.dim() == 4 else colors[b]
            with torch.no_grad():
                pairs = _pairs(means2d[b, c], radii[b, c], torch.nonzero(valid[b, c]).squeeze(1), width, height)
            color, alpha, depth = _composite(means2d[b, c], conic[b, c], opac[b, c], col, z[b, c], *pairs,
                                             width, height, n)  # fmt: skip
            if backgrounds is not None:
                color = color + (1.0 - alpha) * backgrounds[b, c].to(color.dtype)
            color_bc.append(color)
            alpha_bc.append(alpha)
            depth_bc.append(depth)

    def _stack(xs: list[Tensor]) -> Tensor:
        return torch.stack(xs).reshape((num_b, num_c) + xs[0].shape)

    return Render(color=_stack(color_bc), alpha=_stack(alpha_bc), depth=_stack(depth_bc), means2d=means2d_out,
                  radii=radii, backend="torch")  # fmt: skip


def _pair_alpha(geo: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """Mahalanobis exponent and alpha of (Gaussian, pixel) pairs: ``geo`` [M, 6] the Gaussians'
    (mean x, mean y, conic a, b, c, opacity), ``px`` / ``py`` [M] the pixel centres."""
    mx, my, ca, cb, cc, op = geo.unbind(-1)
    dx, dy = mx - px, my - py
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    return sigma, torch.clamp_max(op * torch.exp(-sigma), ALPHA_MAX)


def _composite(means2d, conic, opac, col, z, gid, px, py, width, height, n):  # type: ignore[no-untyped-def]
    """Front-to-back alpha compositing of (Gaussian, pixel) pairs; returns [H,W,D], [H,W,1], [H,W,1].

    Each pair reads its Gaussian's attributes with one gather (geometry) and one more (colour and
    depth); the three images come out of one scatter-add."""
    dev, dt = means2d.device, means2d.dtype
    d_ch = col.shape[-1]
    npx = width * height
    geo = torch.cat([means2d, conic, opac[:, None]], -1)  # [N, 6]
    with torch.no_grad():
        pid = py * width + px
        px, py = px.to(dt) + 0.5, py.to(dt) + 0.5  # pixel centres
        sigma, alpha = _pair_alpha(geo.detach().index_select(0, gid), px, py)
        keep = torch.nonzero((sigma >= 0) & (alpha >= ALPHA_THRESHOLD)).squeeze(1)
        # Front to back: sort by pixel, then by depth (ties in Gaussian order).
        depth_rank = torch.empty(n, dtype=torch.long, device=dev)
        depth_rank[torch.sort(z.detach(), stable=True).indices] = torch.arange(n, device=dev)
        keep = keep[torch.argsort(pid[keep] * n + depth_rank[gid[keep]])]
        gid, pid, px, py = gid[keep], pid[keep], px[keep], py[keep]
    m = len(gid)
    if m == 0:  # nothing drawn: empty images (still part of the graph, with zero gradients)
        zero = 0.0 * (means2d.sum() + opac.sum() + col.sum())
        return (zero.expand(height, width, d_ch).clone(), zero.expand(height, width, 1).clone(),
                zero.expand(height, width, 1).clone())  # fmt: skip
    _, alpha = _pair_alpha(geo.index_select(0, gid), px, py)
    # Transmittance before each pair: exp of the exclusive per-pixel cumsum of log(1 - alpha),
    # in float64 so a long cumsum keeps its precision.
    logt = torch.log1p(-alpha.double())
    csum = torch.cumsum(logt, 0)
    with torch.no_grad():
        first = torch.ones(m, dtype=torch.bool, device=dev)
        first[1:] = pid[1:] != pid[:-1]
        seg_start = torch.cummax(torch.where(first, torch.arange(m, device=dev), 0), 0).values
    after = csum - (csum - logt)[seg_start]  # log transmittance after each pair
    with torch.no_grad():
        on = after > math.log(T_STOP)  # a pixel stops before the Gaussian that would take it to 1e-4
    w = (alpha.double() * torch.exp(after - logt) * on).to(dt)[:, None]  # [M, 1]
    values = torch.cat([col, z[:, None], torch.ones_like(z)[:, None]], -1).index_select(0, gid)  # [M, D+2]
    out = torch.zeros(npx, d_ch + 2, dtype=dt, device=dev).index_add(0, pid, w * values)
    color, wz, acc = out.split([d_ch, 1, 1], -1)
    dep = wz / acc.clamp_min(1e-10)
    return color.reshape(height, width, d_ch), acc.reshape(height, width, 1), dep.reshape(height, width, 1)
