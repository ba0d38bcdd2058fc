"""The importer's rig maths without Blender: quaternions, bone layout, bone-space poses, resampling."""

from __future__ import annotations

import bundle_factory
import numpy as np
import pytest

from troupe.addon import axes, rig
from troupe.core import bundle

RNG = np.random.default_rng(7)


def random_rotvecs(shape: tuple[int, ...], max_angle: float = 3.0) -> np.ndarray:
    axis = RNG.normal(size=shape + (3,))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis * RNG.uniform(0, max_angle, shape + (1,))


def test_quaternion_conversions_round_trip():
    r = random_rotvecs((500,))
    r[:3] = [[0, 0, 0], [np.pi, 0, 0], [0, 1e-9, 0]]  # identity, half turn, tiny angle
    m = bundle.axis_angle_to_matrix(r)
    q = rig.matrix_to_quaternion(m)
    assert np.allclose(np.linalg.norm(q, axis=-1), 1.0)
    assert np.allclose(rig.quaternion_to_matrix(q), m, atol=1e-12)
    assert np.allclose(rig.quaternion_to_matrix(rig.axis_angle_to_quaternion(r)), m, atol=1e-12)
    back = rig.quaternion_to_axis_angle(q)
    assert np.allclose(bundle.axis_angle_to_matrix(back), m, atol=1e-9)


def test_make_continuous_keeps_rotations_and_removes_sign_flips():
    q = rig.axis_angle_to_quaternion(random_rotvecs((200, 3), 0.3).cumsum(axis=0) * 0.2)
    flipped = q * np.where(RNG.random((200, 3, 1)) < 0.5, -1.0, 1.0)
    fixed = rig.make_continuous(flipped)
    assert np.allclose(rig.quaternion_to_matrix(fixed), rig.quaternion_to_matrix(q), atol=1e-12)
    assert np.all(np.sum(fixed[1:] * fixed[:-1], axis=-1) >= 0)


def test_slerp_constant_angular_velocity():
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    q0 = rig.axis_angle_to_quaternion(axis * 0.2)
    q1 = rig.axis_angle_to_quaternion(axis * 2.6)
    t = np.linspace(0, 1, 11)
    out = rig.slerp(np.broadcast_to(q0, (11, 4)), np.broadcast_to(q1, (11, 4)), t)
    assert np.allclose(rig.quaternion_to_axis_angle(out), axis * (0.2 + 2.4 * t)[:, None], atol=1e-9)
    # shortest path: -q1 is the same rotation
    assert np.allclose(rig.slerp(q0, -q1, 0.5), out[5], atol=1e-12) or np.allclose(rig.slerp(q0, -q1, 0.5), -out[5])


@pytest.mark.parametrize(("src", "dst"), [(120.0, 30.0), (120.0, 29.97), (30.0, 24.0), (24.0, 60.0)])
def test_resample_follows_the_motion(src, dst):
    """A joint turning at constant speed about a fixed axis, and a linear translation, sampled
    at ``src`` and resampled at ``dst``, match the same motion sampled at ``dst`` directly."""
    duration = 2.0
    axis = np.array([0.0, 0.6, 0.8])

    def motion(fps: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(count) / fps
        rot = np.zeros((count, 2, 3))
        rot[:, 1] = axis * (0.1 + 1.3 * t)[:, None]
        return rot, np.stack([t, 2 * t, -t], 1)

    n_src = int(duration * src) + 1
    rot, trans = motion(src, n_src)
    out_rot, out_trans = rig.resample(rot, trans, src, dst)
    n_dst = int(np.floor((n_src - 1) / src * dst + 1e-9)) + 1
    assert len(out_rot) == len(out_trans) == n_dst
    exp_rot, exp_trans = motion(dst, n_dst)
    assert np.allclose(out_trans, exp_trans, atol=1e-9)
    assert np.allclose(bundle.axis_angle_to_matrix(out_rot), bundle.axis_angle_to_matrix(exp_rot), atol=1e-9)


def test_bone_layout_points_along_limbs():
    heads = axes.Y_UP.points(bundle_factory.rest_joints())
    names = bundle.JOINT_NAMES
    parents = np.array(bundle.SMPLX_PARENTS)
    tails, z_axis, connected = rig.bone_layout(heads, parents, names)
    j = {n: i for i, n in enumerate(names)}
    assert np.allclose(tails[j["left_hip"]], heads[j["left_knee"]])
    assert np.allclose(tails[j["pelvis"]], heads[j["spine1"]])
    assert np.allclose(tails[j["left_wrist"]], heads[j["left_middle1"]])
    assert np.allclose(tails[j["spine3"]], heads[j["neck"]])
    # a leaf continues its parent's direction
    d_tip = tails[j["left_index3"]] - heads[j["left_index3"]]
    d_parent = heads[j["left_index3"]] - heads[j["left_index2"]]
    assert np.allclose(d_tip / np.linalg.norm(d_tip), d_parent / np.linalg.norm(d_parent))
    # the head points up, jaw and eyes forward (the body faces -Y in Blender)
    assert (tails - heads)[j["head"]] @ [0, 0, 1] > 0.99 * np.linalg.norm((tails - heads)[j["head"]])
    for name in ("jaw", "left_eye_smplhf"):
        d = tails[j[name]] - heads[j[name]]
        assert d / np.linalg.norm(d) @ [0, -1, 0] > 0.99
    assert np.all(np.linalg.norm(tails - heads, axis=1) >= rig.MIN_BONE_LENGTH)
    assert connected[j["left_knee"]] and not connected[j["left_hip"]]
    # rolls: every bone's z axis is the forward direction or, for forward-pointing bones, up
    rest = rig.rest_rotations(heads, tails, z_axis)
    assert np.allclose(rest @ np.swapaxes(rest, 1, 2), np.eye(3), atol=1e-12)
    assert rest[j["left_elbow"]][:, 2] @ [0, -1, 0] > 0.99
    assert rest[j["left_foot"]][:, 2] @ [0, 0, 1] > 0.7


def _blender_pose_chain(rest_rot, heads, parents, quats, root_loc):
    """Blender's pose evaluation: pose_j = pose_p @ rest_p^-1 @ rest_j @ basis_j."""
    num_t, num_j = quats.shape[:2]
    rest = np.tile(np.eye(4), (num_j, 1, 1))
    rest[:, :3, :3] = rest_rot
    rest[:, :3, 3] = heads
    pose = np.zeros((num_t, num_j, 4, 4))
    for j in range(num_j):
        basis = np.tile(np.eye(4), (num_t, 1, 1))
        basis[:, :3, :3] = rig.quaternion_to_matrix(quats[:, j])
        if j == 0:
            basis[:, :3, 3] = root_loc
            pose[:, j] = rest[j] @ basis
        else:
            p = parents[j]
            pose[:, j] = pose[:, p] @ np.linalg.inv(rest[p]) @ rest[j] @ basis
    return pose, rest


@pytest.mark.parametrize("world", ["Y_UP", "IDENTITY"])
def test_pose_basis_reproduces_forward_kinematics(world):
    """Keys computed by ``pose_basis`` and evaluated the way Blender does put every bone head on
    the FK joints and every skinning matrix on the bundle's, for a +Y-up world (bundles) and a
    +Z-up one (AMASS files)."""
    world_conv = getattr(axes, world)
    joints = bundle_factory.rest_joints()
    parents = np.array(bundle.SMPLX_PARENTS)
    heads = axes.Y_UP.points(joints)
    tails, z_axis, _ = rig.bone_layout(heads, parents, bundle.JOINT_NAMES)
    rest_rot = rig.rest_rotations(heads, tails, z_axis)
    rotvecs = random_rotvecs((5, 55))
    trans = RNG.normal(0, 1, (5, 3))
    quats, root_loc = rig.pose_basis(rest_rot, joints, rotvecs, trans, axes.Y_UP, world_conv)
    pose, rest = _blender_pose_chain(rest_rot, heads, parents, quats, root_loc)
    fk, skin = bundle.forward_kinematics(joints, parents, rotvecs, trans)
    assert np.abs(pose[..., :3, 3] - world_conv.points(fk)).max() < 1e-9
    # skinning: pose @ rest^-1 maps Blender rest points like C_world G C_rest^-1 maps model points
    deform = pose @ np.linalg.inv(rest)
    expected = world_conv.matrix4 @ skin @ axes.Y_UP.matrix4.T
    assert np.abs(deform - expected).max() < 1e-9
