"""Avatar fit on the CPU (torch rasteriser) on a small procedural scene: quality and speed.

    python benchmarks/avatars_cpu.py [--size 96x72] [--frames 12] [--threads 1] [--set FIELD=VALUE ...]
                                     [--out DIR]

Prints and writes DIR/avatars_gpu.json (same report as the GPU benchmark): held-out PSNR / SSIM
inside the people's masks before (surface-coloured initialisation) and after, iterations per
second, seconds per phase. The default settings are those of the CPU test, scaled up a little.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULTS = dict(iterations=200, gaussians_per_person=600, max_gaussians_per_person=1500, sh_degree=1,
                sh_degree_interval=100, resolution_scale=1.0, holdout_every=4, init_color_frames=6,
                lr_sh0=1e-2, lr_means=1e-3, densify_start=40, densify_stop=150, densify_every=30,
                pose_start=60, log_every=50, backend="torch", orbit_views=8)  # fmt: skip


def main() -> int:
    from benchmarks.avatars_gpu import fit
    from core.avatars import synthetic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="96x72")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--people", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest at these sizes)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("out/avatars_cpu"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    overrides = dict(DEFAULTS)
    for item in args.set:
        key, _, val = item.partition("=")
        overrides[key] = json.loads(val)
    scene = synthetic.make_scene(people=args.people, frames=args.frames, width=w, height=h)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"procedural {args.people} people x {args.frames} frames {w}x{h}"
    rep = fit(scene, name, args.out, "cpu", "preview", overrides)
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
