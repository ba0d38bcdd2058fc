"""Where an avatar training step goes: milliseconds, tensor operations and host syncs per step.

    python benchmarks/avatars_profile.py [--scene SCENE] [--device cuda|cpu] [--quality standard]
                                         [--start 1000] [--steps 100] [--set FIELD=VALUE ...] [--out DIR]

Runs ``core.avatars.fit.Trainer`` steps ``start .. start + steps`` (with the preset's schedule:
past ``pose_start`` poses are refined, one densification round per ``densify_every`` steps is
included) on a `core synth` scene (default: a small procedural one) and writes DIR/profile.json
and DIR/profile.txt:

- ``ms_per_step``: wall time per step (device synchronised at the ends only);
- ``ops_per_step``: ATen operations dispatched per step (forward, backward, optimiser), split into
  those that launch work (``kernel_ops``) and metadata-only views (``view_ops``);
  ``raster_excluded`` repeats the count with the rasteriser replaced by a stand-in, so what the
  avatar code itself adds is counted alike on the CPU (torch reference) and on CUDA (gsplat);
- ``host_syncs_per_step`` (CUDA): operations that made the host wait for the GPU, counted by
  ``torch.cuda.set_sync_debug_mode`` (gsplat's tile intersection needs one per render);
- profile.txt: the ``torch.profiler`` tables (by CPU time, and by CUDA time on a GPU).

``benchmarks/avatars_gpu.py --steps profile`` runs the same on the GPU machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEW_OPS = ("view", "_unsafe_view", "expand", "unsqueeze", "squeeze", "slice", "select", "detach", "transpose",
            "permute", "alias", "split", "split_with_sizes", "unbind", "t", "as_strided", "unflatten", "lift_fresh")  # fmt: skip


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _stand_in_rasterize(means, quats, log_scales, opacity_logits, colors, viewmats, Ks, width, height, **_):  # type: ignore[no-untyped-def]
    """Outputs shaped like ``rasterize``'s, depending on every input, at a fixed handful of ops."""
    from core.avatars.raster import Render

    lead = viewmats.shape[:-2]
    n = means.shape[-2]
    s = (means.sum() + quats.sum() + log_scales.sum() + opacity_logits.sum() + colors.sum()) * 0.0
    color = s.expand(lead + (height, width, colors.shape[-1]))
    alpha = s.expand(lead + (height, width, 1))
    m2 = means[..., None, :, :2] if means.dim() == 3 else means[None, :, :2]
    if m2.requires_grad:
        m2.retain_grad()
    radii = torch.ones(lead + (n, 2), dtype=torch.int32, device=means.device)
    return Render(color=color, alpha=alpha, depth=alpha, means2d=m2, radii=radii, backend="stand-in")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count(trainer, steps: range) -> dict:  # type: ignore[no-untyped-def]
    with _CountOps() as mode:
        for i in steps:
            trainer.step(i)
    n = len(steps)
    views = sum(v for k, v in mode.counts.items() if k in VIEW_OPS)
    total = sum(mode.counts.values())
    top = {k: round(v / n, 1) for k, v in mode.counts.most_common(25)}
    return {"ops_per_step": round(total / n, 1), "kernel_ops": round((total - views) / n, 1),
            "view_ops": round(views / n, 1), "top_ops": top}  # fmt: skip


def profile(scene, name: str, out: Path, device: str, quality: str, overrides: dict, start: int = 1000,
            steps: int = 100) -> dict:  # type: ignore[no-untyped-def]  # fmt: skip
    from core.avatars import fit as fit_module
    from core.avatars.config import AvatarConfig

    cfg = AvatarConfig.preset(quality).replace(**overrides)
    start = min(start, max(0, cfg.iterations - steps - 20))
    dev = torch.device(device)
    trainer = fit_module.prepare(scene.frames, scene.labels, scene.motion, cfg, dev)
    warm = range(start, start + 10)
    timed = range(start + 10, min(cfg.iterations, start + 10 + steps))
    for i in warm:  # allocator, kernels (gsplat's compile happened before), the joint table
        trainer.step(i)
    _sync(dev)
    t0 = time.perf_counter()
    for i in timed:
        trainer.step(i)
    _sync(dev)
    ms = (time.perf_counter() - t0) / len(timed) * 1e3
    # Counts over steps without a densification round (that one is every densify_every steps).
    plain = range(timed.start, timed.start + 10)
    if any((i + 1) % cfg.densify_every == 0 for i in plain):
        plain = range(timed.start + 11, timed.start + 21)
    rep = {"scene": name, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "quality": quality, "overrides": overrides, "backend": trainer.backend,
           "steps_timed": [timed.start, timed.stop], "gaussians": trainer.avatars.count,
           "ms_per_step": round(ms, 2), "frame_pixels": trainer.data.width * trainer.data.height}  # fmt: skip
    crops = [w * h for _, w, h in trainer.crops[timed.start : timed.stop]]
    rep["crop_pixels_mean"] = round(sum(crops) / len(crops))
    rep.update(_count(trainer, plain))
    if dev.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in plain:
                trainer.step(i)
        torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
        rep["host_syncs_per_step"] = round(len(syncs) / len(plain), 2)
        rep["host_sync_kinds"] = dict(collections.Counter(s.split("\n")[0][:120] for s in syncs))
    real = fit_module.rasterize
    fit_module.rasterize = _stand_in_rasterize
    try:
        rep["raster_excluded"] = {k: v for k, v in _count(trainer, plain).items() if k != "top_ops"}
    finally:
        fit_module.rasterize = real
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        for i in plain:
            trainer.step(i)
        _sync(dev)
    tables = [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)]
    if dev.type == "cuda":
        tables.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40))
    (out / "profile.txt").write_text(f"{len(plain)} steps from {plain.start}\n\n" + "\n\n".join(tables))
    (out / "profile.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def main() -> int:
    from benchmarks.avatars_gpu import load_scene, parse_overrides

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=Path, help="a `python -m core synth` folder (default: a small procedural scene)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quality", default="standard", choices=("preview", "standard", "high"))
    p.add_argument("--start", type=int, default=1000, help="first step profiled (after 10 warm-up steps)")
    p.add_argument("--steps", type=int, default=100, help="steps timed")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("out/avatars_profile"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scene, name = load_scene(args.scene)
    rep = profile(scene, name, args.out, args.device, args.quality, parse_overrides(args.set), args.start, args.steps)
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
