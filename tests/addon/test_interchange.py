"""SMPL-X motion files in (AMASS layout, +Y or +Z up, resampled), FBX and BVH out and back."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest

from troupe.addon import axes, importer, interchange
from troupe.core import bundle

JOINTS = bundle.JOINT_NAMES


def heads(arm) -> np.ndarray:
    return np.array([(arm.matrix_world @ arm.pose.bones[n].head)[:] for n in JOINTS])


def write_amass(path: Path, person: bundle.Person, fps: float, z_up: bool) -> None:
    """The person's motion as an AMASS-style file; ``z_up`` re-expresses the world +Z up the way
    AMASS stores it (same body, same motion)."""
    rotvecs = person.motion.rotvecs.astype(np.float64).copy()
    trans = person.motion.trans.astype(np.float64).copy()
    if z_up:
        c = axes.YUP_TO_ZUP
        r0 = c @ bundle.axis_angle_to_matrix(rotvecs[:, 0])
        from troupe.addon.rig import matrix_to_quaternion, quaternion_to_axis_angle

        rotvecs[:, 0] = quaternion_to_axis_angle(matrix_to_quaternion(r0))
        j0 = person.rig.joints[0].astype(np.float64)
        trans = (j0 + trans) @ c.T - j0
    np.savez(path, poses=rotvecs.reshape(len(rotvecs), -1), trans=trans, betas=np.r_[person.motion.betas, np.zeros(6)],
             gender=np.array("neutral"), mocap_frame_rate=np.array(fps))  # fmt: skip


def test_body_rig_from_the_model_file_matches_the_core(synth_bundle, standin_dir):
    b = bundle.read_bundle(synth_bundle)
    model = interchange.load_body_model(standin_dir)
    for p in b.people:
        rig = interchange.body_rig(model, p.motion.betas)
        assert np.abs(rig.joints - p.rig.joints).max() < 1e-5
        assert np.abs(rig.vertices - p.rig.vertices).max() < 1e-5
        assert np.array_equal(rig.parents, p.rig.parents)


def test_model_file_errors_name_the_file(tmp_path):
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", v_template=np.zeros((10, 3)))
    with pytest.raises(interchange.InterchangeError, match="SMPLX_NEUTRAL.npz: missing array 'shapedirs'"):
        interchange.load_body_model(tmp_path)
    with pytest.raises(interchange.InterchangeError, match="no SMPLX_MALE.npz"):
        interchange.load_body_model(tmp_path, "male")
    np.savez(tmp_path / "smplh.npz", poses=np.zeros((3, 156)), trans=np.zeros((3, 3)), betas=np.zeros(16),
             mocap_frame_rate=np.array(120.0))  # fmt: skip
    with pytest.raises(interchange.InterchangeError, match="156 is SMPL-H"):
        interchange.read_motion(tmp_path / "smplh.npz")


@pytest.mark.parametrize("z_up", [True, False])
def test_amass_motion_imports_upright_either_way(fresh_scene, synth_bundle, standin_dir, tmp_path, z_up):
    b = bundle.read_bundle(synth_bundle)
    p = b.people[0]
    path = tmp_path / f"walk_{'z' if z_up else 'y'}.npz"
    write_amass(path, p, b.fps, z_up)
    assert interchange.detect_up_axis(interchange.read_motion(path).rotvecs) == ("Z" if z_up else "Y")
    result = interchange.import_motion(path, standin_dir, target_fps=b.fps)
    arm = result.people[path.stem].armature
    fk = bundle.world_joints(p)
    scene = bpy.context.scene
    for f in (0, 11, 29):
        scene.frame_set(1 + f)
        assert np.abs(heads(arm) - axes.Y_UP.points(fk[f])).max() < 1e-4
    assert result.people[path.stem].body is not None


def test_amass_motion_is_resampled_to_the_scene_rate(fresh_scene, synth_bundle, standin_dir, tmp_path):
    b = bundle.read_bundle(synth_bundle)
    p = b.people[1]
    write_amass(tmp_path / "m.npz", p, 60.0, z_up=True)  # recorded at 60 fps ...
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0  # ... imported into a 30 fps scene
    result = interchange.import_motion(tmp_path / "m.npz", standin_dir)
    arm = result.people["m"].armature
    fk = bundle.world_joints(p)
    assert scene.frame_end == 1 + (b.frame_count - 1) // 2
    for k in (0, 5, 14):
        scene.frame_set(1 + k)
        assert np.abs(heads(arm) - axes.Y_UP.points(fk[2 * k])).max() < 1e-4


def test_fbx_and_bvh_export_round_trip(fresh_scene, small_bundle, tmp_path):
    result = importer.import_bundle(small_bundle, importer.ImportSettings(splats=False))
    arm = result.people["p0"].armature
    scene = bpy.context.scene
    frames = (1, 9, 30)
    want = {}
    for f in frames:
        scene.frame_set(f)
        want[f] = heads(arm)
    fbx = interchange.export_person(arm, tmp_path / "p0.fbx", "FBX")
    bvh = interchange.export_person(arm, tmp_path / "p0.bvh", "BVH")
    assert fbx.stat().st_size > 10_000 and bvh.read_text().startswith("HIERARCHY")
    for path, op in ((bvh, bpy.ops.import_anim.bvh), (fbx, bpy.ops.import_scene.fbx)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.scene.render.fps = 30  # FBX keys are in seconds; the bundle runs at 30 fps
        # frames as written: BVH counts frames; FBX stores seconds and Blender's importer adds 1
        kwargs = {"update_scene_fps": False} if path.suffix == ".bvh" else {"anim_offset": 0.0}
        op(filepath=str(path), **kwargs)
        back = next(o for o in bpy.data.objects if o.type == "ARMATURE")
        if path.suffix == ".fbx":
            assert any(o.type == "MESH" for o in bpy.data.objects)  # the skinned body came along
        scene = bpy.context.scene
        for f in frames:
            scene.frame_set(f)
            assert np.abs(heads(back) - want[f]).max() < 1e-3, (path.suffix, f)
