"""gsplat (CUDA) against the pure-torch reference on the same scenes: images and gradients.

Runs on a machine with CUDA and gsplat 1.5.3 (which compiles its kernels on first use);
skipped elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from core.avatars.raster import gsplat_available, rasterize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not gsplat_available(), reason="needs gsplat"),
]

W, H = 96, 72
DEVICE = "cuda"  # both backends run on the GPU (the reference too)


def _scene(n: int, seed: int, sh_degree: int | None, batch: int | None = None):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    bd = () if batch is None else (batch,)
    means = torch.randn(bd + (n, 3), generator=g) * torch.tensor([0.6, 0.45, 0.4]) + torch.tensor(
        [0.0, 0.0, 3.0]
    )
    quats = torch.randn(bd + (n, 4), generator=g)
    log_scales = torch.randn(bd + (n, 3), generator=g) * 0.4 - 3.2
    logits = torch.randn(bd + (n,), generator=g) * 1.5
    if sh_degree is None:
        colors = torch.rand(bd + (n, 3), generator=g)
    else:
        colors = torch.randn(bd + (n, (sh_degree + 1) ** 2, 3), generator=g) * 0.3
    num_c = 2
    vm = torch.eye(4)[None].repeat(num_c, 1, 1)
    ang = torch.tensor(0.3)
    vm[1, :3, :3] = torch.tensor(
        [[torch.cos(ang), 0, -torch.sin(ang)], [0, 1, 0], [torch.sin(ang), 0, torch.cos(ang)]]
    )
    vm[1, :3, 3] = torch.tensor([0.8, 0.1, 0.3])
    ks = torch.tensor([[90.0, 0, W / 2 - 3], [0, 92.0, H / 2 + 2], [0, 0, 1]])[None].repeat(num_c, 1, 1)
    bg = torch.rand(num_c, 3, generator=g)
    if batch is not None:
        vm, ks, bg = (
            vm[None].repeat(batch, 1, 1, 1),
            ks[None].repeat(batch, 1, 1, 1),
            bg[None].repeat(batch, 1, 1),
        )
    return [means, quats, log_scales, logits, colors], vm, ks, bg


def _run(params, vm, ks, bg, backend, sh_degree, antialiased, weights):  # type: ignore[no-untyped-def]
    dev = torch.device(DEVICE)
    leaves = [p.to(dev).clone().requires_grad_() for p in params]
    out = rasterize(*leaves, vm.to(dev), ks.to(dev), W, H, sh_degree=sh_degree, antialiased=antialiased,
                    backgrounds=bg.to(dev), near_plane=0.05, backend=backend)  # fmt: skip
    wc, wa, wd = (w.to(dev) for w in weights)
    loss = (out.color * wc).sum() + (out.alpha * wa).sum() + (out.depth * wd).sum()
    loss.backward()
    return out, [leaf.grad.detach().cpu() for leaf in leaves], out.means2d.grad.detach().cpu()


def _close_images(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    diff = (a.detach().cpu() - b.detach().cpu()).abs()
    # Pairs right at the 1/255 alpha or 1e-4 transmittance thresholds may fall on either side
    # in float32 vs float64: allow a few pixels to differ, none by much.
    assert diff.mean() < 5e-5, f"{name}: mean abs difference {diff.mean():.2e}"
    assert (diff > 1e-3).float().mean() < 1e-2, (
        f"{name}: {(diff > 1e-3).float().mean():.2%} pixels differ by > 1e-3"
    )
    assert diff.max() < 3e-2, f"{name}: max abs difference {diff.max():.2e}"


def _close_grads(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    a, b = a.flatten().double(), b.flatten().double()
    rel = (a - b).norm() / b.norm().clamp_min(1e-12)
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    assert rel < 2e-2 and cos > 0.999, f"gradient of {name}: relative error {rel:.2e}, cosine {cos:.6f}"


@pytest.mark.parametrize(
    ("sh_degree", "antialiased", "batch"),
    [(None, False, None), (3, False, None), (1, True, None), (None, True, 2)],
)
def test_gsplat_matches_the_torch_reference(
    sh_degree: int | None, antialiased: bool, batch: int | None
) -> None:
    params, vm, ks, bg = _scene(400, seed=3, sh_degree=sh_degree, batch=batch)
    shape = ((batch,) if batch else ()) + (2, H, W)
    g = torch.Generator().manual_seed(9)
    weights = (torch.randn(shape + (3,), generator=g), torch.randn(shape + (1,), generator=g),
               torch.randn(shape + (1,), generator=g) * 0.1)  # fmt: skip
    ref, ref_grads, ref_m2 = _run(params, vm, ks, bg, "torch", sh_degree, antialiased, weights)
    gs, gs_grads, gs_m2 = _run(params, vm, ks, bg, "gsplat", sh_degree, antialiased, weights)
    assert ref.backend == "torch" and gs.backend == "gsplat"
    assert ref.alpha.max() > 0.9  # the scene covers the images
    _close_images(gs.color, ref.color, "colour")
    _close_images(gs.alpha, ref.alpha, "alpha")
    seen = (ref.alpha > 0.5) & (gs.alpha > 0.5)
    _close_images(gs.depth[seen] / 3.0, ref.depth[seen] / 3.0, "depth / 3")
    assert torch.equal(gs.radii.cpu() > 0, ref.radii.cpu() > 0)
    for name, a, b in zip(("means", "quats", "log_scales", "opacity_logits", "colors"), gs_grads, ref_grads):
        _close_grads(a, b, name)
    _close_grads(gs_m2, ref_m2, "means2d")
