"""The motion stage: SMPL-X posing, priors, geometry helpers, init adapters, and the whole fit
on a small synthetic scene checked against its ground truth with ``core.evaluate``."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core import bundle as bd
from core import keypoints as kp
from core.motion import camera, fit, init, priors, solve
from core.motion.body import BodyOutput, SparseBody
from core.motion.inputs import intrinsics, read_synth
from core.pipeline import JobDir, JobError, RunConfig, StageContext

SCENE = {"people": 2, "frames": 24, "size": (480, 270), "seed": 5}
# Fast settings for CPU tests (the defaults are the benchmark's).
TEST_FIT = {"iters_rigid": 20, "iters_limbs": 20, "iters_heading": 40, "iters_pose": 300, "iters_world": 60}


@pytest.fixture(scope="module")
def model(standin_model_dir):
    from core.body.model import BodyModel

    return BodyModel(standin_model_dir)


@pytest.fixture(scope="module")
def scene(model, tmp_path_factory) -> Path:
    from core.synth.generate import generate
    from core.synth.scene import SynthConfig

    out = tmp_path_factory.mktemp("motion") / "scene"
    generate(SynthConfig(**SCENE), out, model)
    return out


def scene_observations(folder: Path) -> tuple[fit.Observations, object]:
    """The synthetic scene's keypoints (2 px noise, a tenth dropped) and masks, camera frame."""
    inp = read_synth(folder, noise_px=2.0, drop=0.1, seed=1)
    t = inp.num_frames
    obs = fit.Observations(
        inp.keypoints, intrinsics(inp.image_size, inp.focal_px, t), np.tile(np.eye(4), (t, 1, 1)), inp.image_size,
        inp.labels, inp.label_scale,
    )  # fmt: skip
    return obs, inp


def fit_scene(model, folder: Path, cfg: fit.FitConfig, **kwargs) -> tuple[bd.Bundle, solve.MotionResult]:
    obs, inp = scene_observations(folder)
    res = solve.fit_motion(model, obs, cfg, **kwargs)
    from core.motion.stage import make_bundle

    return make_bundle(inp, res.state, obs.K, model, video=None, extra={}), res


# ---------------------------------------------------------------------------------------------
# body, priors, geometry
# ---------------------------------------------------------------------------------------------


def test_nearest_distance_matches_cdist_min():
    """The silhouette's coverage half takes each mask sample's distance to the nearest projected
    body point: the same values and gradients as the plain min over all pairs."""
    g = torch.Generator().manual_seed(0)
    points = torch.rand(6, 64, 2, generator=g) * 300
    targets = (torch.rand(6, 384, 2, generator=g) * 300).requires_grad_(True)
    ref = torch.cdist(points, targets, compute_mode="donot_use_mm_for_euclid_dist").min(-1).values
    (grad_ref,) = torch.autograd.grad(ref.sum(), targets)
    got = fit.nearest_distance(points, targets)
    (grad,) = torch.autograd.grad(got.sum(), targets)
    assert torch.allclose(got, ref, atol=1e-4) and torch.allclose(grad, grad_ref, atol=1e-5)
    assert grad.abs().sum(-1).gt(0).sum() <= 6 * 64  # only the nearest targets get a gradient
    # within an optimiser step the world stage keeps the nearest targets found at its start
    idx = fit.nearest_index(points, targets)
    moved = targets.detach() + torch.rand(targets.shape, generator=g) * 20
    kept = fit.nearest_distance(points, moved, idx)
    assert torch.allclose(kept, (points - moved.gather(1, idx[..., None].expand(-1, -1, 2))).norm(dim=-1))
    assert (kept >= fit.nearest_distance(points, moved) - 1e-4).all()  # never nearer than the true nearest


def test_kinematic_chain_matches_smplx():
    """The level-by-level chain poses joints and gives the skinning transforms exactly as smplx's
    joint-by-joint ``batch_rigid_transform``, gradients included (an SMPL-X-like tree and a
    deeper one whose levels are uneven)."""
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    from core.motion.body import KinematicChain

    g = torch.Generator().manual_seed(0)
    smplx_body = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
    for parents in (smplx_body, [-1, 0, 1, 2, 3, 0, 5, 1, 7, 8]):
        n = len(parents)
        rot = batch_rodrigues(torch.randn(4 * n, 3, generator=g) * 0.6).reshape(4, n, 3, 3).requires_grad_(True)
        rest = torch.randn(4, n, 3, generator=g)
        ref_pos, ref_rel = batch_rigid_transform(rot, rest, torch.as_tensor(parents))
        pos, rel = KinematicChain(parents)(rot, rest)
        assert torch.allclose(pos, ref_pos, atol=1e-6) and torch.allclose(rel, ref_rel[:, :, :3], atol=1e-6)
        weights = torch.randn(4, n, 3, 4, generator=g)
        (grad_ref,) = torch.autograd.grad((ref_pos.sum() + (ref_rel[:, :, :3] * weights).sum()), rot)
        (grad,) = torch.autograd.grad((pos.sum() + (rel * weights).sum()), rot)
        assert torch.allclose(grad, grad_ref, atol=1e-5)


def test_sparse_body_matches_body_model(model):
    from smplx.lbs import batch_rodrigues

    from core.motion.body import FOOT_VERTICES, SparseBody

    body = SparseBody(model)
    g = torch.Generator().manual_seed(0)
    betas = torch.randn(3, 10, generator=g)
    pose = torch.randn(3, 66, generator=g) * 0.4
    transl = torch.randn(3, 3, generator=g)
    full = torch.zeros(3, 165)
    full[:, :66] = pose
    verts, joints = model.forward(betas, full, transl)
    out = body(betas, batch_rodrigues(pose[:, :3]), pose[:, 3:], transl)
    assert torch.allclose(out.joints, joints, atol=1e-5)
    assert torch.allclose(out.coco, kp.coco17_from_smplx(verts, joints), atol=1e-5)
    # the foot points are the soles under the foot vertices: straight below them at rest (feet
    # flat), on the rest body's lowest height, and carried along with them when posed
    rest = body(torch.zeros(1, 10), torch.eye(3)[None], torch.zeros(1, 63), torch.zeros(1, 3))
    rest_verts, _ = model.forward(torch.zeros(1, 10), torch.zeros(1, 165), torch.zeros(1, 3))
    foot = rest_verts[:, list(FOOT_VERTICES)]
    clearance = foot[..., 1] - rest_verts[..., 1].min()
    assert clearance.min() > 0.005
    assert torch.allclose(rest.feet[..., [0, 2]], foot[..., [0, 2]], atol=1e-5)
    assert torch.allclose(rest.feet[..., 1], rest_verts[..., 1].min().expand(1, 6), atol=1e-5)
    drop = torch.linalg.vector_norm(out.feet - verts[:, list(FOOT_VERTICES)], dim=-1)
    assert torch.allclose(drop, clearance.expand_as(drop), rtol=0.15), (drop, clearance)
    assert torch.allclose(out.surface, verts[:, body.surface_ids], atol=1e-5)
    # the surface is optional and the rest is unchanged without it
    lean = body(betas, batch_rodrigues(pose[:, :3]), pose[:, 3:], transl, surface=False)
    assert lean.surface.shape[1] == 0 and torch.allclose(lean.coco, out.coco)


def test_joint_limits_are_mirrored_and_stop_a_backward_knee():
    table = priors.joint_limit_table()
    names = bd.JOINT_NAMES
    lk, rk = names.index("left_knee"), names.index("right_knee")
    assert table[lk, 0, 0] < 0.0 < 2.0 < table[lk, 0, 1]
    np.testing.assert_allclose(table[rk, 0], table[lk, 0])
    np.testing.assert_allclose(table[rk, 1], -table[lk, 1, ::-1])
    p = priors.Priors()
    pose = torch.zeros(2, 63)
    pose[0, (lk - 1) * 3] = 1.5  # a bent knee: free
    pose[1, (lk - 1) * 3] = -1.0  # a knee bent backwards: penalised
    cost = p.joint_limits(pose)
    assert cost[0] == 0 and cost[1] > 0.5


def test_rigid_transform_of_bodies_moves_joints_rigidly(model):
    from core.motion.body import SparseBody

    body = SparseBody(model)
    rng = np.random.default_rng(0)
    st = fit.FitState(
        betas=rng.normal(size=(2, 10)) * 0.5,
        global_rot=np.stack([np.stack([fit.facing_rotation(a) for a in rng.uniform(0, 6, 3)]) for _ in range(2)]),
        body_pose=rng.normal(size=(2, 3, 63)) * 0.2,
        transl=rng.normal(size=(2, 3, 3)),
        world_to_cam=np.tile(np.eye(4), (3, 1, 1)),
    )
    joints, _, _ = solve.body_points(body, st, "cpu")
    g_rot = fit.facing_rotation(0.7)
    g_t = np.array([0.3, -1.0, 2.0])
    rest_pelvis = body.rest_joints(torch.as_tensor(st.betas, dtype=torch.float32))[:, 0].numpy()
    rot, tr = fit.rigid_transform_bodies(rest_pelvis.astype(np.float64), st.global_rot, st.transl, g_rot, g_t)
    moved, _, _ = solve.body_points(body, replace(st, global_rot=rot, transl=tr), "cpu")
    np.testing.assert_allclose(moved, joints @ g_rot.T + g_t, atol=2e-5)


def test_viterbi_prefers_consistent_states():
    cost = np.array([[0.0, 1.0], [0.6, 0.5], [0.0, 1.0]])  # frame 1 slightly prefers state 1
    switch = np.full((2, 2, 2), 1.0)
    switch[:, 0, 0] = switch[:, 1, 1] = 0.0
    assert viterbi_states(cost, switch) == [0, 0, 0]
    assert viterbi_states(cost, switch * 0) == [0, 1, 0]


def viterbi_states(cost, switch):
    return fit.viterbi(cost, switch).tolist()


def test_path_scale_recovers_the_metric_scale():
    # a person walking steadily, a camera sliding sideways; the solved path is 1/4 of metric
    num_t = 60
    t = np.arange(num_t)
    person_world = np.stack([0.04 * t, np.zeros(num_t), 5.0 + 0.01 * t], -1)[None]
    centres = np.stack([np.sin(t / 10.0) * 2.0, np.full(num_t, 1.5), np.zeros(num_t)], -1)
    path = np.tile(np.eye(4), (num_t, 1, 1))
    path[:, :3, 3] = centres / 4.0
    pelvis_cam = person_world - centres[None]  # cameras unrotated
    s = solve.path_scale(pelvis_cam, np.ones((1, num_t)), path)
    assert s == pytest.approx(4.0, rel=1e-3)


def test_mask_sampling_survives_points_far_off_the_image():
    # a broken camera path can put bodies at the camera: huge or NaN pixel positions must read the
    # border, not crash the process (grid_sample's CPU backward segfaulted on them)
    from types import SimpleNamespace

    fake = SimpleNamespace(obs=SimpleNamespace(label_scale=0.25))
    grid = torch.arange(12.0).reshape(1, 1, 3, 4)
    uv = torch.tensor([[[[1e12, 0.0], [float("nan"), 1.0], [-1e30, -1e30], [6.0, 6.0]]]], requires_grad=True)
    out = fit.Fitter._sample(fake, grid, uv)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(uv.grad).all()
    assert out[0, 0, 0].item() == pytest.approx(3.0, abs=1e-4)  # the right border of the top row
    assert out[0, 0, 2].item() == pytest.approx(0.0, abs=1e-4)  # the top-left corner


def test_planted_feet_are_read_from_still_ankles():
    # one person, 40 frames, 3 px keypoint noise: the left ankle stands (stance), the right one swings
    # forward 12 px a frame (a walk at 7 m seen at 640 px), then both stand; a dropped stretch says nothing
    rng = np.random.default_rng(0)
    num_t = 40
    kps = np.zeros((1, num_t, 17, 3))
    kps[..., 2] = 1.0
    kps[0, :, :, 0] = 300.0
    kps[0, :, :, 1] = np.linspace(120, 260, 17)[None]  # a figure about 140 px tall
    kps[0, :20, 16, 0] = 240.0 + 12.0 * np.arange(20)  # right ankle swinging
    kps[0, 20:, 16, 0] = kps[0, 19, 16, 0]
    kps[..., :2] += rng.normal(0, 3.0, kps[..., :2].shape)
    kps[0, 30:36, 15, 2] = 0.0  # the left ankle unseen for 6 frames
    still, seen = fit.still_points(kps[:, :, 15:17], fit.person_scale(kps, 0.2), 0.2, 0.008)
    assert still.shape == seen.shape == (1, num_t, 2)
    left, right = still[0, :, 0], still[0, :, 1]
    assert left[3:28].mean() > 0.6  # standing foot: planted, mostly, through the noise
    assert right[3:17].max() < 0.05  # swinging foot: not planted
    assert right[25:].mean() > 0.6  # and planted once it stops
    assert not seen[0, 31:35, 0].any() and seen[0, 31:35, 1].all()


def test_planted_feet_take_the_camera_motion_out():
    # a camera sliding sideways 5 cm a frame past a foot planted 7 m away: its keypoint sweeps across
    # the image, which is the camera's doing, so the foot is planted; the other foot walks along with
    # the camera and stays put in the image, so it is not
    num_t = 30
    K = np.tile(intrinsics((640, 360), 600.0, 1), (num_t, 1, 1))
    w2c = np.tile(np.eye(4), (num_t, 1, 1))
    w2c[:, 0, 3] = -0.05 * np.arange(num_t)  # camera centre at x = 0.05 t
    ankles = np.zeros((1, num_t, 2, 3))
    ankles[0, :, 0] = [0.0, 1.0, 7.0]
    ankles[0, :, 1, 0] = 0.2 + 0.05 * np.arange(num_t)
    ankles[0, :, 1, 1:] = [1.0, 7.0]
    kps = np.zeros((1, num_t, 17, 3))
    kps[..., 2] = 1.0
    kps[0, :, :, :2] = [320.0, 200.0]
    kps[0, :, 0, 1], kps[0, :, 11, 1] = 60.0, 150.0  # a figure 140 px tall
    cam = np.einsum("tab,ptsb->ptsa", w2c[:, :3, :3], ankles) + w2c[None, :, None, :3, 3]
    kps[0, :, 15:17, :2] = 600.0 * cam[0, :, :, :2] / cam[0, :, :, 2:] + [320.0, 180.0]
    scale = fit.person_scale(kps, 0.2)
    still, seen = fit.still_points(kps[:, :, 15:17], scale, 0.2, 0.008, ankles, K, w2c)
    assert seen.all()
    assert still[0, :, 0].min() > 0.99 and still[0, :, 1].max() < 0.05
    naive, _ = fit.still_points(kps[:, :, 15:17], scale, 0.2, 0.008)  # taken as a static camera: the other way round
    assert naive[0, :, 0].max() < 0.05 and naive[0, :, 1].min() > 0.99


def test_a_foot_rolling_over_its_toes_keeps_them_planted(model):
    """With heels and big toes, each part of a foot is planted by its own keypoint: a foot pushing
    off (heel and ankle rising, the big toe still) keeps its toes held while the heel is free to
    rise. From the ankle alone the whole foot is free, and the toes slide."""
    body = SparseBody(model)
    num_t, nb = 24, model.num_betas
    K = np.array([[900.0, 0, 320], [0, 900.0, 180], [0, 0, 1]])
    rot = fit.facing_rotation(np.radians(90))  # seen from the side
    rest_j, _ = solve.rest_points(body, nb)
    transl = np.array([0.0, -0.2, 4.0]) - rest_j[0]
    start = fit.FitState(betas=np.zeros((1, nb)), global_rot=np.tile(rot, (1, num_t, 1, 1)),
                         body_pose=np.tile(fit.relaxed_pose(), (1, num_t, 1)), transl=np.tile(transl, (1, num_t, 1)),
                         world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)))  # fmt: skip
    pts = solve.posed_points(body, start, "cpu")

    def seen(points: np.ndarray) -> np.ndarray:
        uv = solve.project_px(points, np.tile(K, (num_t, 1, 1)), start.world_to_cam)
        return np.concatenate([uv, np.ones((*uv.shape[:-1], 1))], -1)

    coco, feet = seen(pts["coco"]), seen(pts["foot_keypoints"])  # [1, T, 17, 3], [1, T, 4, 3]: left heel, left toe, ...
    rise = 6.0 * np.arange(num_t)  # the left heel and ankle go up 6 px (about 3 cm) a frame, the left big toe stays
    coco[0, :, 15, 1] -= rise
    feet[0, :, 0, 1] -= rise

    def contact(foot_keypoints: np.ndarray | None) -> np.ndarray:
        obs = fit.Observations(coco, np.tile(K, (num_t, 1, 1)), np.tile(np.eye(4), (num_t, 1, 1)), (640, 360),
                               foot_keypoints=foot_keypoints)  # fmt: skip
        fitter = fit.Fitter(body, obs, fit.FitConfig(), start)
        with torch.no_grad():
            return fitter.world_cues(fitter.pose_bodies(surface=False)).contact[0, 4:-4].numpy()  # [T, 6] body.FOOT_VERTICES

    parts, ankle_only = contact(feet), contact(None)
    assert parts[:, :2].min() > 0.9 and parts[:, 2].max() < 0.05  # left toes held, left heel free
    assert ankle_only[:, :3].max() < 0.05  # the ankle moves: the whole left foot free
    assert parts[:, 3:].min() > 0.9 and ankle_only[:, 3:].min() > 0.9  # the right foot stands either way


def _order_cost(labels: np.ndarray, boxes: list[tuple[float, float]], depths: tuple[float, float]) -> float:
    """The depth-order term of two people on one frame: person p's body covers image columns
    ``boxes[p]`` (rows 10-50) at depth ``depths[p]``; ``labels`` [1, h, w] are the masks."""
    from types import SimpleNamespace

    fake = SimpleNamespace(obs=SimpleNamespace(labels=labels, label_scale=1.0), num_p=2, num_t=1, device=torch.device("cpu"))
    fit.Fitter._prepare_masks(fake)  # type: ignore[arg-type]
    fake.labels = torch.as_tensor(labels)
    fake.scale = torch.full((2, 1), 100.0)  # people 100 px tall: "well inside" is 5 px
    fake.cfg = fit.FitConfig(w_silhouette=0.0)
    fake._sample = lambda grid, uv: fit.Fitter._sample(fake, grid, uv)  # type: ignore[misc]
    pts = [np.stack(np.meshgrid(np.linspace(x0 + 0.5, x1 - 0.5, 15), np.linspace(10.5, 49.5, 20)), -1).reshape(-1, 2) for x0, x1 in boxes]
    uv = torch.tensor(np.stack(pts)[:, None], dtype=torch.float32)  # [P,T,S,2]
    z = torch.tensor(depths, dtype=torch.float32)[:, None, None].expand(2, 1, uv.shape[2])
    fake.project = lambda _: (uv, z)  # type: ignore[misc]
    fake.to_camera = lambda _: torch.stack([torch.zeros(2, 1, 1), torch.zeros(2, 1, 1), z[..., :1]], -1)  # type: ignore[misc]
    out = SimpleNamespace(surface=torch.zeros(2, 1, uv.shape[2], 3), joints=torch.zeros(2, 1, 55, 3))
    return float(fit.Fitter.mask_terms(fake, out))  # type: ignore[arg-type]


def test_depth_order_needs_one_body_hiding_the_other():
    labels = np.zeros((1, 60, 100), np.int64)
    labels[0, 10:50, 30:60] = 1  # person 0 behind: seen right of the overlap
    labels[0, 10:50, 20:40] = 2  # person 1 in front hides person 0 over columns 30-40
    overlap = [(30.0, 60.0), (20.0, 40.0)]
    assert _order_cost(labels, overlap, (8.0, 6.0)) == 0.0  # the front one is nearer: nothing to pay
    wrong, close = _order_cost(labels, overlap, (6.0, 8.0)), _order_cost(labels, overlap, (8.0, 7.95))
    assert wrong > 50 * close > 0.0  # the hidden one nearer pays, the more the farther off
    # side by side, not overlapping: bodies fitted 3 px wider than their masks spill onto each other's
    # masks, which says nothing about who is in front
    labels = np.zeros((1, 60, 100), np.int64)
    labels[0, 10:50, 20:40] = 1
    labels[0, 10:50, 40:60] = 2
    spill = [(20.0, 43.0), (37.0, 60.0)]
    assert _order_cost(labels, spill, (8.0, 6.0)) == 0.0 and _order_cost(labels, spill, (6.0, 8.0)) == 0.0


@pytest.mark.parametrize("turned_deg", [120, -120, 150, 60])
def test_rigid_start_reads_the_side_the_detector_missed(model, turned_deg):
    """A body turned away from the camera shows few keypoints (no face, one ear, the near shoulder
    and hip); those fit the body turned either way about the viewing direction, and at 120
    degrees the keypoints alone pick the wrong one (124 degrees off without the hidden-side
    cost). The missing far-side points say which way the person faces."""
    body = SparseBody(model)
    num_t = 6
    K = np.array([[600.0, 0, 320], [0, 600.0, 180], [0, 0, 1]])
    rot = fit.facing_rotation(np.radians(turned_deg))
    rest_j, _ = solve.rest_points(body, model.num_betas)
    f32 = dict(dtype=torch.float32)
    with torch.no_grad():
        out = body(torch.zeros(1, model.num_betas), torch.tensor(rot, **f32)[None],
                   torch.tensor(fit.relaxed_pose(), **f32)[None], torch.tensor(np.array([0.3, 0.2, 6.0]) - rest_j[0], **f32)[None])  # fmt: skip
    coco = out.coco[0].numpy().astype(np.float64)
    uvw = coco @ K.T
    conf = np.ones(17)
    z = coco[:, 2]
    if z[0] > z[[3, 4]].mean():  # the face turned away: nose and eyes hidden
        conf[[0, 1, 2]] = 0.0
    for a, b in fit.SIDE_PAIRS:  # the far one of a pair hidden by the body when clearly farther
        if abs(z[a] - z[b]) > 0.05:
            conf[a if z[a] > z[b] else b] = 0.0
    kps = np.concatenate([uvw[:, :2] / uvw[:, 2:], conf[:, None]], 1)
    obs = fit.Observations(np.broadcast_to(kps, (1, num_t, 17, 3)).copy(), np.tile(K, (num_t, 1, 1)),
                           np.tile(np.eye(4), (num_t, 1, 1)), (640, 360))  # fmt: skip
    state = solve.rigid_start(body, obs, fit.FitConfig(iters_rigid=20), model.num_betas)
    err = np.degrees(fit.rotation_angle(state.global_rot[0], rot[None]))
    assert err.max() < 20, (turned_deg, conf, err)


def test_foot_keypoints_show_the_foot_pitch(model):
    """COCO-17 ends at the ankles, so how a foot is pitched (toes up at a heel strike, down as it
    pushes off) is left to the priors, which keep it flat. Detectors' heels and big toes
    (BlazePose, COCO-WholeBody; ``kp.foot_keypoints``) show it. A person seen from the side, one
    foot's toes 20 degrees up and the other's 20 degrees down, fitted from relaxed limbs."""
    from scipy.spatial.transform import Rotation

    body = SparseBody(model)
    num_t, nb = 4, model.num_betas
    K = np.array([[900.0, 0, 320], [0, 900.0, 180], [0, 0, 1]])
    truth = fit.relaxed_pose().reshape(21, 3)
    truth[6, 0], truth[7, 0] = 0.35, -0.35  # left and right ankle (SMPL-X joints 7, 8), about their lateral axis
    rot = fit.facing_rotation(np.radians(90))
    rest_j, _ = solve.rest_points(body, nb)
    transl = np.array([0.0, -0.2, 4.0]) - rest_j[0]
    f32 = dict(dtype=torch.float32)
    with torch.no_grad():
        out = body(torch.zeros(1, nb), torch.tensor(rot, **f32)[None], torch.tensor(truth.reshape(1, 63), **f32),
                   torch.tensor(transl, **f32)[None])  # fmt: skip

    def seen(points: torch.Tensor) -> np.ndarray:
        uvw = points[0].numpy().astype(np.float64) @ K.T
        kps = np.concatenate([uvw[:, :2] / uvw[:, 2:], np.ones((len(uvw), 1))], 1)
        return np.broadcast_to(kps, (1, num_t, *kps.shape)).copy()

    # the detector's heel and toe order: what kp.foot_keypoints picks out of a people result
    names = ["left_thumb", "right_heel", "left_heel", "right_big_toe", "left_big_toe"]
    extra = seen(out.foot_keypoints)[:, :, [0, 2, 0, 3, 1]]
    extra[:, :, 0] = np.nan  # a point the detector did not give
    feet = kp.foot_keypoints(extra, names)
    np.testing.assert_allclose(feet, seen(out.foot_keypoints))
    assert kp.foot_keypoints(extra[:, :, :1], names[:1]) is None

    start = fit.FitState(betas=np.zeros((1, nb)), global_rot=np.tile(rot, (1, num_t, 1, 1)),
                         body_pose=np.tile(fit.relaxed_pose(), (1, num_t, 1)), transl=np.tile(transl, (1, num_t, 1)),
                         world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)))  # fmt: skip

    def ankle_error_deg(foot_keypoints: np.ndarray | None) -> float:
        obs = fit.Observations(seen(out.coco), np.tile(K, (num_t, 1, 1)), np.tile(np.eye(4), (num_t, 1, 1)), (640, 360),
                               foot_keypoints=foot_keypoints)  # fmt: skip
        fitter = fit.Fitter(body, obs, fit.FitConfig(), start)
        fitter.run("pose", 100, [fitter.body_pose])
        got = fitter.body_pose.detach().numpy().reshape(num_t, 21, 3)[:, [6, 7]]
        diff = Rotation.from_rotvec(got.reshape(-1, 3)).inv() * Rotation.from_rotvec(np.tile(truth[[6, 7]], (num_t, 1)))
        return float(np.degrees(diff.magnitude()).max())

    without, with_feet = ankle_error_deg(None), ankle_error_deg(feet)
    assert without > 15.0 and with_feet < 3.0, (without, with_feet)  # 20 and 0.6 when written


def test_interpolated_camera_poses_hold_the_keyframes():
    from scipy.spatial.transform import Rotation

    keys = np.tile(np.eye(4), (2, 1, 1))
    keys[1, :3, :3] = Rotation.from_euler("y", 0.4).as_matrix()
    keys[1, :3, 3] = [1.0, 0.0, 0.0]
    out = camera.interpolate_poses(np.array([2, 6]), keys, 8)
    np.testing.assert_allclose(out[2], keys[0], atol=1e-9)
    np.testing.assert_allclose(out[6], keys[1], atol=1e-9)
    np.testing.assert_allclose(out[0], keys[0], atol=1e-9)  # held before the first key
    assert Rotation.from_matrix(out[4, :3, :3]).magnitude() == pytest.approx(0.2)
    np.testing.assert_allclose(out[4, :3, 3], [0.5, 0, 0])


def test_ground_plane_from_feet_of_two_walkers():
    rng = np.random.default_rng(0)
    normal = np.array([0.0, -0.98, -0.2])
    normal /= np.linalg.norm(normal)
    # two people's lowest feet points on the plane n.x + 1.8 = 0, spread over the floor
    pts = rng.uniform(-2, 2, size=(2, 30, 3)) + np.array([0, 0, 7.0])
    pts -= (pts @ normal + 1.8)[..., None] * normal
    feet = np.repeat(pts[:, :, None], 6, 2)
    feet[..., 1:, :] += normal * 0.1  # the other foot points are higher up
    joints = np.zeros((2, 30, 55, 3))
    joints[:, :, 0] = pts + normal * 0.9
    joints[:, :, 12] = pts + normal * 1.5
    g = solve.estimate_ground(joints, feet, np.ones((2, 30)))
    assert np.degrees(np.arccos(min(1.0, g.normal @ normal))) < 1.0
    assert g.offset == pytest.approx(1.8, abs=0.02)


def test_background_motion_tells_static_from_moving():
    rng = np.random.default_rng(0)
    texture = (rng.random((200, 400)) * 255).astype(np.uint8)
    texture = np.repeat(np.kron(texture, np.ones((3, 3), np.uint8))[..., None], 3, 2)
    static = [texture[100:280, 100:420].copy() for _ in range(10)]
    moving = [texture[100:280, 100 + 3 * i : 420 + 3 * i].copy() for i in range(10)]
    assert camera.background_motion(static, None) < 0.2
    assert camera.background_motion(moving, None) > 3 * camera.STATIC_PX


# ---------------------------------------------------------------------------------------------
# the whole fit on a synthetic scene
# ---------------------------------------------------------------------------------------------


def test_fit_recovers_people_on_one_floor(model, scene):
    from core.evaluate import evaluate

    cfg = fit.FitConfig(**TEST_FIT)
    pred, res = fit_scene(model, scene, cfg)
    gt = bd.read_bundle(scene / "bundle")
    ev = evaluate(pred, gt)
    assert not ev["missed"] and not ev["extra"] and ev["id_switches"] == 0
    m = ev["mean"]
    assert m["pa_mpjpe_mm"] < 100, m
    assert m["mpjpe_mm"] < 800, m  # camera-frame depth rests on the body-size prior
    assert m["w_mpjpe_mm"] < 260, m
    assert np.nanmean(res.reprojection_px) < 6.0
    # everyone stands on y = 0: the lowest foot point of each seen frame is near the floor
    for p in pred.people:
        joints = bd.world_joints(p)
        assert np.abs(np.median(joints[:, [7, 8, 10, 11], 1].min(-1))) < 0.12
    # and leans as the truth does at the clip's ends too, where one side alone holds the fit (the
    # torso had ramped to 8-16 degrees off there, against 4-5 mid-clip)
    for p, g in zip(pred.people, gt.people):
        ends = [0, 1, 2, -3, -2, -1]
        lean = rotation_between(torso_direction(bd.world_joints(p))[ends], torso_direction(bd.world_joints(g))[ends])
        assert lean.max() < 8.0, (p.id, lean)
    # the camera is where the ground truth's is relative to the floor: height and tilt
    cam_pred = np.linalg.inv(pred.camera.world_to_cam[0])
    cam_gt = np.linalg.inv(gt.camera.world_to_cam[0])
    assert cam_pred[1, 3] == pytest.approx(cam_gt[1, 3], abs=0.6)
    tilt = lambda c: np.degrees(np.arcsin(c[1, 2]))  # noqa: E731 (forward axis' y = pitch)
    assert tilt(cam_pred) == pytest.approx(tilt(cam_gt), abs=6)


def torso_direction(joints: np.ndarray) -> np.ndarray:
    """[T, 3] unit pelvis-to-neck vectors of [T, J, 3] joints."""
    v = joints[:, fit.NECK] - joints[:, fit.PELVIS]
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Degrees between unit vectors a and b [..., 3]."""
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def test_pose_prior_brings_unseen_arms_to_likely_poses(model, scene, walker_prior):
    """With no elbow or wrist ever seen, the joint ranges alone leave the arms wherever the start
    put them; a pose prior built from other scenes' walkers hangs and swings them as walkers'
    arms go, and the arms land nearer the truth (camera-frame fit, each frame aligned as PA-MPJPE)."""
    from core.evaluate import similarity_apply, similarity_fit
    from core.motion.stage import make_bundle

    obs, inp = scene_observations(scene)
    obs.keypoints[:, :, 7:11, 2] = 0  # elbows and wrists: never seen
    gt = bd.read_bundle(scene / "bundle")
    arm_error = {}
    for prior in ("", str(walker_prior)):
        cfg = fit.FitConfig(**{**TEST_FIT, "iters_world": 0}, pose_prior=prior, w_pose_prior=1e-3)
        res = solve.fit_motion(model, obs, cfg)
        pred = make_bundle(inp, res.state, obs.K, model, video=None, extra={})
        errs = []
        for p, g in zip(pred.people, gt.people):
            pj, gj = bd.world_joints(p)[:, :22], bd.world_joints(g)[:, :22]
            for t in range(len(pj)):
                aligned = similarity_apply(*similarity_fit(pj[t], gj[t]), pj[t])
                errs.append(np.linalg.norm(aligned[18:22] - gj[t, 18:22], axis=-1).mean())
        arm_error[bool(prior)] = 1000 * float(np.mean(errs))
    assert arm_error[True] < 0.85 * arm_error[False], arm_error  # 46 against 64 mm here


def test_init_from_ground_truth_bundle_keeps_the_motion(model, scene):
    """--motion-init with a Troupe bundle: the world, cameras and parameters are taken as they are."""
    from core.evaluate import evaluate

    gt = bd.read_bundle(scene / "bundle")
    inp = read_synth(scene)
    mi = init.load_init(scene / "bundle", inp, model)
    assert mi.world is not None and mi.K is not None
    cfg = fit.FitConfig(**{**TEST_FIT, "iters_world": 0})
    pred, _ = fit_scene(model, scene, cfg, init_world=mi.world)
    ev = evaluate(pred, gt)
    assert ev["mean"]["mpjpe_mm"] < 1.0 and ev["mean"]["w_mpjpe_mm"] < 1.0


def world_start(model, scene: Path, **degrade):  # type: ignore[no-untyped-def]
    """The scene's inputs (keypoints degraded by ``read_synth``'s ``degrade`` options), its true
    world state, the world stage's observations of it (cameras from the truth) and K [T,3,3]."""
    inp = read_synth(scene, **degrade)
    truth = init.load_init(scene / "bundle", inp, model).world
    K = intrinsics(inp.image_size, inp.focal_px, inp.num_frames)
    return inp, truth, fit.Observations(inp.keypoints, K, truth.world_to_cam, inp.image_size), K


def test_world_stage_stops_once_converged(model, scene):
    """The world stage runs until its loss stops falling, not for a fixed count (a 300-frame,
    4-person clip was left unconverged by a fixed 500 iterations): a phase ends at the first
    step that gains less than ``world_tol``, and without it every iteration runs."""
    _, truth, obs, _ = world_start(model, scene)
    start = replace(truth, body_pose=truth.body_pose + np.random.default_rng(0).normal(0, 0.05, truth.body_pose.shape))
    body = SparseBody(model)

    def world(tol: float, iters: int) -> tuple[int, float]:
        f = fit.Fitter(body, obs, fit.FitConfig(world_tol=tol), start)
        terms = f.run("world", iters, [f.betas, f.d_rot, f.body_pose, f.transl])
        return f.steps_run, sum(terms.values())

    _, first = world(0.0, 1)  # one step: the loss near the start
    # a 20 % gain per step counts as converged here: both phases end before the cap
    steps, loss = world(0.2, 400)
    all_steps, all_loss = world(0.0, 400)
    assert 2 <= steps < all_steps == 20, (steps, all_steps)  # 20 iterations a step
    assert all_loss < loss < first, (first, loss, all_loss)


def test_soles_rest_on_the_floor(model, scene):
    """The floor terms hold the soles at y = 0 (the foot points are the soles under the toe and
    heel vertices, which sit 1-2.5 cm above them): the true bodies pay nothing for the floor, and
    a world-stage fit started from them keeps their feet on it instead of sinking them 1.4 cm in."""
    from core.motion.stage import make_bundle

    inp, start, obs, K = world_start(model, scene)
    f = fit.Fitter(SparseBody(model), obs, fit.FitConfig(), start)
    with torch.no_grad():
        paid = f.floor_terms(f.pose_bodies(), None).sum().item() / (f.num_p * f.num_t)
    assert paid < 5e-4, paid  # the toe and heel vertices on the floor would pay 3e-3 to 8e-3 a frame
    f.run("world", 60, [f.betas, f.d_rot, f.body_pose, f.transl])
    for person in make_bundle(inp, f.state(), K, model, video=None, extra={}).people:
        m = person.motion
        verts, _ = model.forward(m.betas, m.poses, m.trans)
        lowest = verts[..., 1].min(-1).values.detach().numpy()  # [T] the lowest point of the body
        assert abs(np.median(lowest)) < 0.005, np.median(lowest)


def test_world_camera_tilt_holds_without_evidence(model, scene):
    """The world stage refines the camera's tilt against the floor, held toward the first floor
    estimate (``w_cam_tilt``): where the people's feet say little about how the floor tilts (a
    short clip, one walker on a line), keypoint noise alone must not roll or pitch the camera.
    Started from the truth, without the hold this scene's camera rolls 2.5 degrees."""
    _, truth, obs, _ = world_start(model, scene, noise_px=3.0, drop=0.1, seed=1)
    body = SparseBody(model)

    def tilt_after(weight: float) -> float:
        f = fit.Fitter(body, obs, fit.FitConfig(w_cam_tilt=weight, world_tol=0.0), truth)
        f.run("world", 300, [f.betas, f.d_rot, f.body_pose, f.transl, f.cam_delta])
        return float(np.degrees(torch.linalg.vector_norm(f.cam_delta[:2]).item()))

    held, free = tilt_after(fit.FitConfig().w_cam_tilt), tilt_after(0.0)
    assert held < 0.8, held
    assert free > 1.5, free  # the scene does pull the camera off


def fitter_facing_x(model, transl: np.ndarray) -> fit.Fitter:  # type: ignore[no-untyped-def]
    """A world-stage fitter of one relaxed body facing +x along ``transl`` [T, 3], camera at the
    origin, no keypoints."""
    num_t = len(transl)
    state = fit.FitState(
        betas=np.zeros((1, model.num_betas)),
        global_rot=np.tile(fit.yaw_rotation(np.pi / 2), (1, num_t, 1, 1)),
        body_pose=np.tile(fit.relaxed_pose(), (1, num_t, 1)),
        transl=transl[None],
        world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)),
    )
    obs = fit.Observations(np.zeros((1, num_t, 17, 3)), intrinsics((640, 360), 500.0, num_t), state.world_to_cam, (640, 360))
    return fit.Fitter(SparseBody(model), obs, fit.FitConfig(), state)


def test_keypoints_pull_back_a_person_who_drifted_off_them(model):
    """The reprojection is robust to a wrong keypoint, but a whole person a body's size off their
    keypoints must still be pulled back, at least as hard as one a fifth of that off. (With a
    kernel saturating at 0.3 of the size, the world stage let three of six dancers of the dance
    class drift 100-200 px off their keypoints, pushed by the world stage's other terms.)"""
    f = fitter_facing_x(model, np.array([[0.0, 0.0, 5.0]]))
    with torch.no_grad():
        uv, _ = f.project(f.pose_bodies(surface=False).coco)
    own = np.concatenate([uv[0].numpy(), np.ones((1, 17, 1))], -1)[None]  # [1,1,17,3]
    size = float(fit.person_scale(own, 0.2)[0, 0])
    pulls = []
    for off in (0.2, 1.0):
        kps = own.copy()
        kps[..., 0] += off * size  # every keypoint off to the right by that share of the body's size
        obs = replace(f.obs, keypoints=kps)
        g = fit.Fitter(f.body, obs, f.cfg, f.state())
        g.keypoint_term(g.pose_bodies(surface=False)).sum().backward()
        pulls.append(-float(g.transl.grad[0, 0, 0]))  # toward +x, where the keypoints are
    assert pulls[0] > 0 and pulls[1] >= pulls[0], pulls


def lifted(state: fit.FitState, person: int, metres: float) -> fit.FitState:
    """``state`` with one person raised (world +Y): standing on a box, a stage or a rooftop."""
    transl = state.transl.copy()
    transl[person, :, 1] += metres
    return replace(state, transl=transl)


def keypoints_of(body: SparseBody, state: fit.FitState, K: np.ndarray, like: np.ndarray) -> np.ndarray:
    """[P, T, 17, 3] the COCO keypoints of ``state``'s bodies as its cameras see them, with 2 px of
    noise, and the confidences (dropped points) of ``like``."""
    _, _, coco = solve.body_points(body, state, "cpu")
    w2c = state.world_to_cam
    uvw = np.einsum("tab,tbc,ptnc->ptna", K, w2c[:, :3, :3], coco) + np.einsum("tab,tb->ta", K, w2c[:, :3, 3])[None, :, None]
    kps = like.copy()
    kps[..., :2] = uvw[..., :2] / uvw[..., 2:3] + np.random.default_rng(0).normal(0.0, 2.0, kps[..., :2].shape)
    return kps


def test_a_person_on_a_rooftop_stands_on_their_own_level(model, scene):
    """One of two people stands 1.5 m above the other's floor (a rooftop, a stage) and the image
    shows them there. Forced onto one floor with the other, the floor through both tilted the
    solved camera to look up at 15 degrees from under the floor (the truth looks down at 11); on
    their own level, the floor and camera are the truth's and the level's height is found."""
    from core.evaluate import camera_level

    inp, truth, _, K = world_start(model, scene)
    on_roof = lifted(truth, 1, 1.5)
    kps = keypoints_of(SparseBody(model), on_roof, K, inp.keypoints)
    obs = fit.Observations(kps, K, np.tile(np.eye(4), (inp.num_frames, 1, 1)), inp.image_size)
    res = solve.fit_motion(model, obs, fit.FitConfig(**TEST_FIT))
    levels = res.ground.levels
    assert levels is not None and levels[0] == 0.0 and abs(levels[1] - 1.5) < 0.3, levels
    pitch, roll, height = camera_level(res.state.world_to_cam)
    pitch_gt, roll_gt, height_gt = camera_level(truth.world_to_cam)
    assert abs(pitch.mean() - pitch_gt.mean()) < 3.0 and abs(roll.mean() - roll_gt.mean()) < 3.0, (pitch, roll)
    assert abs(height.mean() - height_gt.mean()) < 0.3, (height, height_gt)
    assert np.nanmean(res.reprojection_px) < 6.0
    # each stands on their level: the lowest foot point of each seen frame, against it
    _, feet, _ = solve.body_points(SparseBody(model), res.state, "cpu")
    for p in range(2):
        assert abs(np.median(feet[p, :, :, 1].min(-1)) - levels[p]) < 0.1, p


def test_people_on_one_floor_share_its_level():
    """Three walkers spread 6 m over the floor, their fitted up direction 5 degrees off (their
    feet up to half a metre apart along it) and one of them 15 % too large (feet 0.3 m off),
    share one level; a fourth 1.2 m higher stands on another. The floor is the lowest level
    seen at least a third as often as the most seen one: a rooftop watched all clip long does not
    make the ground beneath it a level, nor does someone glimpsed below a crowd make the floor."""
    t = 20
    tilt = np.radians(5.0)
    up = np.array([np.sin(tilt), np.cos(tilt), 0.0])  # the bodies' up, 5 degrees off the truth's +Y
    spots = np.array([[0.0, 0.0, 5.0], [3.0, 0.3, 6.0], [6.0, 0.0, 8.0], [2.0, 1.2, 7.0]])  # x, height, z
    low = np.repeat(spots[:, None], t, 1) + np.random.default_rng(0).normal(0.0, 0.02, (4, t, 3))
    levels = solve.floor_levels(low, np.ones((4, t)), up)
    assert list(levels) == [0, 0, 0, 1], levels
    assert list(solve.floor_levels(low[[3, 0]], np.ones((2, t)), up)) == [1, 0]  # equals: the lower
    on_roof = np.ones((2, t))
    on_roof[1, t // 2 :] = 0  # the one below is seen half the time: the ground, still
    assert list(solve.floor_levels(low[[3, 0]], on_roof, up)) == [1, 0]
    glimpsed = np.ones((4, t))
    glimpsed[3, 5:] = 0
    below = low.copy()
    below[3, :, 1] -= 2.4  # 1.2 m below the crowd, seen on 5 frames against their 60
    assert list(solve.floor_levels(below, glimpsed, up)) == [0, 0, 0, 1]


def test_world_stage_refits_a_person_it_carries_off_their_keypoints(model, scene):
    """One of two people stands on a box half a metre above the other's floor, and the image shows
    them there. The world stage's floor and contact terms pull them down onto the shared floor and
    off their keypoints; the guard sees their reprojection grow several-fold over the start's and
    fits them again with their keypoints weighted more, which at least halves the drift. (A real
    dance class had three of six dancers 100-200 px off their keypoints after the world stage.)"""
    inp, truth, _, K = world_start(model, scene)
    body = SparseBody(model)
    on_box = lifted(truth, 1, 0.5)
    obs = fit.Observations(keypoints_of(body, on_box, K, inp.keypoints), K, on_box.world_to_cam, inp.image_size)
    start = solve.relative_reprojection(body, on_box, obs, fit.FitConfig())

    unguarded = solve.fit_motion(model, obs, fit.FitConfig(**TEST_FIT, world_guard_boost=1.0), init_world=on_box)
    off = solve.relative_reprojection(body, unguarded.state, obs, fit.FitConfig())
    assert unguarded.guard is None
    assert off[1] > 3 * start[1] and off[0] < 2 * start[0], (start, off)  # pulled off the image

    guarded = solve.fit_motion(model, obs, fit.FitConfig(**TEST_FIT), init_world=on_box)
    on = solve.relative_reprojection(body, guarded.state, obs, fit.FitConfig())
    g = guarded.guard
    assert g is not None and list(g.people) == [1] and g.kept == "retry", g
    assert on[1] < 0.5 * off[1], (start, off, on)
    assert on[0] < 2 * start[0], (start, on)


def test_heading_cue_trusts_the_clip_ends_less(model):
    """A walker faces where they go, but near the clip's ends the direction of travel is read from
    one side of the path and a depth drift there reads as travel (it turned clips' first frames
    about 10 degrees the wrong way): the cue's weight falls towards the ends, symmetrically."""
    num_t, speed = 40, 1.2
    t = np.arange(num_t)
    f = fitter_facing_x(model, np.stack([speed * t / 30.0, np.zeros(num_t), 5.0 + 0.01 * np.sin(t)], -1))  # walking +x
    cues = f.world_cues(f.pose_bodies(surface=False))
    travel, weight = cues.travel[0].numpy(), cues.travel_weight[0].numpy()
    assert (travel[:, 0] > 0.99).all(), travel  # the direction is right everywhere
    assert np.allclose(weight[12:-12], 1.0) and (weight[[0, -1]] < 0.2).all(), weight
    assert (np.diff(weight[:10]) > 0).all() and np.allclose(weight, weight[::-1], atol=0.02), weight
    assert f.heading_term(cues).item() < 1e-4  # facing the way they go costs nothing


def test_world_stage_holds_headings_near_the_clip_ends(model):
    """Near the clip's ends the world stage's cues are read from one side of the fit, so there a
    body turned about the vertical away from the heading the stage started from pays
    ``w_hold_ends`` (they had put the first frame of people spinning on the spot as the clip
    starts 21-25 degrees off); mid-clip the turn is free, and both ends pay alike."""
    num_t, turn = 40, np.radians(20.0)
    f = fitter_facing_x(model, np.tile([0.0, 0.0, 5.0], (num_t, 1)))  # standing

    def cost(frames: list[int], axis: int = 1) -> float:
        with torch.no_grad():
            f.d_rot.zero_()
            f.d_rot[0, frames, axis] = turn
            return f.hold_ends_term().item()

    full = fit.FitConfig().w_hold_ends * 2 * (1 - np.cos(turn))  # what one frame pays with its cues unsure
    first, last = cost([0]), cost([num_t - 1])
    assert 0.7 * full < first < full and first == pytest.approx(last, rel=1e-4), (first, last, full)
    assert cost(list(range(12, num_t - 12))) < 1e-9  # mid-clip: free
    assert cost([0], axis=0) < 0.1 * first  # leaning (about a horizontal axis) is not a turn


def test_a_torso_ramping_its_lean_pays_and_a_turn_does_not(model):
    """The acceleration terms leave a steady ramp free, and the fit's torso lean (depth along the
    ray, which the keypoints hardly fix) ramped 5-16 degrees near the clip's ends: the swing of the
    pelvis-to-neck direction from frame to frame costs (``w_torso_speed``). Turning about the
    torso's own axis is free, and a fast bow or fall pays a bounded price per frame."""
    num_t = 20
    f = fitter_facing_x(model, np.tile([0.0, 0.0, 5.0], (num_t, 1)))
    step = np.radians(np.arange(num_t))  # one degree more every frame

    def swing(axis: int, angles: np.ndarray) -> float:
        with torch.no_grad():
            f.d_rot.zero_()
            f.d_rot[0, :, axis] = torch.as_tensor(angles, dtype=torch.float32)
            return f.torso_swing(f.pose_bodies(surface=False).joints).item()

    still = swing(0, np.zeros(num_t))
    lean = swing(0, step) - still  # leaning forward by a degree a frame (about the body's x axis)
    one = np.radians(1.0) ** 2
    expected = (num_t - 1) * one * fit.TORSO_SWING_SIGMA**2 / (one + fit.TORSO_SWING_SIGMA**2)
    assert lean == pytest.approx(expected, rel=0.1), (lean, expected)
    assert swing(1, 5 * step) - still < 0.05 * lean  # turning 5 degrees a frame about the vertical
    bow = np.where(np.arange(num_t) >= 10, np.radians(30.0), 0.0)  # 30 degrees in one frame
    assert swing(0, bow) - still < fit.TORSO_SWING_SIGMA**2  # bounded


def test_a_planted_foot_may_pivot_but_not_slide(model):
    """Turning on the spot, people turn a planted foot about where it stands. The contact term
    held every foot point in place, so a stance foot could not turn, the legs could not follow
    and the fitted body lagged the turn by 20-30 degrees. A foot in contact now holds its place
    and stays down: turning about its contact point costs ``contact_turn`` of what sliding as far
    does (1: the old hold of every point), sliding costs the same."""
    num_t = 12
    rest = fit.FitState(
        betas=np.zeros((1, model.num_betas)),
        global_rot=np.tile(np.eye(3), (1, num_t, 1, 1)),
        body_pose=np.tile(fit.relaxed_pose(), (1, num_t, 1)),
        transl=np.zeros((1, num_t, 3)),
        world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)),
    )
    obs = fit.Observations(np.zeros((1, num_t, 17, 3)), intrinsics((640, 360), 500.0, num_t), rest.world_to_cam, (640, 360))
    body = SparseBody(model)
    contact = torch.zeros(1, num_t, 6)
    contact[..., :3] = 1.0  # the left foot planted throughout

    def slide_cost(turn_per_frame: float, slide_per_frame: float, hold: float) -> float:
        f = fit.Fitter(body, obs, fit.FitConfig(contact_turn=hold), rest)
        with torch.no_grad():
            feet = f.pose_bodies(surface=False).feet  # [1, T, 6, 3], all frames alike
            t = torch.arange(num_t, dtype=feet.dtype)[:, None, None]
            centre = feet[0, :, :3].mean(1, keepdim=True)  # where the left foot stands
            a = turn_per_frame * t
            x, z = feet[0, ..., 0:1] - centre[..., 0:1], feet[0, ..., 2:3] - centre[..., 2:3]
            turned = feet[0].clone()
            turned[..., 0:1] = centre[..., 0:1] + torch.cos(a) * x + torch.sin(a) * z + slide_per_frame * t
            turned[..., 2:3] = centre[..., 2:3] - torch.sin(a) * x + torch.cos(a) * z
            out = BodyOutput(joints=torch.zeros(1, num_t, 22, 3), feet=turned[None], coco=torch.zeros(1, num_t, 17, 3), surface=torch.zeros(1, num_t, 0, 3),
                             foot_keypoints=torch.zeros(1, num_t, 4, 3))
            base = f.floor_terms(replace(out, feet=feet), contact).item()
            return f.floor_terms(out, contact).item() - base

    turn, slide = np.radians(5.0), 0.01  # 150 deg/s; 0.3 m/s
    held, free = slide_cost(turn, 0.0, 1.0), slide_cost(turn, 0.0, 0.0)
    assert free < 1e-6 < 0.1 < held  # turning on the spot about the planted foot: free, or as dear as sliding
    assert slide_cost(turn, 0.0, 0.25) == pytest.approx(0.25 * held, rel=0.02)
    sliding = slide_cost(0.0, slide, 0.0)
    assert sliding > 0.1 and sliding == pytest.approx(slide_cost(0.0, slide, 1.0), rel=0.02)  # sliding costs the same


# ---------------------------------------------------------------------------------------------
# init adapters
# ---------------------------------------------------------------------------------------------


def tiny_inputs(num_p: int = 2, num_t: int = 5):
    from core.motion.inputs import MotionInputs

    kps = np.zeros((num_p, num_t, 17, 3))
    for p in range(num_p):
        kps[p, :, 11:13] = [100 + 200 * p, 100, 1]  # hips: person i further right
    return MotionInputs([f"p{i}" for i in range(num_p)], kps, np.ones((num_p, num_t)), (400, 200), 30.0, np.arange(num_t))


def test_simple_npz_init_matches_people_by_position(model, tmp_path):
    inp = tiny_inputs()
    rng = np.random.default_rng(0)
    body_pose = rng.normal(size=(2, 4, 63)) * 0.1
    transl = np.array([[[1.0, 0, 5]] * 4, [[-1.0, 0, 5]] * 4])  # file order: right person first
    path = tmp_path / "init.npz"
    np.savez(path, format=np.array(init.INIT_FORMAT), ids=np.array(["a", "b"]), body_pose=body_pose,
             global_orient=np.zeros((2, 4, 3)), transl=transl, betas=np.ones((2, 10)), focal_px=np.array(500.0))  # fmt: skip
    mi = init.load_init(path, inp, model)
    assert mi.has_root and mi.focal_px == 500.0
    np.testing.assert_allclose(mi.state.body_pose[0, :4], body_pose[1])  # track p0 (left) <- file's "b"
    np.testing.assert_allclose(mi.state.body_pose[0, 4], body_pose[1, 3])  # short file: last frame held
    np.testing.assert_allclose(mi.state.transl[1, 0], [1.0, 0, 5])


def test_amass_npz_gives_pose_and_shape_only(model, tmp_path):
    inp = tiny_inputs(1)
    poses = np.zeros((10, 165))
    poses[:, 3:66] = 0.2
    np.savez(tmp_path / "walk.npz", poses=poses, trans=np.zeros((10, 3)), betas=np.arange(16.0), gender=np.array("male"))
    mi = init.load_init(tmp_path / "walk.npz", inp, model)
    assert not mi.has_root
    np.testing.assert_allclose(mi.state.body_pose[0], 0.2)
    np.testing.assert_allclose(mi.state.betas[0], np.arange(10.0))


def test_pickles_need_the_explicit_flag(model, tmp_path):
    from scipy.spatial.transform import Rotation

    inp = tiny_inputs(1, 3)
    frame = {
        "tracked_ids": [7],
        "smpl": [{"global_orient": np.eye(3)[None], "body_pose": np.tile(Rotation.from_rotvec([0.3, 0, 0]).as_matrix(), (23, 1, 1)),
                  "betas": np.zeros(10)}],
        "camera": [np.array([0.0, 0.0, 20.0])],
    }  # fmt: skip
    path = tmp_path / "phalp.pkl"
    path.write_bytes(pickle.dumps({f"{i:06d}.jpg": frame for i in range(3)}))
    with pytest.raises(JobError, match="allow-pickle"):
        init.load_init(path, inp, model)
    shouting = path.rename(tmp_path / "PHALP.PKL")  # the suffix in any case is still a pickle
    with pytest.raises(JobError, match="allow-pickle"):
        init.load_init(shouting, inp, model)
    path = shouting.rename(path)
    with pytest.warns(UserWarning, match="pickled"):
        mi = init.load_init(path, inp, model, allow_pickle=True)
    np.testing.assert_allclose(mi.state.body_pose[0, :, 0], 0.3, atol=1e-9)
    np.testing.assert_allclose(mi.state.transl[0, 0], [0, 0, 20.0])


def test_bad_init_files_say_what_is_wrong(model, tmp_path):
    inp = tiny_inputs(1)
    with pytest.raises(JobError, match="does not exist"):
        init.load_init(tmp_path / "nope.npz", inp, model)
    np.savez(tmp_path / "x.npz", something=np.zeros(3))
    with pytest.raises(JobError, match="troupe.motion_init"):
        init.load_init(tmp_path / "x.npz", inp, model)


# ---------------------------------------------------------------------------------------------
# the stage in a job directory
# ---------------------------------------------------------------------------------------------


def test_stage_writes_a_valid_motion_bundle(standin_model_dir, scene, tmp_path):
    from core.motion.stage import run_stage
    from core.people.ingest import run_stage as ingest_stage
    from core.people.stage import run_stage as people_stage

    job = JobDir(tmp_path / "job")
    config = RunConfig(
        video=str(scene / "video.mp4"), tracker="import", tracks=str(scene), keypoints="import",
        body_model=str(standin_model_dir), device="cpu", quality="preview",
        extra={"motion": {"hfov_deg": 55.0, "iters_pose": 60, "iters_world": 30}},
    )  # fmt: skip
    for name, fn in (("ingest", ingest_stage), ("people", people_stage), ("motion", run_stage)):
        fn(StageContext(job=job, config=config, name=name, _progress=lambda f, m: None, _cancelled=lambda: False))
    out = job.stage_dir("motion")
    assert bd.validate(out) == []
    b = bd.read_bundle(out)
    assert [p.id for p in b.people] == ["p0", "p1"]
    assert b.extra["motion"]["camera"] == "static"
    assert b.extra["motion"]["focal_source"] == "config"
    assert b.extra["motion"]["reprojection_px_mean"] < 10
    # both walk on one floor and stay on their keypoints
    assert b.extra["motion"]["levels"] == {} and b.extra["motion"]["world_guard"] is None
    assert b.video and Path(b.video).name == "video.mp4"
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["body_model"]["standin"] is True
    rig = b.people[0].rig
    np.testing.assert_allclose(rig.joints, bd.read_bundle(out).people[0].rig.joints)


def test_unknown_motion_setting_is_named():
    from core.motion.stage import fit_config

    with pytest.raises(JobError, match="iters_wrld"):
        fit_config(RunConfig(device="cpu", extra={"motion": {"iters_wrld": 3}}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu(model, scene, standin_model_dir):
    """The same fit on CUDA and on the CPU reference: posing agrees to float precision; the short
    fit is as accurate on both. (Their optimisers' paths part by rounding: this unconverged fit
    ends about 10 cm apart in depth, both within a few millimetres of PA-MPJPE of each other.)"""
    from smplx.lbs import batch_rodrigues

    from core.body.model import BodyModel
    from core.evaluate import evaluate
    from core.motion.body import SparseBody

    gpu_model = BodyModel(standin_model_dir, device="cuda")
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(8, 66, generator=g) * 0.4
    args = (torch.randn(8, 10, generator=g), batch_rodrigues(pose[:, :3]), pose[:, 3:], torch.randn(8, 3, generator=g))
    cpu_out = SparseBody(model)(*args)
    gpu_out = SparseBody(gpu_model, device="cuda")(*(a.cuda() for a in args))
    assert torch.allclose(cpu_out.joints, gpu_out.joints.cpu(), atol=1e-5)
    assert torch.allclose(cpu_out.surface, gpu_out.surface.cpu(), atol=1e-5)
    short = {"iters_rigid": 20, "iters_limbs": 20, "iters_heading": 40, "iters_pose": 60, "iters_world": 20}
    cpu_b, _ = fit_scene(model, scene, fit.FitConfig(**short, device="cpu"))
    gpu_b, _ = fit_scene(gpu_model, scene, fit.FitConfig(**short, device="cuda"))
    for a, b in zip(cpu_b.people, gpu_b.people):
        diff = np.linalg.norm(bd.world_joints(a) - bd.world_joints(b), axis=-1)
        assert np.median(diff) < 0.2, np.median(diff)  # a flipped axis or lost person is metres off
    truth = bd.read_bundle(scene / "bundle")
    pa = [evaluate(b, truth)["mean"]["pa_mpjpe_mm"] for b in (cpu_b, gpu_b)]
    assert max(pa) < 70 and abs(pa[0] - pa[1]) < 10, pa


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replays_the_evaluation(scene, standin_model_dir, walker_prior):
    """On CUDA each loss evaluation is recorded once as a CUDA graph and replayed: the replay gives
    the eager evaluation's loss and gradients (a learned pose prior's included), with the
    silhouette's nearest points found anew or kept, after the optimiser has moved the parameters
    in place, and it runs the world stage."""
    from dataclasses import replace

    from core.body.model import BodyModel
    from core.motion.body import SparseBody

    gpu_model = BodyModel(standin_model_dir, device="cuda")
    body = SparseBody(gpu_model, device="cuda")
    obs, _ = scene_observations(scene)
    cfg = fit.FitConfig(iters_rigid=20, device="cuda", pose_prior=str(walker_prior))
    start = solve.rigid_start(body, obs, cfg, gpu_model.num_betas)
    fitters = {graphs: fit.Fitter(body, obs, replace(cfg, cuda_graphs=graphs), start) for graphs in (False, True)}
    evaluate = {}
    for graphs, f in fitters.items():
        with torch.no_grad():
            cues = f.world_cues(f.pose_bodies(surface=False))
        evaluate[graphs] = f._evaluator("world", cues, 100.0)
    leaves = ("betas", "d_rot", "body_pose", "transl", "cam_delta")
    for step in range(3):
        for find_near in (True, False):
            got = {graphs: evaluate[graphs](find_near)[0].item() for graphs in (False, True)}
            assert got[True] == pytest.approx(got[False], rel=1e-5), (step, find_near, got)
            for name in leaves:
                eager, replayed = (getattr(fitters[graphs], name).grad for graphs in (False, True))
                assert torch.allclose(replayed, eager, rtol=1e-4, atol=1e-6 * eager.abs().max().item()), (step, name)
        with torch.no_grad():  # as an optimiser moves them: in place
            for f in fitters.values():
                f.transl.add_(0.01)
                f.body_pose.mul_(0.95)
    fitted = fitters[True]
    fitted.run("world", 40, [fitted.betas, fitted.d_rot, fitted.body_pose, fitted.transl, fitted.cam_delta])
    assert np.isfinite(fitted.state().transl).all() and fitted.steps_run > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_failure_falls_back(scene, standin_model_dir, monkeypatch, caplog):
    """Where an evaluation cannot be recorded (here: a loss term that reads a value back to the
    CPU, which no CUDA graph can hold; on a user's card, say, too little memory), the fit warns and
    goes on kernel by kernel with the same numbers."""
    from dataclasses import replace

    from core.body.model import BodyModel
    from core.motion.body import SparseBody

    gpu_model = BodyModel(standin_model_dir, device="cuda")
    body = SparseBody(gpu_model, device="cuda")
    obs, _ = scene_observations(scene)
    cfg = fit.FitConfig(iters_rigid=20, device="cuda")
    start = solve.rigid_start(body, obs, cfg, gpu_model.num_betas)
    eager = fit.Fitter(body, obs, replace(cfg, cuda_graphs=False), start)
    want = eager._evaluator("pose", None, 100.0)(True)[0].item()
    prior = fit.Fitter.prior_term

    def reads_back(self):  # type: ignore[no-untyped-def]
        out = prior(self)
        if torch.cuda.is_current_stream_capturing():
            float(out.detach().sum())  # a read-back: not allowed while a graph records
        return out

    monkeypatch.setattr(fit.Fitter, "prior_term", reads_back)
    failing = fit.Fitter(body, obs, cfg, start)
    with caplog.at_level("WARNING", logger=fit.log.name):
        got = failing._evaluator("pose", None, 100.0)(True)[0].item()
    assert "could not record" in caplog.text and failing._graphs_failed
    assert got == pytest.approx(want, rel=1e-5)
    failing.run("pose", 20, [failing.d_rot, failing.body_pose, failing.transl])  # and the fit goes on
    assert np.isfinite(failing.state().transl).all()
