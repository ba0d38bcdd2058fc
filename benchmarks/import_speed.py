# SPDX-License-Identifier: GPL-3.0-or-later
"""How long importing a bundle into Blender takes (bpy module, CPU).

    .venv/blender/bin/python benchmarks/import_speed.py [--people 4] [--frames 600] [--splats 100000]
                                                        [--repeat 3] [--json out/bench/import_speed.json]

Makes a bundle of ``--people`` SMPL-X-sized people (the generated stand-in body: 10475 vertices,
20946 faces, 55 joints; made with ``python -m core standin`` when the checkout has none yet)
with ``--frames`` frames of random motion and ``--splats`` Gaussians each, then imports it into
an empty scene ``--repeat`` times and prints the best time, a breakdown by step (cProfile
cumulative times of the importer's own functions), and the time to evaluate the first frame and
a later frame (armatures, skinned meshes, skinned splat ellipsoids). Baseline in the same run:
keying one person's motion the usual way, ``keyframe_insert`` per bone and frame, against the
bulk ``foreach_set`` writer the importer uses.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from import_bundle import load_troupe  # noqa: E402  (the checkout as the package troupe)

STEPS = {  # reported step -> importer function (module file, function name)
    "read + validate bundle": ("bundle.py", "read_bundle"),
    "armatures (bones)": ("armature.py", "create_armature"),
    "keyframes": ("armature.py", "key_pose"),
    "pose maths (numpy)": ("rig.py", "pose_basis"),
    "body meshes": ("importer.py", "_skinned_mesh"),
    "splat objects": ("gsplat.py", "create_splat_object"),
    "splat node set-up": ("gsplat.py", "__init__"),
    "camera": ("camera.py", "create_camera"),
}


def standin_folder() -> Path:
    folder = ROOT / ".cache" / "standin"
    if not (folder / "SMPLX_NEUTRAL.npz").is_file():
        core = os.environ.get("TROUPE_CORE_PYTHON") or str(ROOT / ".venv" / "core" / "bin" / "python")
        subprocess.run([core, "-m", "core", "standin", "--out", str(folder), "--genders", "neutral"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)  # fmt: skip
    return folder


def make_bundle(root: Path, people: int, frames: int, splats: int, seed: int = 0) -> Path:
    from troupe.addon import interchange
    from troupe.core import bundle

    rng = np.random.default_rng(seed)
    model = interchange.load_body_model(standin_folder())
    persons = []
    for i in range(people):
        betas = rng.normal(0, 1, 10)
        rig = interchange.body_rig(model, betas)
        t = np.arange(frames)[:, None, None]
        rot = 0.3 * np.sin(rng.uniform(0.02, 0.2, (1, 55, 3)) * t + rng.uniform(0, 6, (1, 55, 3)))
        trans = np.stack([np.full(frames, 1.2 * i), np.full(frames, 1.15), 0.01 * np.arange(frames)], 1)
        vis = (rng.random(frames) > 0.05).astype(np.float32)
        motion = bundle.Motion(betas=betas.astype(np.float32), poses=rot.reshape(frames, -1).astype(np.float32),
                               trans=trans.astype(np.float32), expression=np.zeros((frames, 10), np.float32),
                               visibility=vis)  # fmt: skip
        idx = rng.integers(0, len(rig.vertices), splats)
        ids, wts = bundle.dense_to_topk(rig.weights[idx], 4)
        s = bundle.Splats(means=(rig.vertices[idx] + rng.normal(0, 0.01, (splats, 3))).astype(np.float32),
                          sh=rng.normal(0, 1, (splats, 16, 3)).astype(np.float32),
                          opacity=rng.normal(1, 1, splats).astype(np.float32),
                          log_scales=np.log(rng.uniform(0.003, 0.02, (splats, 3))).astype(np.float32),
                          quats=rng.normal(size=(splats, 4)).astype(np.float32), skin_joints=ids, skin_weights=wts)  # fmt: skip
        persons.append(bundle.Person(id=f"p{i}", motion=motion, rig=bundle.Rig(
            joints=rig.joints.astype(np.float32), parents=np.asarray(rig.parents, np.int32),
            vertices=rig.vertices.astype(np.float32), faces=np.asarray(rig.faces, np.int32),
            weights=rig.weights.astype(np.float32)), splats=s))  # fmt: skip
    w, h = 1920, 1080
    K = np.tile(np.array([[1500.0, 0, w / 2], [0, 1500.0, h / 2], [0, 0, 1]]), (frames, 1, 1))
    w2c = np.tile(np.eye(4), (frames, 1, 1))
    w2c[:, :3, :3] = np.diag([1.0, -1.0, -1.0])  # looking down -z from +z, OpenCV
    w2c[:, :3, 3] = [-1.8, 1.0, 8.0]
    cam = bundle.Camera(K=K, world_to_cam=w2c, image_size=(w, h))
    return bundle.write_bundle(root, bundle.Bundle(fps=30.0, image_size=(w, h), camera=cam, people=persons))


def step_times(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(STEPS, 0.0)
    for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for step, (file, name) in STEPS.items():
            if func == name and filename.endswith(os.sep + file):
                if name == "__init__" and "gsplat" not in filename:
                    continue
                out[step] += ct
    return out


def keyframe_insert_baseline(people: int, frames: int) -> tuple[float, float]:
    """Seconds to key one person's bones over ``frames`` with keyframe_insert, and with the bulk
    writer; each extrapolated to ``people`` people."""
    import bpy

    from troupe.addon import armature, axes, rig
    from troupe.core import bundle

    bpy.ops.wm.read_factory_settings(use_empty=True)
    joints = interchange_joints()
    heads = axes.Y_UP.points(joints)
    coll = bpy.context.scene.collection
    obj, rest = armature.create_armature("baseline", heads, np.array(bundle.SMPLX_PARENTS), bundle.JOINT_NAMES, coll)
    rotvecs = 0.3 * np.sin(np.arange(frames)[:, None, None] * 0.05 + np.zeros((1, 55, 3)))
    quats, loc = rig.pose_basis(rest, joints, rotvecs, np.zeros((frames, 3)), axes.Y_UP)
    t0 = time.perf_counter()
    for f in range(frames):
        for j, name in enumerate(bundle.JOINT_NAMES):
            pb = obj.pose.bones[name]
            pb.rotation_quaternion = quats[f, j]
            pb.keyframe_insert("rotation_quaternion", frame=f + 1)
        obj.pose.bones[0].location = loc[f]
        obj.pose.bones[0].keyframe_insert("location", frame=f + 1)
    naive = time.perf_counter() - t0
    obj.animation_data_clear()
    t0 = time.perf_counter()
    armature.key_pose(obj, bundle.JOINT_NAMES, np.arange(frames) + 1.0, quats, loc)
    bulk = time.perf_counter() - t0
    return naive * people, bulk * people


def interchange_joints() -> np.ndarray:
    from troupe.addon import interchange

    return interchange.body_rig(interchange.load_body_model(standin_folder()), np.zeros(10)).joints


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=4)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--splats", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(ROOT / ".cache" / "blender"))
    os.environ.setdefault("XDG_CACHE_HOME", str(ROOT / ".cache" / "xdg"))
    load_troupe()
    import bpy

    from troupe.addon import importer

    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
        t0 = time.perf_counter()
        root = make_bundle(Path(tmp) / "bundle", args.people, args.frames, args.splats)
        print(f"bundle: {args.people} people x {args.frames} frames, {args.splats} splats each "
              f"({sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 1e6:.0f} MB, made in "
              f"{time.perf_counter() - t0:.1f} s)")  # fmt: skip
        times, steps = [], {}
        for _ in range(args.repeat):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            importer.import_bundle(root)
            prof.disable()
            elapsed = time.perf_counter() - t0
            if not times or elapsed < min(times):
                steps = step_times(pstats.Stats(prof))
            times.append(elapsed)
        # import without profiling, then the first evaluated frame and a later one
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t0 = time.perf_counter()
        importer.import_bundle(root)
        plain = time.perf_counter() - t0
        scene = bpy.context.scene
        t0 = time.perf_counter()
        scene.frame_set(scene.frame_start)
        bpy.context.evaluated_depsgraph_get()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        scene.frame_set(scene.frame_start + 10)
        later = time.perf_counter() - t0
    naive, bulk = keyframe_insert_baseline(args.people, args.frames)
    result = {
        "people": args.people, "frames": args.frames, "splats_per_person": args.splats,
        "import_best_s": min(times), "import_runs_s": times, "import_unprofiled_s": plain,
        "steps_s": steps, "first_frame_eval_s": first, "next_frame_eval_s": later,
        "keyframes_keyframe_insert_s": naive, "keyframes_bulk_s": bulk, "bpy": bpy.app.version_string,
        "cpus": os.cpu_count(),
    }  # fmt: skip
    print(f"\nimport (best of {args.repeat}, profiled): {min(times):6.2f} s   runs: {', '.join(f'{t:.2f}' for t in times)}")
    print(f"import (not profiled):            {plain:6.2f} s")
    for step, secs in steps.items():
        print(f"  {step:<26} {secs:6.2f} s")
    print(f"first frame evaluation:           {first:6.2f} s (armatures, meshes, {args.people * args.splats} splat ellipsoids)")
    print(f"next frame evaluation:            {later:6.2f} s")
    print(f"keys, keyframe_insert (baseline): {naive:6.2f} s for {args.people} people")
    print(f"keys, bulk foreach_set (ours):    {bulk:6.2f} s  ({naive / max(bulk, 1e-9):.0f}x faster)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
