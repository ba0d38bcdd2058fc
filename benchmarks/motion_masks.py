"""Time the silhouette term's coverage half (every mask sample's distance to the nearest projected
body point) as the world stage evaluates it, forward and backward, the old way against the new.

    .venv/core/bin/python benchmarks/motion_masks.py [--people 2] [--frames 90 300] [--devices cpu cuda]

old: ``torch.cdist(samples, points).min(-1)``, differentiated over all sample-point pairs;
new: ``core.motion.fit.nearest_distance``, the nearest point found without gradients and only
those distances differentiated. Sizes are the fit's: 64 mask samples (``fit.MASK_SAMPLES``) and
384 surface points per person and frame, pixel coordinates of a 640x360 frame. Prints the
milliseconds of each, their ratio (measured in the same run) and the largest difference of the
values and gradients.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.motion.fit import MASK_SAMPLES, nearest_distance  # noqa: E402

SURFACE = 384  # body.SparseBody's surface samples


def old(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.cdist(points, targets).min(-1).values


def timed(fn, points: torch.Tensor, targets: torch.Tensor, device: str, reps: int) -> tuple[float, torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    def once() -> tuple[torch.Tensor, torch.Tensor]:
        t = targets.clone().requires_grad_(True)
        d = fn(points, t)
        d.sum().backward()
        return d.detach(), t.grad

    once()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        d, g = once()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1000.0, d, g


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=2)
    p.add_argument("--frames", type=int, nargs="+", default=[90, 300])
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| device | people x frames | old ms | new ms | old / new | max value diff px | max gradient diff |")
    print("|---|---|---|---|---|---|---|")
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"| {device} | (no CUDA here) |")
            continue
        for frames in args.frames:
            g = torch.Generator().manual_seed(0)
            rows = args.people * frames
            scale = torch.tensor([640.0, 360.0])
            points = (torch.rand(rows, MASK_SAMPLES, 2, generator=g) * scale).to(device)
            targets = (torch.rand(rows, SURFACE, 2, generator=g) * scale).to(device)
            t_old, d_old, g_old = timed(old, points, targets, device, args.reps)
            t_new, d_new, g_new = timed(nearest_distance, points, targets, device, args.reps)
            dv = float((d_old - d_new).abs().max())
            dg = float((g_old - g_new).abs().max())
            print(f"| {device} | {args.people} x {frames} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.1f} | {dv:.3f} | {dg:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
