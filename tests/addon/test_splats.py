"""Standard 3DGS PLY files (another trainer's, no skin weights) import as static splats."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from troupe.addon import axes, datablocks, gsplat, rig
from troupe.core import bundle


def write_trainer_ply(path, n: int = 300, seed: int = 0):
    """A PLY laid out like the reference 3DGS trainer's output (SH degree 3, normals, no skin)."""
    rng = np.random.default_rng(seed)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    rec = np.zeros(n, dtype=[(f, "<f4") for f in names])
    for f in names:
        rec[f] = rng.normal(0, 1, n)
    rec["nx"] = rec["ny"] = rec["nz"] = 0
    for i in range(3):
        rec[f"scale_{i}"] = np.log(rng.uniform(0.01, 0.1, n))
    bundle.write_ply(path, [bundle.PlyElement("vertex", rec)])
    return rec


@pytest.mark.parametrize("up_axis", ["Y_DOWN", "Z_UP"])
def test_3dgs_ply_import(fresh_scene, tmp_path, up_axis):
    rec = write_trainer_ply(tmp_path / "scene.ply")
    obj = gsplat.import_3dgs_ply(tmp_path / "scene.ply", up_axis=up_axis)
    conv = gsplat.UP_AXES[up_axis]
    means = np.stack([rec["x"], rec["y"], rec["z"]], 1)
    quats = np.stack([rec[f"rot_{i}"] for i in range(4)], 1)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mats = np.array([np.array(i.matrix_world) for i in depsgraph.object_instances
                     if i.is_instance and i.parent and i.parent.original == obj])  # fmt: skip
    assert len(mats) == len(rec)
    want_pos = conv.points(means)
    order_got, order_want = np.lexsort(mats[:, :3, 3].T), np.lexsort(want_pos.T)
    mats, want_pos = mats[order_got], want_pos[order_want]
    assert np.abs(mats[:, :3, 3] - want_pos).max() < 1e-5
    frames = conv.orientations(rig.quaternion_to_matrix(quats))[order_want]
    radii = 3.0 * np.exp(np.stack([rec[f"scale_{i}"] for i in range(3)], 1))[order_want]
    assert np.allclose(mats[:, :3, :3], frames * radii[:, None, :], atol=1e-5)
    assert obj.modifiers["Troupe Splats"].node_group.name.startswith(gsplat.DISPLAY_GROUP)
    assert "Troupe Skinning" not in obj.modifiers


def test_point_display_and_threshold(fresh_scene, tmp_path):
    write_trainer_ply(tmp_path / "s.ply", n=50)
    obj = gsplat.import_3dgs_ply(tmp_path / "s.ply", points_threshold=10)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    parts = [i.object for i in depsgraph.object_instances if i.is_instance and i.parent and i.parent.original == obj]
    assert [p.type for p in parts] == ["POINTCLOUD"]  # one point cloud, no ellipsoid instances
    assert len(parts[0].data.points) == 50


def test_bad_ply_creates_nothing(fresh_scene, tmp_path):
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    before = datablocks.all_datablocks()
    with pytest.raises(bundle.BundleError, match="bad.ply"):
        gsplat.import_3dgs_ply(tmp_path / "bad.ply")
    assert datablocks.all_datablocks() == before


def test_sh_dc_and_sigmoid():
    from troupe.addon import splat_math

    assert np.allclose(splat_math.sh_dc_to_rgb(np.zeros((1, 3))), 0.5)
    assert np.allclose(splat_math.sh_dc_to_rgb(np.full((1, 3), 1.0)), 0.5 + 0.28209479)
    assert np.allclose(splat_math.sigmoid(np.array([0.0, 100.0])), [0.5, 1.0])
    assert splat_math.srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.21404, abs=1e-4)
    assert axes.Y_DOWN.points(np.array([0.0, -1.0, 0.0])) == pytest.approx([0, 0, 1])
