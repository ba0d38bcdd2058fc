# SPDX-License-Identifier: GPL-3.0-or-later
"""Import a Troupe bundle headless, save a .blend, optionally render a preview and export people.

Inside Blender:
    blender -b --python-exit-code 1 -P scripts/import_bundle.py -- BUNDLE --out scene.blend \\
        [--render preview.png [--frame N]] [--export-fbx DIR] [--export-bvh DIR] [options]
With Blender as a Python module (bpy), the same arguments:
    python scripts/import_bundle.py BUNDLE --out scene.blend [...]

BUNDLE is the bundle folder or its bundle.json. The scene starts empty (or from --into FILE).
With --render the video is also put on a plate behind the people (camera backgrounds do not
render). --frame is a scene frame (bundle frame i is scene frame --frame-offset + i); the
default is the middle of the clip. Exit status 1 with the problems listed when the bundle is
invalid.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_troupe():  # type: ignore[no-untyped-def]
    """The checkout as the package ``troupe`` (as Blender loads the extension)."""
    if "troupe" not in sys.modules:
        spec = importlib.util.spec_from_file_location("troupe", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])  # fmt: skip
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["troupe"] = module
        spec.loader.exec_module(module)
    return sys.modules["troupe"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="import_bundle.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("bundle", help="bundle folder or its bundle.json")
    p.add_argument("--out", help="save the scene to this .blend file")
    p.add_argument("--into", help="import into this existing .blend file instead of an empty scene")
    p.add_argument("--render", metavar="PNG", help="render a preview still (Cycles, CPU) to this file")
    p.add_argument("--frame", type=int, help="scene frame to render (default: the middle of the clip)")
    p.add_argument("--samples", type=int, default=16, help="Cycles samples of the preview (default 16)")
    p.add_argument("--width", type=int, default=640, help="preview width in pixels at most (default 640)")
    p.add_argument("--engine", choices=("CYCLES", "EEVEE"), default="CYCLES",
                   help="preview render engine (default CYCLES on the CPU; EEVEE needs a GPU)")  # fmt: skip
    p.add_argument("--people", help="person ids to import, comma separated (default: everyone)")
    p.add_argument("--no-armature", action="store_true", help="no armatures (meshes and splats stay in rest pose)")
    p.add_argument("--no-mesh", action="store_true", help="no body meshes")
    p.add_argument("--no-splats", action="store_true", help="no Gaussian splats")
    p.add_argument("--plate", action=argparse.BooleanOptionalAction, default=None,
                   help="the video on a plate behind the people (default: on with --render)")  # fmt: skip
    p.add_argument("--show-unseen", action="store_true",
                   help="keep people visible on frames where they are not seen in the video "
                        "(default: hidden there, in the viewport and in renders)")  # fmt: skip
    p.add_argument("--frame-offset", type=int, default=1, help="scene frame of bundle frame 0 (default 1)")
    p.add_argument("--add", action="store_true", help="keep an earlier import of the same bundle (--into)")
    p.add_argument("--export-fbx", metavar="DIR", help="export every person as DIR/<id>.fbx")
    p.add_argument("--export-bvh", metavar="DIR", help="export every person as DIR/<id>.bvh")
    return p.parse_args(argv)


def script_argv() -> list[str]:
    """Arguments after ``--`` inside Blender, else the command line's."""
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1 :]
    return argv[1:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(script_argv() if argv is None else argv)
    load_troupe()
    import bpy

    from troupe.addon import importer, interchange, preview
    from troupe.core import bundle

    if args.into:
        bpy.ops.wm.open_mainfile(filepath=str(Path(args.into).resolve()))
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    settings = importer.ImportSettings(
        people=[p.strip() for p in args.people.split(",")] if args.people else None,
        armature=not args.no_armature, mesh=not args.no_mesh, splats=not args.no_splats,
        image_plane=args.plate if args.plate is not None else bool(args.render),
        frame_offset=args.frame_offset, replace=not args.add, hide_unseen=not args.show_unseen,
    )  # fmt: skip
    t0 = time.perf_counter()
    try:
        result = importer.import_bundle(args.bundle, settings)
    except bundle.BundleError as exc:
        print(f"import_bundle: {args.bundle} is not a valid Troupe bundle:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"import_bundle: {exc}", file=sys.stderr)
        return 1
    scene = bpy.context.scene
    print(f"imported {len(result.people)} people, frames {scene.frame_start}-{scene.frame_end} "
          f"in {time.perf_counter() - t0:.2f} s")  # fmt: skip
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for fmt, folder in (("FBX", args.export_fbx), ("BVH", args.export_bvh)):
        if not folder:
            continue
        for pid, objs in result.people.items():
            if objs.armature is not None:
                out = interchange.export_person(objs.armature, Path(folder) / f"{pid}.{fmt.lower()}", fmt)
                print(f"exported {out}")
    if args.render:
        frame = args.frame if args.frame is not None else (scene.frame_start + scene.frame_end) // 2
        t1 = time.perf_counter()
        out = preview.render_preview(args.render, frame, max_width=args.width, samples=args.samples, engine=args.engine)
        print(f"rendered frame {frame} to {out} in {time.perf_counter() - t1:.1f} s")
    if args.out:
        out_blend = Path(args.out).resolve()
        out_blend.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=str(out_blend))
        print(f"saved {out_blend}")
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
