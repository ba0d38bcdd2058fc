"""Avatar stage on the GPU: gsplat parity test, rasteriser speed, a step profile and the whole fit.

On the GPU machine, with the wheels of ``benchmarks/avatars_gpu_wheels.py`` installed and a scene
made with ``python -m core synth --people 2 --frames 300 --size 1280x720 --seed 0``::

    MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python benchmarks/avatars_gpu.py --scene SCENE --out $OUT

(or in two calls, ``--steps compile`` then ``--steps parity,speed,profile,fit``, with the same
``TORCH_EXTENSIONS_DIR`` so the second finds the compiled kernels; docs/avatars.md has the lines).

Steps (each result lands in OUT, also when a later step fails):
    compile  compiles gsplat's CUDA kernels (first use; minutes) and records the time;
    parity   runs ``tests/core/test_raster_gpu.py`` and ``tests/core/test_avatars_gpu.py`` (gsplat
             against the torch reference, the CUDA training step against the CPU one) -> raster_parity.txt;
    speed    ``raster_speed``: forward+backward ms of both backends at 720p -> raster_speed.json;
    profile  ``benchmarks/avatars_profile.py``: ms, tensor ops and host syncs per training step
             -> profile.json, profile.txt (torch.profiler tables);
    fit      fits the avatars (preset ``--quality``) -> avatars_gpu.json (iterations/s, seconds per
             phase, peak GPU memory, held-out PSNR/SSIM inside the masks before/after) and
             OUT/avatars/ (splats, renders, metrics).

``--device cpu --steps fit`` runs the fit on the CPU (see ``benchmarks/avatars_cpu.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compile_gsplat() -> dict:
    t0 = time.perf_counter()
    from gsplat.cuda._backend import _C  # noqa: F401  (JIT-compiles on first import)

    return {"gsplat_compile_or_load_seconds": round(time.perf_counter() - t0, 1)}


def parity(out: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests/core/test_raster_gpu.py"),
           str(ROOT / "tests/core/test_avatars_gpu.py"), "-v", "-rA", f"--junitxml={out / 'raster_parity.xml'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (out / "raster_parity.txt").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    rc = proc.returncode
    if rc == 0 and "passed" not in tail:  # all skipped: no CUDA or no gsplat here, nothing was compared
        rc = 1
    return {"parity_returncode": rc, "parity_summary": tail}


def raster_speed(out: Path, device: str) -> dict:
    from benchmarks.raster_speed import run as speed_run

    rows = speed_run(device=device, sizes=[(1280, 720)], counts=[20000, 100000], repeats=20)
    (out / "raster_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    return {"raster_speed": rows}


def profile(scene, name: str, out: Path, device: str, quality: str, overrides: dict) -> dict:  # type: ignore[no-untyped-def]
    from benchmarks.avatars_profile import profile as run_profile

    return run_profile(scene, name, out, device, quality, overrides)


def load_scene(scene_dir: Path | None):  # type: ignore[no-untyped-def]
    """A `core synth` folder, or without one a small procedural scene; returns (scene, name)."""
    from core.avatars.synthetic import load_synth, make_scene

    if scene_dir:
        return load_synth(scene_dir), str(scene_dir)
    return make_scene(people=2, frames=30, width=160, height=120), "procedural 2 people x 30 frames 160x120"


def fit(scene, name: str, out: Path, device: str, quality: str, overrides: dict) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from core.avatars.config import AvatarConfig
    from core.avatars.fit import fit_avatars
    from core.avatars.outputs import write_outputs

    cfg = AvatarConfig.preset(quality).replace(**overrides)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fit_avatars(scene.frames, scene.labels, scene.motion, cfg, device=device,
                         progress=lambda f, m: print(f"  [{f * 100:5.1f}%] {m}", flush=True))  # fmt: skip
    t_fit = time.perf_counter() - t0
    write_outputs(result, out / "avatars")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    phases = {k: round(v, 2) for k, v in result.metrics["seconds"].items()}
    m = result.metrics
    rep = {
        "scene": name,
        "people": len(scene.motion.people),
        "frames": int(scene.motion.frame_count),
        "image_size": list(scene.motion.image_size),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch_threads": torch.get_num_threads(),
        "quality": quality,
        "overrides": overrides,
        "backend": m["backend"],
        "iterations": m["iterations"],
        "iterations_per_second": round(m["iterations_per_second"], 2),
        "seconds": {  # prepare (inputs, plates, initial Gaussians), evaluate_init, train, evaluate, outputs
            **phases,
            "outputs": round(total - t_fit, 2),
            "fit_total": round(t_fit, 2),
            "stage_total_with_outputs": round(total, 2),
        },  # fmt: skip
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.startswith("cuda")
        else None,
        "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)
        if device.startswith("cuda")
        else None,
        "heldout_before": m["init"],
        "heldout_after": m["heldout"],
        "train_frames_after": m["train_frames_metrics"],
        "gaussians": m["gaussians"],
        "lpips": "not measured: LPIPS needs network weights, which cannot be had offline",
    }
    (out / "avatars_gpu.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def parse_overrides(items: list[str]) -> dict:
    """``FIELD=VALUE`` strings -> {field: value} (VALUE read as JSON when it parses, else a string)."""
    overrides = {}
    for item in items:
        key, _, val = item.partition("=")
        try:
            overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            overrides[key] = val
    return overrides


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scene", type=Path, help="a `python -m core synth` folder (default: a small procedural scene)"
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/avatars_gpu")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--quality", default="standard", choices=("preview", "standard", "high"))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an AvatarConfig field (JSON value), e.g. --set iterations=2000")  # fmt: skip
    p.add_argument("--steps", default="compile,parity,speed,profile,fit",
                   help="comma list of compile,parity,speed,profile,fit")  # fmt: skip
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.set)
    steps = args.steps.split(",")
    summary: dict = {}
    rc = 0
    for step, fn in (("compile", compile_gsplat), ("parity", lambda: parity(args.out)),
                     ("speed", lambda: raster_speed(args.out, args.device)),
                     ("profile", lambda: profile(*load_scene(args.scene), args.out, args.device, args.quality,
                                                 overrides)),
                     ("fit", lambda: fit(*load_scene(args.scene), args.out, args.device, args.quality, overrides))):  # fmt: skip
        if step not in steps:
            continue
        print(f"== {step}", flush=True)
        try:
            summary[step] = fn()
        except Exception as exc:  # keep going: later steps still report
            import traceback

            summary[step] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            rc = 1
        print(json.dumps(summary[step], indent=2)[:4000], flush=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary.get("parity", {}).get("parity_returncode", 0) != 0:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
