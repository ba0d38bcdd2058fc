"""The pure-torch reference rasteriser: analytic footprints, compositing, culling, SH, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from core.avatars.raster import ALPHA_THRESHOLD, rasterize, rgb_to_sh0, sh_basis

F = 100.0
W, H = 40, 30


def _cam(num: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.tensor([[F, 0.0, W / 2], [0.0, F, H / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None].repeat(num, 1, 1), k[None].repeat(num, 1, 1)


def _one(z: float, scale: float, opacity: float, color=(1.0, 0.0, 0.0), xy=(0.0, 0.0)):  # type: ignore[no-untyped-def]
    means = torch.tensor([[xy[0], xy[1], z]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    log_scales = torch.full((1, 3), math.log(scale))
    logit = torch.logit(torch.tensor([opacity]))
    return means, quats, log_scales, logit, torch.tensor([color])


def test_single_gaussian_footprint_matches_the_analytic_2d_gaussian() -> None:
    z, s, o = 4.0, 0.05, 0.8
    vm, ks = _cam()
    bg = torch.tensor([[0.0, 0.0, 1.0]])
    out = rasterize(*_one(z, s, o), vm, ks, W, H, backgrounds=bg, backend="torch")
    var = (F * s / z) ** 2 + 0.3  # projected variance in px^2 plus the 0.3 px^2 dilation
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    d2 = (xs - W / 2) ** 2 + (ys - H / 2) ** 2
    expect = o * torch.exp(-0.5 * d2 / var)
    expect = torch.where(expect >= ALPHA_THRESHOLD, expect, torch.zeros_like(expect))
    alpha = out.alpha[0, ..., 0]
    assert torch.allclose(alpha, expect, atol=1e-5)
    assert torch.allclose(out.color[0, ..., 0], expect, atol=1e-5)  # red channel = alpha
    assert torch.allclose(out.color[0, ..., 2], 1.0 - expect, atol=1e-5)  # blue background shows through
    seen = alpha > 0
    assert torch.allclose(out.depth[0, ..., 0][seen], torch.full_like(alpha[seen], z), atol=1e-4)
    assert torch.all(out.depth[0, ..., 0][~seen] == 0)
    # Radius: the opacity-aware 3-sigma box, in whole pixels.
    ext = min(3.33, math.sqrt(2 * math.log(o / ALPHA_THRESHOLD)))
    assert int(out.radii[0, 0, 0]) == math.ceil(ext * math.sqrt(var))


def test_antialiasing_scales_opacity_by_the_dilation_compensation() -> None:
    z, s, o = 4.0, 0.01, 0.9  # a sub-pixel Gaussian: the dilation dominates
    vm, ks = _cam()
    plain = rasterize(*_one(z, s, o), vm, ks, W, H, backend="torch")
    aa = rasterize(*_one(z, s, o), vm, ks, W, H, antialiased=True, backend="torch")
    var0 = (F * s / z) ** 2
    comp = math.sqrt(var0**2 / (var0 + 0.3) ** 2)
    centre = (H // 2, W // 2)  # pixel centre at (W/2 + .5, H/2 + .5): half a pixel from the mean
    ratio = float(aa.alpha[0, centre[0], centre[1], 0] / plain.alpha[0, centre[0], centre[1], 0])
    assert ratio == pytest.approx(comp, rel=1e-4)


def test_compositing_is_front_to_back_whatever_the_input_order() -> None:
    vm, ks = _cam()
    front = _one(2.0, 0.2, 0.5, color=(1.0, 0.0, 0.0))
    back = _one(4.0, 0.4, 0.99, color=(0.0, 0.0, 1.0))
    both = [torch.cat([a, b]) for a, b in zip(front, back)]
    swapped = [torch.cat([b, a]) for a, b in zip(front, back)]
    r1 = rasterize(*both, vm, ks, W, H, backend="torch")
    r2 = rasterize(*swapped, vm, ks, W, H, backend="torch")
    assert torch.allclose(r1.color, r2.color, atol=1e-6)
    c = r1.color[0, H // 2, W // 2]
    # centre pixel: both Gaussians nearly at their peaks, the red one in front
    # (the pixel centre is half a pixel off both means in x and y: squared distance 0.5 px^2)
    a_front = 0.5 * math.exp(-0.5 * 0.5 / ((F * 0.2 / 2) ** 2 + 0.3))
    a_back = 0.99 * math.exp(-0.5 * 0.5 / ((F * 0.4 / 4) ** 2 + 0.3))
    assert float(c[0]) == pytest.approx(a_front, rel=1e-5)
    assert float(c[2]) == pytest.approx((1 - a_front) * a_back, rel=1e-5)
    assert float(r1.alpha[0, H // 2, W // 2, 0]) == pytest.approx(a_front + (1 - a_front) * a_back, rel=1e-5)
    # expected depth: the compositing weights' mean of the two depths
    w_front, w_back = a_front, (1 - a_front) * a_back
    d = (w_front * 2.0 + w_back * 4.0) / (w_front + w_back)
    assert float(r1.depth[0, H // 2, W // 2, 0]) == pytest.approx(d, rel=1e-5)


def test_compositing_stops_at_transmittance_1e4() -> None:
    vm, ks = _cam()
    layers = [_one(1.0 + i, 0.5 * (1 + i), 0.999) for i in range(3)]
    out = rasterize(*[torch.cat(p) for p in zip(*layers)], vm, ks, W, H, backend="torch")
    # after one 0.999 layer T = 1e-3; the second would take it to 1e-6 < 1e-4: stop before it
    first = 0.999 * math.exp(-0.25 / ((F * 0.5) ** 2 + 0.3))  # half a pixel off in x and y
    assert float(out.alpha[0, H // 2, W // 2, 0]) == pytest.approx(first, rel=1e-6)
    assert float(out.depth[0, H // 2, W // 2, 0]) == pytest.approx(1.0, abs=1e-4)


def test_near_and_far_planes_cull() -> None:
    vm, ks = _cam()
    g = _one(0.5, 0.05, 0.9)
    assert rasterize(*g, vm, ks, W, H, backend="torch").alpha.max() > 0.5
    assert rasterize(*g, vm, ks, W, H, near_plane=1.0, backend="torch").alpha.max() == 0
    assert rasterize(*g, vm, ks, W, H, far_plane=0.4, backend="torch").alpha.max() == 0
    behind = _one(-2.0, 0.05, 0.9)
    assert rasterize(*behind, vm, ks, W, H, backend="torch").alpha.max() == 0


def test_world_to_camera_and_intrinsics_place_the_gaussian() -> None:
    """A camera moved +1 along world x sees a Gaussian at world x = 1 at the principal point."""
    vm, ks = _cam()
    vm[0, 0, 3] = -1.0  # world_to_cam translation: camera centre at x = +1
    out = rasterize(*_one(4.0, 0.03, 0.9, xy=(1.0, 0.25)), vm, ks, W, H, backend="torch")
    # y = +0.25 m is 0.25 * F / 4 = 6.25 px *down* the image (OpenCV y down)
    assert torch.allclose(out.means2d[0, 0], torch.tensor([W / 2, H / 2 + 6.25]), atol=1e-4)
    peak = torch.nonzero(out.alpha[0, ..., 0] == out.alpha.max())[0]
    assert tuple(peak.tolist()) in {(H // 2 + 6, W // 2 - 1), (H // 2 + 6, W // 2)}  # centres 21.5, 19.5|20.5


def test_sh_basis_is_orthonormal_up_to_degree_3() -> None:
    # Fibonacci sphere quadrature of the 16 basis functions' Gram matrix.
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    dirs = torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1
    )
    b = sh_basis(3, dirs)
    gram = b.T @ b * (4 * math.pi / n)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)
    # the 3DGS sign convention of degree 1: -C1*y, C1*z, -C1*x
    e = sh_basis(1, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))
    assert e[0, 3] < 0 and e[1, 1] < 0 and e[2, 2] > 0


def test_sh_colour_is_view_dependent_and_degree_0_is_flat() -> None:
    vm, ks = _cam(2)
    vm[1, :3, :3] = torch.tensor([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]])  # second camera looks the other way
    vm[1, 2, 3] = 8.0  # from z = 8 back at the Gaussian at z = 4
    means, quats, ls, op, _ = _one(4.0, 0.1, 0.9)
    sh = torch.zeros(1, 16, 3)
    sh[0, 0] = rgb_to_sh0(torch.tensor([0.2, 0.4, 0.6]))
    flat = rasterize(means, quats, ls, op, sh, vm, ks, W, H, sh_degree=3, backend="torch")
    peak = flat.color[:, H // 2, W // 2] / flat.alpha[:, H // 2, W // 2]
    assert torch.allclose(peak, torch.tensor([[0.2, 0.4, 0.6]] * 2), atol=1e-5)
    sh[0, 2, 0] = 0.3  # z-dependent red (basis +C1*z): the two cameras see it from opposite sides
    view = rasterize(means, quats, ls, op, sh, vm, ks, W, H, sh_degree=1, backend="torch")
    red = view.color[:, H // 2, W // 2, 0] / view.alpha[:, H // 2, W // 2, 0]
    assert float(red[0]) == pytest.approx(0.2 + 0.3 * 0.4886025, abs=1e-4)
    assert float(red[1]) == pytest.approx(0.2 - 0.3 * 0.4886025, abs=1e-4)


def test_batched_call_equals_one_call_per_batch() -> None:
    g = torch.Generator().manual_seed(1)
    b, n = 2, 30
    means = torch.randn(b, n, 3, generator=g) * 0.3 + torch.tensor([0, 0, 3.0])
    quats = torch.randn(b, n, 4, generator=g)
    ls = torch.randn(b, n, 3, generator=g) * 0.3 - 3
    op = torch.randn(b, n, generator=g)
    col = torch.rand(b, n, 3, generator=g)
    vm, ks = _cam(2)
    vm, ks = vm[None].repeat(b, 1, 1, 1), ks[None].repeat(b, 1, 1, 1)
    vm[:, 1, 0, 3] = 0.2
    bg = torch.rand(b, 2, 3, generator=g)
    out = rasterize(means, quats, ls, op, col, vm, ks, W, H, backgrounds=bg, backend="torch")
    assert out.color.shape == (b, 2, H, W, 3) and out.means2d.shape == (b, 2, n, 2)
    for i in range(b):
        one = rasterize(
            means[i], quats[i], ls[i], op[i], col[i], vm[i], ks[i], W, H, backgrounds=bg[i], backend="torch"
        )
        assert torch.allclose(out.color[i], one.color, atol=1e-6)
        assert torch.allclose(out.depth[i], one.depth, atol=1e-5)


def test_gradients_match_finite_differences_on_a_tiny_scene() -> None:
    g = torch.Generator().manual_seed(0)
    n = 4
    d = torch.float64
    means = (
        torch.randn(n, 3, generator=g, dtype=d) * 0.15 + torch.tensor([0, 0, 2.0], dtype=d)
    ).requires_grad_()
    quats = torch.randn(n, 4, generator=g, dtype=d).requires_grad_()
    ls = (torch.randn(n, 3, generator=g, dtype=d) * 0.2 - 2.6).requires_grad_()
    op = torch.randn(n, generator=g, dtype=d).requires_grad_()
    col = torch.rand(n, 3, generator=g, dtype=d).requires_grad_()
    vm, ks = _cam(1, d)
    ks[0, 0, 0] = ks[0, 1, 1] = 20.0
    ks[0, 0, 2], ks[0, 1, 2] = 6.0, 5.0
    bg = torch.tensor([[0.3, 0.2, 0.1]], dtype=d)

    def f(m, q, s, o, c):  # type: ignore[no-untyped-def]
        r = rasterize(m, q, s, o, c, vm, ks, 12, 10, backgrounds=bg, antialiased=True, backend="torch")
        return r.color, r.alpha, r.depth

    assert torch.autograd.gradcheck(f, (means, quats, ls, op, col), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_means2d_gradient_is_kept_for_densification() -> None:
    vm, ks = _cam()
    means, quats, ls, op, col = _one(4.0, 0.1, 0.9, xy=(0.05, 0.0))
    means.requires_grad_()
    out = rasterize(means, quats, ls, op, col, vm, ks, W, H, backend="torch")
    out.color[..., 0].sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad.shape == (1, 1, 2)


def test_bad_shapes_say_what_was_expected() -> None:
    vm, ks = _cam()
    means, quats, ls, op, col = _one(4.0, 0.1, 0.9)
    with pytest.raises(ValueError, match=r"quats must have shape \(1, 4\)"):
        rasterize(means, quats[:, :3], ls, op, col, vm, ks, W, H)
    with pytest.raises(ValueError, match="viewmats"):
        rasterize(means, quats, ls, op, col, vm[0], ks, W, H)
    with pytest.raises(ValueError, match="sh_degree=2"):
        rasterize(means, quats, ls, op, torch.zeros(1, 4, 3), vm, ks, W, H, sh_degree=2)
    with pytest.raises(ValueError, match="needs CUDA"):
        rasterize(means, quats, ls, op, col, vm, ks, W, H, backend="gsplat")
