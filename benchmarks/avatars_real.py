"""Avatars on the real clips (GPU): held-out PSNR/SSIM inside the masks and novel-view contact sheets.

    python benchmarks/avatars_real.py --out $OUT [--clips sports2d_demo,phalp_vid] [--quality standard]
                                      [--body-model PATH] [-- extra worker options]

For each clip of ``../shared/data/videos`` it runs the whole pipeline (``python -m core run``,
resumable job folders in OUT/jobs/<clip>), then collects ``avatars/metrics.json`` and the orbit
contact sheets into OUT/real/: ``summary.json``, ``summary.md`` (a table ready for
docs/avatars.md) and ``<clip>_orbit_<person>.png`` / ``<clip>_heldout_<frame>.png``.
The clips are research-only data: the sheets go into the docs, never the clips themselves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clips", default="", help="comma list of clip names (default: every video there)")
    p.add_argument("--quality", default="standard")
    p.add_argument("--device", default="cuda")
    p.add_argument("--body-model", default=None)
    p.add_argument("--frame-end", type=int, default=None, help="limit the frames per clip")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    clips = sorted(VIDEOS.glob("*.mp4"))
    if args.clips:
        want = set(args.clips.split(","))
        clips = [c for c in clips if c.stem in want]
    if not clips:
        print(f"no clips found in {VIDEOS}", file=sys.stderr)
        return 1
    real = args.out / "real"
    real.mkdir(parents=True, exist_ok=True)
    summary = {}
    for clip in clips:
        job = args.out / "jobs" / clip.stem
        cmd = [sys.executable, "-m", "core", "run", str(clip), "--out", str(job), "--quality", args.quality,
               "--device", args.device, "--progress", "text", *extra]  # fmt: skip
        if args.body_model:
            cmd += ["--body-model", args.body_model]
        if args.frame_end:
            cmd += ["--frame-end", str(args.frame_end)]
        print("==", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        entry: dict = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1)}
        metrics_path = job / "avatars" / "metrics.json"
        if metrics_path.is_file():
            m = json.loads(metrics_path.read_text())
            entry.update({k: m.get(k) for k in ("init", "heldout", "train_frames_metrics", "gaussians",
                                                "iterations_per_second", "train_seconds", "resolution")})  # fmt: skip
            done = (
                json.loads((job / "avatars" / ".done.json").read_text())
                if (job / "avatars" / ".done.json").is_file()
                else {}
            )
            entry["stage_seconds"] = done.get("seconds")
            for sheet in sorted((job / "avatars" / "renders").glob("orbit_*.png")):
                shutil.copy(sheet, real / f"{clip.stem}_{sheet.name}")
            for img in sorted((job / "avatars" / "renders" / "heldout").glob("*.png"))[:2]:
                shutil.copy(img, real / f"{clip.stem}_heldout_{img.name}")
        summary[clip.stem] = entry
        (real / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| clip | people | held-out PSNR in masks (init -> fitted) | SSIM (init -> fitted) | stage s |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, e in summary.items():
        init, held = e.get("init") or {}, e.get("heldout") or {}
        if not held:
            lines.append(f"| {name} | - | failed (exit {e['returncode']}) | | |")
            continue
        lines.append(f"| {name} | {len(e.get('gaussians') or {})} | {init.get('psnr', float('nan')):.2f} -> "
                     f"{held['psnr']:.2f} dB | {init.get('ssim', float('nan')):.3f} -> {held['ssim']:.3f} | "
                     f"{e.get('stage_seconds')} |")  # fmt: skip
    (real / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(e["returncode"] == 0 for e in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
