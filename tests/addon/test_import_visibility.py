"""A person is hidden in the viewport and in renders on the frames the bundle says it is not seen.

The bundle (numpy-made, 32 frames) has person p0 seen only on bundle frames 20-27, as a person
who walks into the shot late and out again before the end, and p1 seen throughout. The
importer keys ``hide_viewport`` / ``hide_render`` of p0's armature, body and splats on the
changes only; renders (Cycles, CPU, a few pixels) leave p0 out where it is not seen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from troupe.addon import anim, compat, importer
from troupe.core import bundle

ROOT = Path(__file__).resolve().parents[2]
SEEN = (20, 28)  # p0 is seen on bundle frames 20..27
OFFSET = 1  # scene frame of bundle frame 0 (the importer's default)


@pytest.fixture(scope="module")
def gap_bundle(tmp_path_factory) -> Path:
    import bundle_factory

    root = bundle_factory.make_bundle(tmp_path_factory.mktemp("gap") / "bundle", people=2, frames=32)
    b = bundle.read_bundle(root)
    vis = np.zeros(b.frame_count, np.float32)
    vis[SEEN[0] : SEEN[1]] = 1.0
    vis[SEEN[0] + 2] = 0.4  # partly seen counts as seen
    b.people[0].motion.visibility = vis
    b.people[1].motion.visibility = np.ones(b.frame_count, np.float32)
    bundle.write_bundle(root, b)
    return root


def seen_at(frame: int) -> bool:
    return SEEN[0] <= frame < SEEN[1]


def parts(objs: importer.PersonObjects) -> list[bpy.types.Object]:
    return [o for o in (objs.armature, objs.body, objs.splats) if o is not None]


def in_depsgraph(obj: bpy.types.Object) -> bool:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return any(o.original == obj for o in depsgraph.objects)


def test_visibility_changes_land_on_scene_frames():
    """Keys go where a run of seen / unseen frames starts, at the bundle frame's scene frame
    (here every 3rd source frame from scene frame 1)."""
    frames = 1 + 3 * np.arange(7)
    got = anim.visibility_changes(frames, np.array([0, 0, 1, 1, 0.3, 0, 0]))
    assert got is not None
    np.testing.assert_array_equal(got[0], [1, 7, 16])
    np.testing.assert_array_equal(got[1], [1, 0, 1])  # 1 = hidden from there on
    assert anim.visibility_changes(frames, np.full(7, 0.2)) is None  # seen throughout: nothing to key
    never = anim.visibility_changes(frames, np.zeros(7))
    assert never is not None and list(never[0]) == [1] and list(never[1]) == [1]


def test_unseen_frames_hide_the_person_and_only_changes_are_keyed(fresh_scene, gap_bundle, tmp_path):
    result = importer.import_bundle(gap_bundle)
    scene = bpy.context.scene
    p0, p1 = result.people["p0"], result.people["p1"]
    assert len(parts(p0)) == 3
    for obj in parts(p0):
        curves = {fc.data_path: fc for fc in compat.fcurves_of(obj)}
        for path in anim.HIDE_PATHS:
            keys = np.empty(2 * len(curves[path].keyframe_points), np.float32)
            curves[path].keyframe_points.foreach_get("co", keys)
            # hidden from the first frame, shown from 20, hidden again from 28
            np.testing.assert_array_equal(keys.reshape(-1, 2), [[OFFSET, 1], [OFFSET + 20, 0], [OFFSET + 28, 1]])
            assert {k.interpolation for k in curves[path].keyframe_points} == {"CONSTANT"}
    for obj in (p1.body, p1.splats):  # seen throughout: nothing keyed
        assert obj.animation_data is None
    for frame in (0, 5, 19, 20, 22, 27, 28, 31, 19):
        scene.frame_set(OFFSET + frame)
        seen = seen_at(frame)
        for obj in parts(p0):
            assert obj.hide_viewport is (not seen) and obj.hide_render is (not seen), (obj.name, frame)
            assert obj.visible_get() is seen, (obj.name, frame)
        assert in_depsgraph(p0.body) is seen and in_depsgraph(p0.splats) is seen, frame
        assert all(o.visible_get() for o in parts(p1))
    # the keys live in the file: a saved scene reopens with the same hiding
    path = tmp_path / "gap.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    for frame in (5, 22):
        scene.frame_set(OFFSET + frame)
        assert bpy.data.objects["p0 body"].visible_get() is seen_at(frame)
        assert bpy.data.objects["p0 splats"].hide_render is (not seen_at(frame))


def test_option_off_keeps_everyone_visible(fresh_scene, gap_bundle):
    result = importer.import_bundle(gap_bundle, importer.ImportSettings(hide_unseen=False))
    p0 = result.people["p0"]
    curves = {fc.data_path for fc in compat.fcurves_of(p0.armature)}
    assert '["troupe_visibility"]' in curves and not curves & set(anim.HIDE_PATHS)
    assert p0.body.animation_data is None and p0.splats.animation_data is None
    bpy.context.scene.frame_set(OFFSET + 5)
    assert all(o.visible_get() and not o.hide_render for o in parts(p0))


def render_alpha(frame: int) -> np.ndarray:
    """Alpha of a tiny transparent-film Cycles render of the scene camera at scene ``frame``."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    render.film_transparent = True
    render.resolution_percentage = 25  # 80 x 45
    bpy.ops.render.render()
    image = bpy.data.images["Render Result"]
    path = Path(bpy.app.tempdir or "/tmp") / f"troupe_vis_{frame}.exr"
    image.save_render(str(path))
    loaded = bpy.data.images.load(str(path))
    px = np.empty(loaded.size[0] * loaded.size[1] * 4, np.float32)
    loaded.pixels.foreach_get(px)
    bpy.data.images.remove(loaded)
    path.unlink()
    return px.reshape(-1, 4)[:, 3]


@pytest.mark.parametrize("hide_unseen", [True, False])
def test_render_leaves_out_a_person_where_not_seen(fresh_scene, gap_bundle, hide_unseen):
    importer.import_bundle(gap_bundle, importer.ImportSettings(people=["p0"], hide_unseen=hide_unseen))
    unseen = render_alpha(OFFSET + 8)
    assert (unseen.max() > 0.5) is not hide_unseen  # gone (or, with the option off, still drawn)
    if hide_unseen:
        assert (render_alpha(OFFSET + 22) > 0.5).sum() > 20  # drawn where seen


def test_script_show_unseen(gap_bundle, tmp_path):
    """``--show-unseen`` keeps people visible; by default the saved scene hides them."""
    check = ("import bpy; bpy.ops.wm.open_mainfile(filepath={!r}); bpy.context.scene.frame_set(6); "
             "print('HIDDEN', bpy.data.objects['p0 body'].hide_render)")  # fmt: skip
    for flags, hidden in (([], True), (["--show-unseen"], False)):
        out = tmp_path / f"scene{len(flags)}.blend"
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_bundle.py"), str(gap_bundle), "--out",
                               str(out), "--no-splats", *flags], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        proc = subprocess.run([sys.executable, "-c", check.format(str(out))], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert f"HIDDEN {hidden}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_operator_option(fresh_scene, gap_bundle):
    """File > Import's "Hide People Where Not Seen" (on by default) reaches the importer."""
    from troupe.addon import ops_import

    ops_import.register()
    try:
        for kwargs, keyed in (({}, True), ({"hide_unseen": False}, False)):
            assert bpy.ops.import_scene.troupe_bundle(filepath=str(gap_bundle / "bundle.json"), splats=False,
                                                      **kwargs) == {"FINISHED"}  # fmt: skip
            body = bpy.data.objects["p0 body"]
            assert {fc.data_path for fc in compat.fcurves_of(body)} == (set(anim.HIDE_PATHS) if keyed else set())
    finally:
        ops_import.unregister()
