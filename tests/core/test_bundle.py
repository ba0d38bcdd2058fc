"""The result bundle (core/bundle.py): round trips are exact, and every kind of damage is refused
with a message that names the file and the field."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core import bundle as bd
from core.__main__ import main as core_main
from tests.core.toy_bundle import make_bundle

FRAMES = 12


@pytest.fixture(scope="module")
def toy() -> bd.Bundle:
    return make_bundle(people=2, frames=FRAMES)


@pytest.fixture(scope="module")
def valid_dir(toy, tmp_path_factory):
    return bd.write_bundle(tmp_path_factory.mktemp("bundle") / "b", toy)


@pytest.fixture
def broken(valid_dir, tmp_path):
    """A fresh copy of the valid bundle to damage."""
    return bd.copy_bundle(valid_dir, tmp_path / "b")


def rewrite_npz(path, **changes):
    data = bd.load_npz(path)
    data.update(changes)
    np.savez(path, **data)


def one_problem(root) -> str:
    problems = bd.validate(root)
    assert len(problems) >= 1, "the damaged bundle was accepted"
    return "\n".join(problems)


def test_synth_bundle_validates(synth_scene):
    root = synth_scene / "bundle"
    assert bd.validate(root) == []
    b = bd.read_bundle(root)
    assert b.body_model.standin and b.generator == "troupe synth" and b.frame_count == 12
    for p in b.people:
        assert p.rig.vertices.shape == (10475, 3) and p.rig.weights.shape == (10475, bd.NUM_JOINTS)


def test_round_trip_is_exact(toy, valid_dir):
    back = bd.read_bundle(valid_dir)
    assert back.fps == toy.fps and back.image_size == toy.image_size and back.frame_count == FRAMES
    np.testing.assert_array_equal(back.camera.K, toy.camera.K)
    np.testing.assert_array_equal(back.camera.world_to_cam, toy.camera.world_to_cam)
    assert [p.id for p in back.people] == [p.id for p in toy.people]
    for a, b in zip(back.people, toy.people):
        for field in ("betas", "poses", "trans", "expression", "visibility"):
            np.testing.assert_array_equal(
                getattr(a.motion, field), getattr(b.motion, field).astype(np.float32)
            )
        for field in ("joints", "parents", "vertices", "faces", "weights"):
            np.testing.assert_array_equal(getattr(a.rig, field), getattr(b.rig, field))
        assert a.rig.joint_names == bd.JOINT_NAMES
    meta = json.loads((valid_dir / "bundle.json").read_text())
    assert meta["schema_version"] == bd.SCHEMA_VERSION and meta["generator"] == "troupe tests"


def test_motion_npz_reads_as_amass(valid_dir):
    """Other SMPL-X tools read motion.npz without Troupe (AMASS keys, no pickle)."""
    with np.load(valid_dir / "people" / "p0" / "motion.npz", allow_pickle=False) as z:
        assert z["poses"].shape == (FRAMES, 165) and z["trans"].shape == (FRAMES, 3)
        assert str(z["gender"]) == "neutral" and float(z["mocap_frame_rate"]) == 30.0
        np.testing.assert_array_equal(z["body_pose"], z["poses"][:, 3:66])


def test_every_nth_frame_bundle_gives_amass_readers_the_row_rate(toy, tmp_path):
    """bundle.json keeps the source fps; motion.npz rows come every frame_step frames, so their
    mocap_frame_rate is fps / frame_step and an AMASS reader plays them at the real speed."""
    toy.frame_start, toy.frame_step = 30, 3
    root = bd.write_bundle(tmp_path / "b", toy)
    meta = json.loads((root / "bundle.json").read_text())
    assert (meta["fps"], meta["frame_start"], meta["frame_step"]) == (30.0, 30, 3)
    with np.load(root / "people" / "p0" / "motion.npz", allow_pickle=False) as z:
        assert float(z["mocap_frame_rate"]) == pytest.approx(10.0)
    assert bd.read_bundle(root).people[0].motion.fps == pytest.approx(10.0)


def test_missing_file_is_named(broken):
    (broken / "people" / "p1" / "rig.npz").unlink()
    assert "rig.npz: file is missing" in one_problem(broken)
    (broken / "bundle.json").unlink()
    assert "bundle.json: file is missing" in one_problem(broken)


def test_wrong_shape_is_named(broken):
    path = broken / "people" / "p0" / "motion.npz"
    rewrite_npz(path, poses=np.zeros((FRAMES, 164), np.float32))
    msg = one_problem(broken)
    assert "people/p0/motion.npz: 'poses' has shape (12, 164), expected (12, 165)" in msg


def test_nan_in_motion_is_named(broken):
    path = broken / "people" / "p1" / "motion.npz"
    trans = bd.load_npz(path)["trans"].copy()
    trans[3, 1] = np.nan
    rewrite_npz(path, trans=trans)
    msg = one_problem(broken)
    assert "people/p1/motion.npz: 'trans' contains NaN or infinite values (first at index (3, 1))" in msg


def test_unknown_schema_version_is_refused(broken):
    meta = json.loads((broken / "bundle.json").read_text())
    meta["schema_version"] = "2.0"
    (broken / "bundle.json").write_text(json.dumps(meta))
    msg = one_problem(broken)
    assert "schema_version 2.0 is not supported" in msg and "update Troupe" in msg
    with pytest.raises(bd.BundleError, match="schema_version 2.0"):
        bd.read_bundle(broken)


def test_pickle_inside_npz_is_refused(broken):
    path = broken / "people" / "p0" / "rig.npz"
    data = bd.load_npz(path)
    data["payload"] = np.array([{"run": "code"}], dtype=object)
    np.savez(path, **data)
    msg = one_problem(broken)
    assert "rig.npz: array 'payload' is a pickled Python object" in msg


def test_unlisted_person_folder_is_named(broken):
    shutil.copytree(broken / "people" / "p0", broken / "people" / "stranger")
    assert "people/stranger: folder is not listed in bundle.json people" in one_problem(broken)


def test_fk_of_rig_and_motion_is_world_joints(toy, valid_dir):
    """The contract: world joint j = FK(rig.joints, parents, poses[t]) + trans."""
    p = bd.read_bundle(valid_dir).people[0]
    world = bd.world_joints(p)
    # the root joint moves with trans exactly; its children keep their rest bone lengths
    np.testing.assert_allclose(world[:, 0], p.rig.joints[0] + p.motion.trans, atol=1e-6)
    bone = np.linalg.norm(world[:, 4] - world[:, 1], axis=-1)
    np.testing.assert_allclose(bone, np.linalg.norm(p.rig.joints[4] - p.rig.joints[1]), atol=1e-5)
    # skinning a vertex bound to one joint follows that joint
    _, skin = bd.forward_kinematics(p.rig.joints, p.rig.parents, p.motion.rotvecs, p.motion.trans)
    posed = bd.skin_points(p.rig.vertices, None, p.rig.weights, skin)
    np.testing.assert_allclose(posed, world, atol=1e-5)


def test_splats_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n, degree = 50, 3
    joints = rng.integers(0, bd.NUM_JOINTS, size=(n, bd.SPLAT_SKIN_K)).astype(np.int32)
    weights = rng.random((n, bd.SPLAT_SKIN_K)).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    s = bd.Splats(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        sh=rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32),
        opacity=rng.normal(size=n).astype(np.float32),
        log_scales=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        skin_joints=joints,
        skin_weights=weights,
    )
    bd.write_splats_ply(tmp_path / "s.ply", s)
    back = bd.splats_from_ply(tmp_path / "s.ply")
    assert back.sh_degree == degree and back.count == n
    for field in ("means", "sh", "opacity", "log_scales", "quats", "skin_joints", "skin_weights"):
        np.testing.assert_array_equal(getattr(back, field), getattr(s, field), err_msg=field)


def test_mesh_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    v = 30
    ids, w = bd.dense_to_topk(rng.random((v, bd.NUM_JOINTS)))
    m = bd.Mesh(
        vertices=rng.normal(size=(v, 3)).astype(np.float32),
        faces=rng.integers(0, v, size=(40, 3)).astype(np.int32),
        skin_joints=ids,
        skin_weights=w,
        colors=rng.integers(0, 256, size=(v, 3)).astype(np.uint8),
    )
    bd.write_mesh_ply(tmp_path / "m.ply", m)
    back = bd.mesh_from_ply(tmp_path / "m.ply")
    for field in ("vertices", "faces", "skin_joints", "skin_weights", "colors"):
        np.testing.assert_array_equal(getattr(back, field), getattr(m, field), err_msg=field)


def test_bundle_with_splats_and_mesh_validates(toy, tmp_path):
    rng = np.random.default_rng(2)
    b = make_bundle(people=1, frames=4)
    p = b.people[0]
    ids, w = bd.dense_to_topk(p.rig.weights)
    n = len(p.rig.vertices)
    p.splats = bd.Splats(
        means=p.rig.vertices.copy(), sh=rng.normal(size=(n, 1, 3)).astype(np.float32),
        opacity=np.zeros(n, np.float32), log_scales=np.full((n, 3), -4, np.float32),
        quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), skin_joints=ids, skin_weights=w,
    )  # fmt: skip
    p.mesh = bd.Mesh(
        vertices=p.rig.vertices.copy(), faces=p.rig.faces.copy(), skin_joints=ids, skin_weights=w
    )
    root = bd.write_bundle(tmp_path / "b", b)
    back = bd.read_bundle(root).people[0]
    assert back.splats is not None and back.splats.count == n
    assert back.mesh is not None and len(back.mesh.vertices) == n
    # a truncated PLY is reported, not crashed on
    ply = root / "people" / "p0" / "splats.ply"
    ply.write_bytes(ply.read_bytes()[:-10])
    assert "splats.ply: file ends inside element 'vertex' (truncated)" in one_problem(root)


def test_validate_cli_exit_codes(valid_dir, broken, capsys):
    assert core_main(["validate", str(valid_dir)]) == 0
    assert "valid Troupe bundle" in capsys.readouterr().out
    rewrite_npz(broken / "camera.npz", K=np.zeros((FRAMES, 3, 3)))
    (broken / "people" / "p0" / "motion.npz").unlink()
    assert core_main(["validate", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert "camera.npz: 'K' focal lengths must be positive" in out
    assert "motion.npz: file is missing" in out
