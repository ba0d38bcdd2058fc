"""Avatar model: torch FK/LBS against core.bundle, rotations, surface initialisation, colours, plate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import bundle
from core.avatars import model as M
from core.avatars.plate import Plates, dilate, is_static
from core.avatars.raster import quat_to_rotmat
from core.avatars.synthetic import PART_COLORS, make_scene, mannequin_rig


def _random_motion(rng: np.random.Generator, t: int = 3):  # type: ignore[no-untyped-def]
    joints = rng.normal(size=(bundle.NUM_JOINTS, 3)) * 0.3
    rotvecs = rng.normal(size=(t, bundle.NUM_JOINTS, 3)) * 0.6
    trans = rng.normal(size=(t, 3))
    return joints, rotvecs, trans


def test_forward_kinematics_matches_bundle_batched_over_people_and_frames() -> None:
    rng = np.random.default_rng(0)
    parents = np.asarray(bundle.SMPLX_PARENTS)
    people = [_random_motion(rng) for _ in range(2)]
    joints = torch.tensor(np.stack([p[0] for p in people]))[:, None]  # [P,1,J,3]
    rot = torch.tensor(np.stack([p[1] for p in people]))  # [P,T,J,3]
    trans = torch.tensor(np.stack([p[2] for p in people]))  # [P,T,3]
    wj, skin = M.forward_kinematics(joints, parents, rot, trans)
    for i, (j, r, t) in enumerate(people):
        ref_j, ref_skin = bundle.forward_kinematics(j, parents, r, t)
        assert np.allclose(wj[i].numpy(), ref_j, atol=1e-10)
        assert np.allclose(skin[i].numpy(), ref_skin, atol=1e-10)


def test_skinning_matches_skin_points_and_turns_orientations_with_the_joints() -> None:
    rng = np.random.default_rng(1)
    joints, rot, trans = _random_motion(rng)
    _, skin = bundle.forward_kinematics(joints, bundle.SMPLX_PARENTS, rot, trans)
    n = 20
    pts = rng.normal(size=(n, 3))
    ids = rng.integers(0, bundle.NUM_JOINTS, size=(n, 4))
    w = rng.random((n, 4))
    w /= w.sum(1, keepdims=True)
    quats = torch.tensor(rng.normal(size=(n, 4)))
    posed, _, _ = M.skin_gaussians(
        torch.tensor(pts), quats, torch.tensor(ids), torch.tensor(w), torch.tensor(skin)
    )
    assert np.allclose(posed.numpy(), bundle.skin_points(pts, ids, w, skin), atol=1e-10)
    # Bound to one joint, a Gaussian turns rigidly: posed covariance = R cov R^T.
    one = np.zeros((n, 4), np.int64) + 7
    w1 = np.tile([1.0, 0, 0, 0], (n, 1))
    r_joint = skin[:, 7, :3, :3]
    _, q_posed, blend = M.skin_gaussians(
        torch.tensor(pts), quats, torch.tensor(one), torch.tensor(w1), torch.tensor(skin)
    )
    assert torch.allclose(quat_to_rotmat(blend), torch.tensor(r_joint)[:, None].expand(-1, n, -1, -1), atol=1e-10)
    expect = np.einsum("tab,nbc->tnac", r_joint, quat_to_rotmat(quats).numpy())
    assert np.allclose(quat_to_rotmat(q_posed).numpy(), expect, atol=1e-10)


def test_rotation_conversions_round_trip_including_half_turns() -> None:
    rng = np.random.default_rng(2)
    rv = rng.normal(size=(500, 3)) * 2.0
    rv[:3] = [[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi]]
    r = M.axis_angle_to_matrix(torch.tensor(rv))
    assert np.allclose(r.numpy(), bundle.axis_angle_to_matrix(rv), atol=1e-12)
    q = M.matrix_to_quat(r)
    assert torch.allclose(quat_to_rotmat(q), r, atol=1e-10)
    v = torch.tensor(rng.normal(size=(500, 3)))
    assert torch.allclose(M.quat_rotate(q, v), (r @ v[..., None])[..., 0], atol=1e-10)
    # Rodrigues has finite gradients at the zero rotation (the rest pose).
    z = torch.zeros(1, 3, requires_grad=True)
    M.axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_surface_samples_lie_flat_on_the_mesh_with_normalised_skin() -> None:
    rig, _ = mannequin_rig()
    s = M.sample_surface(rig, 2000, np.random.default_rng(0), flatness=0.2)
    assert s.points.shape == (2000, 3) and s.skin_joints.shape == (2000, bundle.SPLAT_SKIN_K)
    assert np.allclose(s.skin_weights.sum(1), 1.0)
    # The splat's local z axis is the surface normal and the normal scale is the smallest.
    z_axis = quat_to_rotmat(torch.tensor(s.quats)).numpy()[:, :, 2]
    assert np.allclose(np.abs(np.sum(z_axis * s.normals, 1)), 1.0, atol=1e-6)
    assert np.allclose(s.log_scales[:, 2] - s.log_scales[:, 0], np.log(0.2))
    # Points sit on the mesh: each within the bounding box of the rest vertices, close to a vertex.
    from scipy.spatial import cKDTree

    d, _ = cKDTree(rig.vertices).query(s.points)
    assert d.max() < 0.06
    # Skin of a point on the left forearm is dominated by the left elbow joint (18).
    ids, w = M.nearest_vertex_skin(rig, np.array([[0.57, 1.42, 0.0]]))
    assert ids[0, 0] == 18 and w[0, 0] > 0.5


def test_colours_are_projected_from_the_frames_where_the_person_is_seen() -> None:
    scene = make_scene(people=1, frames=3, width=96, height=72)
    person = scene.motion.people[0]
    s = M.sample_surface(person.rig, 3000, np.random.default_rng(0))
    t = [0, 1, 2]
    _, skin = bundle.forward_kinematics(person.rig.joints, person.rig.parents, person.motion.rotvecs[t],
                                        person.motion.trans[t])  # fmt: skip
    pts = bundle.skin_points(s.points, s.skin_joints, s.skin_weights, skin)
    rot = np.einsum("nk,tnkab->tnab", s.skin_weights, skin[:, s.skin_joints, :3, :3])
    nrm = np.einsum("tnab,nb->tna", rot, s.normals)
    col, seen = M.project_colors(pts, nrm, scene.frames, scene.labels == 1, scene.motion.camera.K,
                                 scene.motion.camera.world_to_cam)  # fmt: skip
    assert seen.mean() > 0.3  # the front half of the body
    # Points on the torso front (z > 0 at chest height) are the shirt's colour, shaded.
    chest = (seen > 0) & (s.points[:, 1] > 1.1) & (s.points[:, 1] < 1.3) & (s.points[:, 2] > 0.04)
    shirt = np.array(PART_COLORS[0]["torso"]) / 255.0
    ratio = col[chest] / shirt
    assert chest.sum() > 10
    assert np.median(ratio[:, 0]) == pytest.approx(np.median(ratio[:, 1]), abs=0.15)  # same hue
    assert 0.5 < np.median(ratio[:, 0]) <= 1.05
    assert np.all(col[seen == 0] == 0.5)  # unseen points get the default grey


def test_plate_recovers_the_static_background_behind_moving_people() -> None:
    scene = make_scene(people=2, frames=12, width=96, height=72)
    assert is_static(scene.motion.camera)
    frames = torch.as_tensor(scene.frames)
    occupied = dilate(torch.as_tensor(scene.labels > 0), 1)
    assert occupied.sum() > (scene.labels > 0).sum()  # grown by a pixel
    bg = torch.as_tensor(scene.background).float() / 255
    everywhere = occupied.all(0)
    inside = occupied & ~dilate(everywhere[None], 2)  # covered now, free in some other frame
    all_t = torch.arange(12)
    for static, tol in ((True, 2.5 / 255), (False, 40 / 255)):  # median over time / inpainting
        plates = Plates(frames, occupied, static=static).get(all_t)
        assert torch.equal(plates[~occupied], frames[~occupied].float() / 255)
        err = (plates - bg).abs().amax(-1)
        assert err[inside].median() <= tol, (static, float(err[inside].median()))
