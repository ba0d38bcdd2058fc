"""Importing a synthetic ground-truth bundle reproduces the bundle's numbers in Blender.

The bundle (``python -m core synth``: 2 stand-in people, 30 frames, an orbiting camera, plus
splats and an appearance mesh per person) is imported; at several frames every bone head,
mesh vertex and splat centre is compared with ``core.bundle``'s FK and skinning converted to
Blender's +Z-up frame, and world points projected through the Blender camera with the
bundle camera's projection.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import mathutils
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view

from troupe.addon import armature, axes, compat, importer, rig
from troupe.addon.datablocks import BUNDLE_KEY
from troupe.core import bundle

FRAMES = (0, 7, 19, 29)
CONV = axes.Y_UP


def bone_heads(arm: bpy.types.Object, names) -> np.ndarray:
    return np.array([(arm.matrix_world @ arm.pose.bones[n].head)[:] for n in names])


def evaluated_vertices(obj: bpy.types.Object) -> np.ndarray:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return (np.array(obj.matrix_world) @ np.c_[co.reshape(-1, 3), np.ones(len(co) // 3)].T).T[:, :3]


def skinned_splats(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres and axes after the skinning modifier (display switched off while reading)."""
    display = obj.modifiers["Troupe Splats"]
    display.show_viewport = False
    try:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        n = len(mesh.vertices)
        out = []
        co = np.empty(n * 3)
        mesh.vertices.foreach_get("co", co)
        out.append(co.reshape(-1, 3))
        for name in ("splat_axis_x", "splat_axis_y"):
            v = np.empty(n * 3)
            mesh.attributes[name].data.foreach_get("vector", v)
            out.append(v.reshape(-1, 3))
        ev.to_mesh_clear()
    finally:
        display.show_viewport = True
    return out[0], out[1], out[2]


@pytest.fixture
def imported(fresh_scene, synth_bundle):
    result = importer.import_bundle(synth_bundle)
    return result, bundle.read_bundle(synth_bundle)


def test_scene_layout_and_settings(imported, synth_bundle):
    result, b = imported
    scene = bpy.context.scene
    assert result.collection[BUNDLE_KEY] == str(Path(synth_bundle).resolve())
    assert scene.frame_start == 1 and scene.frame_end == b.frame_count
    assert scene.render.fps / scene.render.fps_base == pytest.approx(b.fps)
    assert (scene.render.resolution_x, scene.render.resolution_y) == tuple(b.image_size)
    assert scene.camera == result.camera
    assert [p.id for p in b.people] == list(result.people)
    for p in b.people:
        objs = result.people[p.id]
        arm = objs.armature
        assert arm[importer.PERSON_KEY] == p.id
        assert sorted(bone.name for bone in arm.data.bones) == sorted(bundle.JOINT_NAMES)
        assert all(pb.rotation_mode == "QUATERNION" for pb in arm.pose.bones)
        assert arm.users_collection[0].name == p.id and arm.users_collection[0] in result.collection.children[:]
        body = objs.body
        assert [g.name for g in body.vertex_groups] == list(bundle.JOINT_NAMES)
        assert body.modifiers["Armature"].object == arm
        assert all(poly.use_smooth for poly in body.data.polygons)
        assert objs.splats is not None and objs.mesh is not None
    # the video is the camera background
    bg = result.camera.data.background_images[0]
    assert bg.image is not None and Path(bpy.path.abspath(bg.image.filepath)).name == "video.mp4"


def test_bones_meshes_and_splats_follow_the_bundle(imported):
    result, b = imported
    scene = bpy.context.scene
    worst = {"bones": 0.0, "body": 0.0, "mesh": 0.0, "splats": 0.0, "axes": 0.0}
    for f in FRAMES:
        scene.frame_set(1 + f)
        for p in b.people:
            objs = result.people[p.id]
            fk, skin = bundle.forward_kinematics(p.rig.joints, p.rig.parents, p.motion.rotvecs[f : f + 1],
                                                 p.motion.trans[f : f + 1])  # fmt: skip
            worst["bones"] = max(worst["bones"], np.abs(bone_heads(objs.armature, bundle.JOINT_NAMES) - CONV.points(fk[0])).max())
            body = bundle.skin_points(p.rig.vertices, None, p.rig.weights, skin[0])
            worst["body"] = max(worst["body"], np.abs(evaluated_vertices(objs.body) - CONV.points(body)).max())
            mesh = bundle.skin_points(p.mesh.vertices, p.mesh.skin_joints, p.mesh.skin_weights, skin[0])
            worst["mesh"] = max(worst["mesh"], np.abs(evaluated_vertices(objs.mesh) - CONV.points(mesh)).max())
            s = p.splats
            centres, ax, ay = skinned_splats(objs.splats)
            expected = bundle.skin_points(s.means, s.skin_joints, s.skin_weights, skin[0])
            worst["splats"] = max(worst["splats"], np.abs(centres - CONV.points(expected)).max())
            # each splat's axes turn with the blend of its joints' rotations
            blend = np.einsum("nk,nkab->nab", s.skin_weights, skin[0][s.skin_joints, :3, :3])
            local = rig.quaternion_to_matrix(s.quats)
            for got, col in ((ax, 0), (ay, 1)):
                want = CONV.points(np.einsum("nab,nb->na", blend, local[:, :, col]))
                worst["axes"] = max(worst["axes"], np.abs(got - want).max())
    assert worst["bones"] < 1e-4, worst
    assert worst["body"] < 1e-3, worst
    assert worst["mesh"] < 1e-3, worst
    assert worst["splats"] < 1e-3, worst
    assert worst["axes"] < 1e-3, worst


def test_splat_instances_are_oriented_scaled_and_coloured(imported):
    result, b = imported
    p = b.people[0]
    obj = result.people[p.id].splats
    bpy.context.scene.frame_set(12)
    centres, ax, ay = skinned_splats(obj)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mats = [np.array(inst.matrix_world) for inst in depsgraph.object_instances
            if inst.is_instance and inst.parent and inst.parent.original == obj]  # fmt: skip
    assert len(mats) == p.splats.count
    mats = np.array(mats)
    order = np.lexsort(mats[:, :3, 3].T)
    mats = mats[order]
    c = centres[np.lexsort(centres.T)]
    assert np.abs(mats[:, :3, 3] - c).max() < 1e-5
    # columns: the Gaussian's axes times Size * sigma (the ellipsoid's radii)
    scales = np.exp(p.splats.log_scales)
    x_dir = ax / np.linalg.norm(ax, axis=1, keepdims=True)
    ref = x_dir[np.lexsort(centres.T)]
    sx = scales[np.lexsort(centres.T), 0] * 3.0
    assert np.allclose(mats[:, :3, 0], ref * sx[:, None], atol=1e-5)
    # colour and opacity attributes: SH DC -> sRGB -> linear, sigmoid of the logit
    color = np.empty(p.splats.count * 4, np.float32)
    obj.data.attributes["splat_color"].data.foreach_get("color", color)
    rgb = np.clip(0.5 + 0.28209479 * p.splats.sh[:, 0], 0, 1)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    assert np.allclose(color.reshape(-1, 4)[:, :3], lin, atol=1e-5)
    alpha = np.empty(p.splats.count, np.float32)
    obj.data.attributes["splat_alpha"].data.foreach_get("value", alpha)
    assert np.allclose(alpha, 1 / (1 + np.exp(-p.splats.opacity)), atol=1e-6)


def test_camera_projects_like_the_bundle(imported):
    result, b = imported
    scene = bpy.context.scene
    w, h = b.image_size
    rng = np.random.default_rng(1)
    worst = 0.0
    for f in FRAMES:
        scene.frame_set(1 + f)
        pts = np.concatenate([bundle.world_joints(p)[f] for p in b.people] + [rng.normal([0, 1, 0], 1.0, (30, 3))])
        cam_z = (pts @ b.camera.world_to_cam[f, :3, :3].T + b.camera.world_to_cam[f, :3, 3])[:, 2]
        pts = pts[cam_z > 0.2]
        want = b.camera.project(pts, f)
        got = []
        for q in CONV.points(pts):
            v = world_to_camera_view(scene, result.camera, mathutils.Vector(q))
            got.append((v.x * w, (1.0 - v.y) * h))
        worst = max(worst, np.abs(np.array(got) - want).max())
    assert worst < 0.5, f"{worst:.3f} px"


def test_visibility_is_marked_not_dropped(fresh_scene, small_bundle):
    result = importer.import_bundle(small_bundle)
    b = bundle.read_bundle(small_bundle)
    for p in b.people:
        arm = result.people[p.id].armature
        curves = {(fc.data_path, fc.array_index): fc for fc in compat.fcurves_of(arm)}
        vis_curve = curves[(f'["{armature.VISIBILITY_PROP}"]', 0)]
        keys = np.empty(2 * b.frame_count, np.float32)
        vis_curve.keyframe_points.foreach_get("co", keys)
        assert np.allclose(keys[1::2], p.motion.visibility)
        rot = curves[('pose.bones["left_knee"].rotation_quaternion', 0)]
        assert len(rot.keyframe_points) == b.frame_count  # every frame keeps its keys
        types = [k.type for k in rot.keyframe_points]
        hidden = p.motion.visibility == 0
        assert hidden.any()
        assert all((t == "GENERATED") == bool(hid) for t, hid in zip(types, hidden))
        assert len(curves) == 55 * 4 + 3 + 1 + 2  # + hide_viewport, hide_render (test_import_visibility.py)


def test_fractional_frame_rate_and_offset(fresh_scene, tmp_path):
    import bundle_factory

    root = bundle_factory.make_bundle(tmp_path / "b", people=1, frames=12, fps=29.97)
    result = importer.import_bundle(root, importer.ImportSettings(frame_offset=101))
    scene = bpy.context.scene
    assert scene.render.fps == 30 and scene.render.fps_base == pytest.approx(30 / 29.97)
    assert (scene.frame_start, scene.frame_end) == (101, 112)
    b = bundle.read_bundle(root)
    scene.frame_set(105)
    fk = bundle.world_joints(b.people[0])[4]
    assert np.abs(bone_heads(result.people["p0"].armature, bundle.JOINT_NAMES) - CONV.points(fk)).max() < 1e-4


def test_every_nth_frame_keeps_the_source_timing(fresh_scene, tmp_path):
    """A bundle of every 3rd source frame: keys land 3 scene frames apart at the source frame rate,
    so the motion plays at its real speed and stays on the background video's frames."""
    import bundle_factory

    root = bundle_factory.make_bundle(tmp_path / "b", people=1, frames=10, frame_start=30, frame_step=3)
    result = importer.import_bundle(root, importer.ImportSettings(frame_offset=1))
    scene = bpy.context.scene
    assert scene.render.fps == 30 and (scene.frame_start, scene.frame_end) == (1, 28)
    arm = result.people["p0"].armature
    curve = next(fc for fc in compat.fcurves_of(arm) if fc.data_path.endswith("rotation_quaternion"))
    keys = np.empty(2 * len(curve.keyframe_points), np.float32)
    curve.keyframe_points.foreach_get("co", keys)
    np.testing.assert_array_equal(keys[0::2], 1 + 3 * np.arange(10))
    b = bundle.read_bundle(root)
    scene.frame_set(1 + 3 * 4)  # bundle frame 4 = source frame 42
    fk = bundle.world_joints(b.people[0])[4]
    assert np.abs(bone_heads(arm, bundle.JOINT_NAMES) - CONV.points(fk)).max() < 1e-4


def test_saved_file_reopens_with_the_same_values(imported, tmp_path):
    result, b = imported
    scene = bpy.context.scene
    scene.frame_set(18)
    p = b.people[1]
    before_heads = bone_heads(result.people[p.id].armature, bundle.JOINT_NAMES)
    before_splats = skinned_splats(result.people[p.id].splats)[0]
    before_cam = np.array(result.camera.matrix_world)
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    scene.frame_set(18)
    arm = bpy.data.objects[p.id]
    assert arm[importer.PERSON_KEY] == p.id
    assert np.abs(bone_heads(arm, bundle.JOINT_NAMES) - before_heads).max() < 1e-6
    assert np.abs(skinned_splats(bpy.data.objects[f"{p.id} splats"])[0] - before_splats).max() < 1e-6
    assert np.abs(np.array(scene.camera.matrix_world) - before_cam).max() < 1e-6


def test_render_shows_people_over_the_footage(fresh_scene, synth_bundle, tmp_path):
    """Cycles (CPU, 4 samples, 160x90): where the people are, the render differs from the same
    render without them; elsewhere it is the footage (the plate), not an empty world."""
    from troupe.addon import preview

    result = importer.import_bundle(synth_bundle, importer.ImportSettings(image_plane=True))
    b = bundle.read_bundle(synth_bundle)
    frame = 15

    def render(name: str) -> np.ndarray:
        out = preview.render_preview(tmp_path / name, frame=1 + frame, max_width=160, samples=4)
        img = bpy.data.images.load(str(out))
        px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
        img.pixels.foreach_get(px)
        size = tuple(img.size)
        bpy.data.images.remove(img)
        return px.reshape(size[1], size[0], 4)[::-1, :, :3]  # top row first

    with_people = render("people.png")
    for objs in result.people.values():
        objs.armature.users_collection[0].hide_render = True
    footage = render("footage.png")
    h, w = with_people.shape[:2]
    scale = w / b.image_size[0]
    mask = np.zeros((h, w), bool)
    for p in b.people:
        skin = bundle.forward_kinematics(p.rig.joints, p.rig.parents, p.motion.rotvecs[frame : frame + 1],
                                         p.motion.trans[frame : frame + 1])[1][0]  # fmt: skip
        uv = b.camera.project(bundle.skin_points(p.rig.vertices, None, p.rig.weights, skin), frame) * scale
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        mask[uv[ok, 1].astype(int), uv[ok, 0].astype(int)] = True
    assert mask.sum() > 30
    diff = np.abs(with_people - footage).sum(axis=2)
    assert diff[mask].mean() > 0.1, diff[mask].mean()
    grown = mask.copy()
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            grown |= np.roll(np.roll(mask, dy, 0), dx, 1)
    assert diff[~grown].mean() < 0.02, diff[~grown].mean()
    assert footage[~grown].std() > 0.03  # textured footage, not a flat world colour
