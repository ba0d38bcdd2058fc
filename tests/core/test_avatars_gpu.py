"""The avatar training step on CUDA (gsplat) against the same step on the CPU (torch reference),
and that a step does not make the host wait for the GPU. Skipped without CUDA and gsplat."""

from __future__ import annotations

import warnings

import pytest
import torch

from core.avatars import fit as F
from core.avatars.config import AvatarConfig
from core.avatars.raster import gsplat_available
from core.avatars.synthetic import make_scene

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not gsplat_available(), reason="needs gsplat"),
]

SMALL = dict(iterations=60, gaussians_per_person=400, max_gaussians_per_person=800, sh_degree=1,
             sh_degree_interval=20, resolution_scale=1.0, holdout_every=4, init_color_frames=4, lr_sh0=1e-2,
             lr_means=1e-3, densify_start=20, densify_stop=50, densify_every=20, refine_poses=True, pose_start=10,
             log_every=10)  # fmt: skip


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    return make_scene(people=2, frames=8, width=96, height=72, seed=0)


def test_cuda_step_matches_the_cpu_reference(scene) -> None:  # type: ignore[no-untyped-def]
    cfg = AvatarConfig.preset("standard").replace(**SMALL)
    cpu = F.prepare(scene.frames, scene.labels, scene.motion, cfg.replace(backend="torch"), "cpu")
    gpu = F.prepare(scene.frames, scene.labels, scene.motion, cfg.replace(backend="gsplat"), "cuda")
    assert (cpu.frames == gpu.frames).all() and cpu.crops == gpu.crops  # the same plan on both devices
    skin = F.TERMS.index("skin")  # its random subset comes from each device's own generator
    for i in range(cfg.iterations):
        a, b = cpu.step(i).cpu(), gpu.step(i).cpu()
        a[[skin, -1]] = b[[skin, -1]] = 0  # (the total includes it)
        if i == 0:  # same Gaussians, same frame: the same losses
            assert torch.allclose(a, b, rtol=2e-3, atol=1e-5), (a, b)
    assert gpu.backend == "gsplat" and cpu.avatars.counts() == pytest.approx(gpu.avatars.counts(), rel=0.1)
    deg = min(cfg.sh_degree, (cfg.iterations - 1) // cfg.sh_degree_interval)
    ev_cpu = F.evaluate(cpu.avatars, cpu.data, cpu.held, deg)
    ev_gpu = F.evaluate(gpu.avatars, gpu.data, gpu.held, deg)
    assert ev_gpu["psnr"] == pytest.approx(ev_cpu["psnr"], abs=0.5), (ev_cpu, ev_gpu)


def test_training_steps_do_not_wait_for_the_gpu(scene) -> None:  # type: ignore[no-untyped-def]
    cfg = AvatarConfig.preset("standard").replace(**SMALL, backend="gsplat")
    trainer = F.prepare(scene.frames, scene.labels, scene.motion, cfg, "cuda")
    for i in range(12):  # past pose_start: poses refined, FK per step
        trainer.step(i)
    torch.cuda.synchronize()
    steps = range(12, 19)  # no densification round among them
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in steps:
                trainer.step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    # gsplat sizes its tile intersections on the host (one wait per render); nothing else may wait.
    assert len(syncs) <= len(steps), syncs
