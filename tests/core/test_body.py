"""The body layer: the generated SMPL-X stand-in loads through smplx and BodyModel, and agrees
with the bundle's forward kinematics and skinning."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from core import bundle
from core.body import standin
from core.body.model import BodyModel, BodyModelNotFound, model_filename

GENDERS = ("neutral", "male", "female")
STATURE = {"neutral": 1.70, "male": 1.76, "female": 1.64}


@pytest.fixture(scope="module")
def models(standin_model_dir):
    return {g: BodyModel(standin_model_dir, gender=g) for g in GENDERS}


@pytest.fixture(scope="module")
def raw(standin_model_dir):
    out = {}
    for g in GENDERS:
        with np.load(standin_model_dir / model_filename(g), allow_pickle=False) as z:
            out[g] = {k: z[k] for k in z.files}
    return out


@pytest.mark.parametrize("gender", GENDERS)
def test_smplx_create_loads_the_standin_unchanged(standin_model_dir, gender):
    import smplx
    import torch

    with contextlib.redirect_stdout(io.StringIO()):
        layer = smplx.create(
            str(standin_model_dir / model_filename(gender)), model_type="smplx", gender=gender, ext="npz",
            use_pca=False, flat_hand_mean=True, num_betas=10, num_expression_coeffs=10,
        )  # fmt: skip
    out = layer(return_verts=True)
    assert out.vertices.shape == (1, 10475, 3)
    assert layer.J_regressor.shape == (55, 10475)
    assert out.joints.shape[1] >= 55
    assert layer.faces.shape[1] == 3 and layer.faces.min() >= 0 and layer.faces.max() < 10475
    assert torch.equal(layer.parents, torch.tensor(bundle.SMPLX_PARENTS))
    rest = out.vertices[0].detach().numpy()
    assert np.isfinite(rest).all()
    height = rest[:, 1].max() - rest[:, 1].min()
    assert height == pytest.approx(STATURE[gender], abs=0.01)
    assert rest[:, 1].min() == pytest.approx(standin.FLOOR_Y, abs=1e-3)


@pytest.mark.parametrize("gender", GENDERS)
def test_standin_file_is_plain_numeric_and_marked(raw, gender):
    z = raw[gender]
    for key, arr in z.items():
        assert arr.dtype != object, key
    assert bool(z["troupe_standin"]) and int(z["troupe_standin_version"]) == standin.GENERATOR_VERSION
    assert "not a human body model" in str(z["troupe_standin_note"])
    shapes = {
        "v_template": (10475, 3), "J_regressor": (55, 10475), "kintree_table": (2, 55), "weights": (10475, 55),
        "shapedirs": (10475, 3, 20), "posedirs": (10475, 3, 486), "hands_componentsl": (45, 45),
        "hands_componentsr": (45, 45), "hands_meanl": (45,), "hands_meanr": (45,), "lmk_faces_idx": (51,),
        "lmk_bary_coords": (51, 3), "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
    }  # fmt: skip
    for key, shape in shapes.items():
        assert z[key].shape == shape, key
    assert np.issubdtype(z["f"].dtype, np.integer) and z["f"].shape[1] == 3


@pytest.mark.parametrize("gender", GENDERS)
def test_mesh_is_one_closed_outward_surface(raw, gender):
    import trimesh

    z = raw[gender]
    mesh = trimesh.Trimesh(z["v_template"], z["f"], process=False)
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    assert mesh.euler_number == 2  # one sphere-like surface, no handles
    assert len(mesh.split(only_watertight=False)) == 1
    assert 0.045 < mesh.volume < 0.09  # litres of a ~55-90 kg adult


def test_body_model_from_folder_file_and_environment(standin_model_dir, monkeypatch, tmp_path):
    path = standin_model_dir / "SMPLX_NEUTRAL.npz"
    a = BodyModel(standin_model_dir)
    b = BodyModel(path)
    monkeypatch.setenv("TROUPE_BODY_MODELS", str(standin_model_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    c = BodyModel()
    assert a.path == b.path == c.path == path
    assert a.standin and a.info.standin
    assert a.num_vertices == 10475 and a.num_betas == 10 and a.num_expression == 10


def test_missing_model_names_the_file_the_folders_and_the_licence(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TROUPE_BODY_MODELS", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(BodyModelNotFound) as err:
        BodyModel(empty, gender="neutral")
    msg = str(err.value)
    assert "SMPLX_NEUTRAL.npz" in msg
    for folder in (empty, tmp_path / "env", tmp_path / "config" / "troupe" / "body_models"):
        assert str(folder / "SMPLX_NEUTRAL.npz") in msg
    assert "smpl-x.is.tue.mpg.de" in msg and "licence" in msg


# --------------------------------------------------------------------------------------
# The rig agrees with smplx: forward kinematics and skinning of core.bundle
# --------------------------------------------------------------------------------------


def _random_poses(rng, n):
    """(n,165) poses within joint-limit-sized rotations (~35 degrees per joint, 90 for the root)."""
    poses = rng.normal(0.0, 0.35, (n, 55, 3)).clip(-0.8, 0.8)
    poses[:, 0] = rng.uniform(-np.pi / 2, np.pi / 2, (n, 3))
    return poses.reshape(n, 165)


@pytest.mark.parametrize("gender", GENDERS)
def test_bundle_fk_and_skinning_reproduce_smplx(models, gender):
    bm = models[gender]
    rng = np.random.default_rng(7)
    for _ in range(2):
        betas = rng.uniform(-2, 2, 10)
        poses = _random_poses(rng, 3)
        trans = rng.uniform(-1, 1, (3, 3)) + (0, 1.15, 0)
        verts, joints = bm.forward(betas, poses, trans)
        rig = bm.rig(betas)
        world, transforms = bundle.forward_kinematics(rig.joints, rig.parents, poses, trans)
        np.testing.assert_allclose(world, joints.detach().numpy(), atol=1e-5)
        skinned = bundle.skin_points(rig.vertices, None, rig.weights, transforms)
        np.testing.assert_allclose(skinned, verts.detach().numpy(), atol=1e-5)


def test_standin_transl_stands_the_body_on_the_floor(models):
    bm = models["neutral"]
    verts, _ = bm.forward(np.zeros(10), np.zeros((1, 165)), np.array([[0.0, -standin.FLOOR_Y, 0.0]]))
    assert float(verts[0, :, 1].min()) == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------------------
# Anatomy: joints, named vertices, weights, shape and expression spaces
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gender", GENDERS)
def test_joint_regressor_reproduces_the_designed_joints_locally(raw, gender):
    z = raw[gender]
    reg, verts = z["J_regressor"], z["v_template"]
    joints = standin.designed_joints(gender)
    np.testing.assert_allclose(reg @ verts, joints, atol=1e-6)
    assert (reg >= 0).all()
    np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-9)
    for j in range(55):
        used = verts[reg[j] > 0]
        reach = np.linalg.norm(used - joints[j], axis=1).max()
        limit = 0.05 if j >= 25 else 0.25  # finger joints: within a finger; body joints: local
        assert reach < limit, (bundle.JOINT_NAMES[j], reach)


def test_designed_joints_are_anatomically_placed():
    jt = {n: p for n, p in zip(bundle.JOINT_NAMES, standin.designed_joints("neutral"))}
    floor = standin.FLOOR_Y
    for side, sign in (("left", 1), ("right", -1)):
        chain = [
            jt[f"{side}_{n}"]
            for n in ("collar", "shoulder", "elbow", "wrist", "middle1", "middle2", "middle3")
        ]
        xs = [sign * p[0] for p in chain]
        assert xs == sorted(xs) and xs[0] > 0  # the arm runs outwards from the midline, left = +x
        legs = [jt[f"{side}_{n}"][1] for n in ("hip", "knee", "ankle")]
        assert legs == sorted(legs, reverse=True) and legs[-1] - floor < 0.12
        assert jt[f"{side}_foot"][2] > jt[f"{side}_ankle"][2] + 0.08  # the toes point forward (+z)
        assert jt[f"{side}_thumb3"][2] > jt[f"{side}_index3"][2]  # palms down: thumbs forward
    spine = [jt[n][1] for n in ("pelvis", "spine1", "spine2", "spine3", "neck", "head")]
    assert spine == sorted(spine)
    assert (
        jt["left_eye_smplhf"][1] > jt["head"][1] and jt["left_eye_smplhf"][0] > 0 > jt["right_eye_smplhf"][0]
    )


@pytest.mark.parametrize("gender", GENDERS)
def test_named_smplx_vertices_are_in_their_places(raw, gender):
    from smplx.vertex_ids import vertex_ids

    ids = vertex_ids["smplx"]
    v = raw[gender]["v_template"]
    jt = standin.designed_joints(gender)
    head = v[v[:, 1] > jt[bundle.JOINT_NAMES.index("neck")][1]]
    nose = v[ids["nose"]]
    assert (
        nose[2] == pytest.approx(head[:, 2].max()) and abs(nose[0]) < 0.01
    )  # most forward point of the head
    for side, sign in (("l", 1), ("r", -1)):
        eye, ear = v[ids[f"{side}eye"]], v[ids[f"{side}ear"]]
        assert sign * eye[0] > 0.015 and eye[1] > nose[1] and eye[2] > nose[2] - 0.06
        assert sign * ear[0] > 0.07 and ear[2] < eye[2] - 0.05  # ears at the sides, behind the eyes
        hand = v[
            sign * v[:, 0] > abs(jt[bundle.JOINT_NAMES.index(f"{'left' if sign > 0 else 'right'}_wrist")][0])
        ]
        tips = {f: v[ids[f"{side}{f}"]] for f in ("thumb", "index", "middle", "ring", "pinky")}
        assert sign * tips["middle"][0] == pytest.approx(
            np.abs(hand[:, 0]).max(), abs=0.005
        )  # end of the hand
        for f in ("index", "middle", "ring", "pinky"):
            name = f"{'left' if sign > 0 else 'right'}_{f}3"
            assert (
                sign * (tips[f][0] - jt[bundle.JOINT_NAMES.index(name)][0]) > 0.01
            )  # beyond the last knuckle
        zs = [tips[f][2] for f in ("thumb", "index", "middle", "ring", "pinky")]
        assert zs == sorted(zs, reverse=True)  # thumb forward, then index ... pinky
    floor = v[:, 1].min()
    for side, sign in (("L", 1), ("R", -1)):
        big, small, heel = v[ids[f"{side}BigToe"]], v[ids[f"{side}SmallToe"]], v[ids[f"{side}Heel"]]
        assert heel[2] < big[2] - 0.2 and heel[2] < small[2] - 0.15  # heels behind the toes
        assert max(big[1], small[1], heel[1]) - floor < 0.04  # all near the ground
        assert 0 < sign * big[0] < sign * small[0]  # big toe on the inside, left foot at +x


@pytest.mark.parametrize("gender", GENDERS)
def test_skin_weights_are_local_smooth_and_follow_the_bones(raw, gender):
    z = raw[gender]
    w, v, f = z["weights"], z["v_template"], z["f"]
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0)
    assert ((w > 0).sum(axis=1) <= 4).all()
    assert (w[:, [23, 24]] == 0).all()  # no eyeballs to move
    jt = standin.designed_joints(gender)
    start, end = standin.bone_segments(standin.skeleton(standin.proportions(gender)))
    # the middle of each long bone belongs to that bone
    for name in (
        "left_hip",
        "right_knee",
        "left_shoulder",
        "right_elbow",
        "spine1",
        "spine2",
        "head",
        "left_ankle",
    ):
        j = bundle.JOINT_NAMES.index(name)
        axis = end[j] - start[j]
        t = (v - start[j]) @ axis / (axis @ axis)
        radial = np.linalg.norm(v - start[j] - t[:, None] * axis, axis=1)
        near = (np.abs(t - 0.5) < 0.15) & (radial < (0.2 if name.startswith("spine") else 0.1))
        assert near.sum() > 5 and (w[near].argmax(axis=1) == j).mean() > 0.9, name  # dominated by it
        assert np.median(w[near, j]) > (0.5 if name.startswith("spine") else 0.8), name
    # smooth: across an edge the weights change gradually (sharper on the short finger bones)
    jump = np.abs(w[f[:, 0]] - w[f[:, 1]]).sum(axis=1)
    hand = np.abs(v[f[:, 0], 0]) > abs(jt[bundle.JOINT_NAMES.index("left_wrist"), 0]) - 0.01
    assert np.percentile(jump[~hand], 99) < 0.6 and np.percentile(jump[hand], 90) < 1.0
    # blended across joints: around the knee both thigh and shin bones have weight
    knee = jt[bundle.JOINT_NAMES.index("left_knee")]
    ring = np.abs(v[:, 1] - knee[1]) < 0.01
    ring &= np.linalg.norm(v[:, [0, 2]] - knee[[0, 2]], axis=1) < 0.1
    assert ring.any() and (w[ring][:, [1, 4]].min(axis=1) > 0.1).mean() > 0.5


def _winding_number(points, verts, faces):
    """Generalised winding number of a closed mesh at points (N,3): 1 inside, 0 outside."""
    a = verts[faces[:, 0]][None] - points[:, None]
    b = verts[faces[:, 1]][None] - points[:, None]
    c = verts[faces[:, 2]][None] - points[:, None]
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    det = np.einsum("nfi,nfi->nf", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("nfi,nfi->nf", a, b) * lc + np.einsum("nfi,nfi->nf", b, c) * la
    den += np.einsum("nfi,nfi->nf", c, a) * lb
    return np.arctan2(det, den).sum(axis=1) / (2 * np.pi)


def test_betas_move_stature_monotonically_and_joints_follow(models, raw):
    bm = models["neutral"]
    statures = []
    for b0 in (-3, -2, -1, 0, 1, 2, 3):
        rest = bm.rest(np.array([b0] + [0] * 9, float))
        statures.append(rest.vertices[:, 1].max() - rest.vertices[:, 1].min())
    assert np.all(np.diff(statures) > 0.03)
    assert statures[-1] - statures[3] == pytest.approx(0.15, abs=0.03)  # +3 sd ~ +15 cm
    base = bm.rest(np.zeros(10))
    tall = bm.rest(np.array([2.0] + [0] * 9))
    ratio = (tall.joints[:, 1] - standin.FLOOR_Y) / (base.joints[:, 1] - standin.FLOOR_Y)
    np.testing.assert_allclose(ratio, ratio.mean(), atol=1e-6)  # every joint scales with the body
    rng = np.random.default_rng(3)
    f = raw["neutral"]["f"]
    for _ in range(3):
        rest = bm.rest(rng.uniform(-2, 2, 10))
        inside = _winding_number(rest.joints[:25], rest.vertices, f)
        assert (inside > 0.5).all(), np.array(bundle.JOINT_NAMES[:25])[inside <= 0.5]
        height = rest.vertices[:, 1].max() - rest.vertices[:, 1].min()
        assert 1.45 < height < 1.95


def test_shape_components_mean_what_the_docstring_says(models):
    bm = models["neutral"]
    base = bm.rest(np.zeros(10))
    j = {n: i for i, n in enumerate(bundle.JOINT_NAMES)}

    def shaped(k):
        b = np.zeros(10)
        b[k] = 1.0
        return bm.rest(b)

    assert (
        shaped(2).joints[j["left_shoulder"], 0] - base.joints[j["left_shoulder"], 0] > 0.01
    )  # shoulder width
    assert shaped(3).joints[j["left_hip"], 0] - base.joints[j["left_hip"], 0] > 0.01  # hip width
    assert shaped(4).joints[j["left_hip"], 1] - base.joints[j["left_hip"], 1] > 0.015  # leg length
    assert shaped(5).joints[j["left_wrist"], 0] - base.joints[j["left_wrist"], 0] > 0.02  # arm length
    head = base.vertices[:, 1] > base.joints[j["neck"], 1] + 0.05
    assert np.ptp(shaped(6).vertices[head, 1]) > 1.04 * np.ptp(base.vertices[head, 1])  # head size
    girth = shaped(1).vertices - base.vertices
    waist = np.abs(base.vertices[:, 1] - base.joints[j["spine1"], 1]) < 0.03
    radial = base.vertices[waist][:, [0, 2]] - base.joints[j["spine1"], [0, 2]]
    assert (np.einsum("ij,ij->i", girth[waist][:, [0, 2]], radial) > 0).mean() > 0.95  # girth grows outwards
    dirs = bm.layer.shapedirs.detach().numpy().reshape(-1, 10)
    cos = (dirs.T @ dirs) / np.outer(np.linalg.norm(dirs, axis=0), np.linalg.norm(dirs, axis=0))
    assert np.abs(cos - np.eye(10)).max() < 0.5  # roughly decorrelated


def test_expressions_move_only_the_face_by_millimetres(models):
    bm = models["neutral"]
    expr = bm.layer.expr_dirs.detach().numpy()  # (V,3,10)
    v = bm.layer.v_template.detach().numpy()
    head = bm.rest(np.zeros(10)).joints[bundle.JOINT_NAMES.index("head")]
    moved = np.abs(expr).max(axis=(1, 2)) > 1e-5
    assert moved.sum() > 50
    assert (v[moved, 1] > head[1] - 0.1).all() and (v[moved, 2] > head[2]).all()  # front of the head, chin up
    per_component = np.abs(expr).max(axis=(0, 1))
    assert ((per_component > 0.0005) & (per_component < 0.01)).all()


def test_hand_pca_is_orthonormal_with_a_relaxed_mean(raw):
    z = raw["neutral"]
    for side in "lr":
        comps = z[f"hands_components{side}"]
        np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-10)
        mean = z[f"hands_mean{side}"].reshape(15, 3)
        angle = np.linalg.norm(mean, axis=1)
        assert (angle > 0.02).all() and (angle < 0.6).all()
    mirror = np.tile([1.0, -1.0, -1.0], 15)
    np.testing.assert_allclose(z["hands_componentsr"], z["hands_componentsl"] * mirror)


def test_relaxed_hand_mean_curls_the_fingers_towards_the_palm(standin_model_dir):
    import smplx

    with contextlib.redirect_stdout(io.StringIO()):
        layer = smplx.create(
            str(standin_model_dir / "SMPLX_NEUTRAL.npz"), model_type="smplx", ext="npz", use_pca=False,
            flat_hand_mean=False,
        )  # fmt: skip
    from smplx.vertex_ids import vertex_ids

    v = layer(return_verts=True).vertices[0].detach().numpy()
    rest = layer.v_template.detach().numpy()
    for tip in ("lindex", "lmiddle", "rring", "rpinky"):
        i = vertex_ids["smplx"][tip]
        assert v[i, 1] < rest[i, 1] - 0.01  # palms face down: curled fingertips drop


def test_face_landmarks_sit_on_the_face(raw):
    z = raw["neutral"]
    v, f = z["v_template"], z["f"]
    jt = standin.designed_joints("neutral")
    head = jt[bundle.JOINT_NAMES.index("head")]
    for fid, bary in ((z["lmk_faces_idx"], z["lmk_bary_coords"]),
                      (z["dynamic_lmk_faces_idx"].ravel(), z["dynamic_lmk_bary_coords"].reshape(-1, 3))):  # fmt: skip
        assert fid.min() >= 0 and fid.max() < len(f)
        assert (bary >= 0).all() and np.allclose(bary.sum(axis=1), 1.0)
        pts = np.einsum("nk,nki->ni", bary, v[f[fid]])
        assert (np.abs(pts[:, 0]) < 0.1).all() and (pts[:, 1] > head[1] - 0.1).all()
    pts = np.einsum("nk,nki->ni", z["lmk_bary_coords"], v[f[z["lmk_faces_idx"]]])
    assert (pts[:, 2] > head[2] + 0.05).all()  # the 51 static landmarks face forward
    brows, mouth = pts[:10], pts[31:]
    assert brows[:, 1].min() > mouth[:, 1].max() + 0.04
    assert pts[:5, 0].max() < 0 < pts[5:10, 0].min()  # subject's right brow first (-x)
    for group in (slice(0, 10), slice(14, 19)):  # brows, nose base: from the subject's right to left
        assert (np.diff(pts[group, 0]) > 0).all()
    for eye in (pts[19:25], pts[25:31]):  # corner, top lid, corner, bottom lid (as seen from the front)
        assert eye[0, 0] < eye[1, 0] < eye[2, 0] < eye[3, 0] and min(eye[1, 1], eye[2, 1]) > max(
            eye[4, 1], eye[5, 1]
        )
    assert pts[31, 0] < 0 < pts[37, 0] and pts[34, 1] > pts[40, 1]  # lip corners; upper lip above lower


# --------------------------------------------------------------------------------------
# Generator: cache, command line, determinism
# --------------------------------------------------------------------------------------


def test_ensure_standin_regenerates_only_stale_files(standin_model_dir, tmp_path, monkeypatch):
    import shutil

    for g in GENDERS:
        shutil.copy(standin_model_dir / model_filename(g), tmp_path / model_filename(g))
    calls = []
    monkeypatch.setattr(standin, "write_standin", lambda folder, genders, seed=0: calls.append(genders))
    assert standin.ensure_standin(tmp_path) == tmp_path
    assert calls == []
    with np.load(tmp_path / "SMPLX_MALE.npz", allow_pickle=False) as zf:
        arrays = {k: zf[k] for k in zf.files}
    arrays["troupe_standin_version"] = np.array(standin.GENERATOR_VERSION - 1)
    np.savez(tmp_path / "SMPLX_MALE.npz", **arrays)
    (tmp_path / "SMPLX_FEMALE.npz").unlink()
    standin.ensure_standin(tmp_path)
    assert calls == [("male", "female")]


def test_cli_rejects_unknown_genders(capsys, tmp_path):
    from core.__main__ import main

    assert main(["standin", "--out", str(tmp_path), "--genders", "neutral,robot"]) == 2
    assert "robot" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_generation_is_deterministic(raw):
    fresh = standin.generate("female")
    for key, arr in raw["female"].items():
        np.testing.assert_array_equal(fresh[key], arr, err_msg=key)
