"""The avatars stage on an existing job folder (after its motion stage): seconds per phase.

    python benchmarks/avatars_stage.py JOB [--quality preview] [--set FIELD=VALUE ...]
                                       [--device cpu] [--out DIR]

Reads JOB's ingest/, people/ and motion/ as the stage does, fits the avatars and writes them into
DIR (default out/avatars_stage; the job folder is left alone). Prints one JSON line: wall and
process CPU seconds for loading, the fit's phases (prepare, evaluate_init, train, evaluate) and
the outputs, iterations/s and held-out PSNR/SSIM inside the masks. CPU seconds are the better
figure on a machine shared with other jobs. Example (the demo's job, ``scripts/demo.sh``)::

    python benchmarks/avatars_stage.py out/demo/job --quality preview
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from benchmarks.avatars_gpu import parse_overrides
    from core import bundle
    from core.avatars.config import AvatarConfig
    from core.avatars.fit import fit_avatars
    from core.avatars.outputs import write_outputs
    from core.avatars.stage import load_inputs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path)
    p.add_argument("--quality", default="preview", choices=("preview", "standard", "high"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("out/avatars_stage"))
    args = p.parse_args()
    cfg = AvatarConfig.preset(args.quality).replace(**parse_overrides(args.set))
    clocks = [(time.perf_counter(), time.process_time())]
    motion = bundle.read_bundle(args.job / "motion")
    frames, labels = load_inputs(args.job, motion)
    clocks.append((time.perf_counter(), time.process_time()))
    result = fit_avatars(frames, labels, motion, cfg, device=args.device)
    clocks.append((time.perf_counter(), time.process_time()))
    write_outputs(result, args.out)
    clocks.append((time.perf_counter(), time.process_time()))
    m = result.metrics
    wall = [b[0] - a[0] for a, b in zip(clocks, clocks[1:])]
    cpu = [b[1] - a[1] for a, b in zip(clocks, clocks[1:])]
    rep = {
        "job": str(args.job), "quality": args.quality, "overrides": parse_overrides(args.set),
        "threads": cfg.cpu_threads or torch.get_num_threads(), "device": args.device, "resolution": m["resolution"],
        "wall_seconds": {"load": round(wall[0], 2), **{k: round(v, 2) for k, v in m["seconds"].items()},
                         "outputs": round(wall[2], 2), "total": round(sum(wall), 2)},
        "cpu_seconds": {"load": round(cpu[0], 2), "fit": round(cpu[1], 2), "outputs": round(cpu[2], 2),
                        "total": round(sum(cpu), 2)},
        "iterations": m["iterations"], "iterations_per_second": round(m["iterations_per_second"], 2),
        "heldout_before": m["init"], "heldout_after": m["heldout"], "gaussians": m["gaussians"],
    }  # fmt: skip
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
