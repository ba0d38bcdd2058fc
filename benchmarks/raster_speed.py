"""Rasteriser speed: forward + backward milliseconds of each backend on random scenes.

    python benchmarks/raster_speed.py [--device cpu|cuda] [--out FILE.json]

On the CPU only the torch reference runs (small sizes); on CUDA both gsplat and the torch
reference (the reference only where it fits), so the ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.avatars.raster import gsplat_available, rasterize


def _scene(n: int, width: int, height: int, device: str):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.5, 0.3]) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    # Splat sizes like an avatar's: the volume covered about once (1 cm at 20k Gaussians).
    scales = torch.randn(n, 3, generator=g) * 0.3 + float(torch.log(torch.tensor(1.5 / n**0.5)))
    logits = torch.randn(n, generator=g)
    colors = torch.rand(n, 5, generator=g)
    f = 0.9 * width
    ks = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])[None]
    leaves = [t.to(device).requires_grad_() for t in (means, quats, scales, logits, colors)]
    return leaves, torch.eye(4)[None].to(device), ks.to(device)


def time_backend(backend: str, n: int, width: int, height: int, device: str, repeats: int) -> float:
    leaves, vm, ks = _scene(n, width, height, device)

    def once() -> None:
        out = rasterize(*leaves, vm, ks, width, height, backend=backend)
        (out.color.sum() + out.depth.sum()).backward()

    once()  # warm-up (and gsplat's first-use compile)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats * 1000


def run(device: str = "cpu", sizes=((320, 180),), counts=(2000, 10000), repeats: int = 5) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    backends = ["torch"] + (["gsplat"] if device.startswith("cuda") and gsplat_available() else [])
    for width, height in sizes:
        for n in counts:
            row: dict = {"width": width, "height": height, "gaussians": n, "device": device}
            for b in backends:
                if b == "torch" and device.startswith("cuda") and n * width * height > 2e10:
                    continue
                try:
                    row[f"{b}_ms"] = round(
                        time_backend(b, n, width, height, device, repeats if b == "gsplat" else 3), 2
                    )
                except torch.OutOfMemoryError:
                    row[f"{b}_ms"] = "out of memory"
            if isinstance(row.get("torch_ms"), float) and isinstance(row.get("gsplat_ms"), float):
                row["speedup"] = round(row["torch_ms"] / row["gsplat_ms"], 1)
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        rows = run("cpu", sizes=[(160, 120), (320, 180)], counts=[1000, 5000], repeats=3)
    else:
        rows = run(args.device, sizes=[(640, 360), (1280, 720)], counts=[20000, 100000], repeats=20)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
