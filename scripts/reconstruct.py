"""Reconstruct a video and import the result into a .blend, headless, in one go.

    blender -b --python-exit-code 1 -P scripts/reconstruct.py -- VIDEO --out OUT.blend [--env PYTHON] [options]
    python scripts/reconstruct.py VIDEO --out OUT.blend [--env PYTHON] [options]     (the bpy module)

It runs the add-on's own Run operator, which blocks in background mode: the worker runs in the
GPU environment (``--env``, else the add-on's preference, else the default environment), its
progress is printed, the result is imported into the scene and the scene saved to OUT.blend.
The job folder (``--jobs``, default: a ``troupe`` folder beside OUT.blend) is kept, so running
the same command again resumes an interrupted job. Options the script does not know go to the
worker unchanged (``python -m core run --help`` lists them, e.g. ``--tracker``).
Exit code 0 when the scene was saved with the result, 1 otherwise (the error is printed).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import sys
from pathlib import Path
from typing import Any


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="reconstruct.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--out", required=True, help="the .blend to write")
    p.add_argument("--env", default="", help="the GPU environment's Python executable")
    p.add_argument("--jobs", default="", help="folder for job folders (default: 'troupe' beside --out)")
    p.add_argument("--frame-start", type=int, default=0)
    p.add_argument("--frame-end", type=int, default=0, help="one past the last frame; 0 = to the end")
    p.add_argument("--frame-step", type=int, default=1)
    p.add_argument("--max-people", type=int, default=8)
    p.add_argument("--quality", default="standard", help="preview | standard | high")
    return p.parse_known_args(argv)


def script_args() -> list[str]:
    """The script's own arguments: after ``--`` under Blender, else all of them."""
    return sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]


def ensure_addon() -> None:
    """Use the installed, enabled extension if there is one; else register this checkout as ``troupe``."""
    import bpy

    if hasattr(bpy.types, "TROUPE_OT_run"):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from import_bundle import load_troupe  # the sibling script's loader of the checkout as ``troupe``

    troupe = load_troupe()
    troupe.register()
    # What this script registered it unregisters: the bpy 4.2 module crashes at interpreter exit
    # (SIGSEGV, after the work is saved) while any Python class is still registered.
    atexit.register(troupe.unregister)


def main(argv: list[str]) -> int:
    args, worker_args = parse(argv)
    import bpy

    ensure_addon()
    envsetup = importlib.import_module(bpy.types.TROUPE_OT_run.__module__.rpartition(".")[0] + ".envsetup")
    out = Path(args.out).absolute()
    scene: Any = bpy.context.scene
    st = scene.troupe
    st.video_source = "FILE"
    st.video_path = str(Path(args.video).absolute())
    st.output_dir = str(Path(args.jobs).absolute() if args.jobs else out.parent / "troupe")
    st.frame_start, st.frame_end, st.frame_step = args.frame_start, args.frame_end, args.frame_step
    st.max_people, st.quality = args.max_people, args.quality
    st.extra_args = envsetup.join_args(worker_args)
    st.import_when_done = True
    print(f"Troupe: {args.video} -> {out} (job folder under {st.output_dir})", flush=True)
    st.job_status = "NONE"
    reported = ""
    try:
        bpy.ops.troupe.run(python=str(Path(args.env).absolute()) if args.env else "")
    except RuntimeError as exc:  # the operator reported an error (bpy raises it); the scene has the details
        reported = str(exc)
    if st.job_status != "DONE" or not st.job_imported:
        print(f"Troupe: failed: {st.job_error or reported or st.job_message}", file=sys.stderr)
        if st.job_log:
            print(f"Troupe: log: {st.job_log}", file=sys.stderr, flush=True)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    print(f"Troupe: saved {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(script_args()))
