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
