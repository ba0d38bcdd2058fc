"""`python -m core synth`: the ground truth agrees with the pixels, the body and itself."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core import bundle as bd
from core import evaluate as ev
from core.__main__ import main as core_main
from core.body.model import BodyModel
from core.synth.generate import generate
from core.synth.scene import SynthConfig
from tests.core.conftest import SYNTH_SCENE

N, T = SYNTH_SCENE["people"], SYNTH_SCENE["frames"]
W, H = SYNTH_SCENE["size"]


@pytest.fixture(scope="module")
def model(standin_model_dir):
    return BodyModel(standin_model_dir)


@pytest.fixture(scope="module")
def gt(synth_scene):
    with np.load(synth_scene / "gt" / "keypoints.npz", allow_pickle=False) as z:
        kp = {k: z[k] for k in z.files}
    with np.load(synth_scene / "gt" / "labels.npz", allow_pickle=False) as z:
        kp["labels"] = z["labels"]
    return kp


@pytest.fixture(scope="module")
def scene_bundle(synth_scene):
    return bd.read_bundle(synth_scene / "bundle")


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def test_layout_and_metadata(synth_scene, scene_bundle, gt):
    tracks = json.loads((synth_scene / "gt" / "tracks.json").read_text())
    assert tracks["fps"] == 30.0 and tracks["frame_count"] == T and tracks["image_size"] == [W, H]
    assert tracks["keypoint_format"] == "coco17" and [p["id"] for p in tracks["people"]] == ["p0", "p1"]
    colours = np.array([p["color"] for p in tracks["people"]], float)
    assert np.abs(colours[0] - colours[1]).max() > 60, "people must have clearly different colours"
    assert gt["keypoints"].shape == (N, T, 17, 3) and gt["boxes"].shape == (N, T, 4)
    assert gt["visibility"].shape == (N, T) and list(gt["ids"]) == ["p0", "p1"]
    assert gt["labels"].shape == (T, H, W) and gt["labels"].dtype == np.uint8
    b = scene_bundle
    assert b.generator == "troupe synth" and b.video == "../video.mp4" and b.body_model.standin
    assert bd.video_path(synth_scene / "bundle", b) == (synth_scene / "video.mp4").resolve()
    assert b.extra["synth"]["seed"] == SYNTH_SCENE["seed"] and b.extra["synth"]["camera"] == "static"
    assert [p.id for p in b.people] == ["p0", "p1"]
    np.testing.assert_allclose(b.people[0].motion.visibility, gt["visibility"][0])


def test_video_reads_back(synth_scene, gt):
    frames, fps = read_video(synth_scene / "video.mp4")
    assert len(frames) == T and fps == pytest.approx(30.0)
    assert frames[0].shape == (H, W, 3)
    # the people are where the labels say: their pixels differ from the empty room's colours
    person = gt["labels"][0] > 0
    assert person.sum() > 50


def test_determinism(synth_scene, model, tmp_path):
    again = generate(SynthConfig(**SYNTH_SCENE), tmp_path / "again", model).out
    a, b = bd.read_bundle(synth_scene / "bundle"), bd.read_bundle(again / "bundle")
    for pa, pb in zip(a.people, b.people):
        np.testing.assert_array_equal(pa.motion.poses, pb.motion.poses)
        np.testing.assert_array_equal(pa.motion.trans, pb.motion.trans)
        np.testing.assert_array_equal(pa.motion.betas, pb.motion.betas)
    for name in ("labels.npz", "keypoints.npz"):
        with np.load(synth_scene / "gt" / name) as x, np.load(again / "gt" / name) as y:
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}:{k}")
    fa, _ = read_video(synth_scene / "video.mp4")
    fb, _ = read_video(again / "video.mp4")
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    other = generate(SynthConfig(**{**SYNTH_SCENE, "seed": 4, "frames": 2}), tmp_path / "other", model).out
    assert not np.allclose(
        bd.read_bundle(other / "bundle").people[0].motion.trans[0], a.people[0].motion.trans[0]
    )


def test_visible_keypoints_land_on_their_person(gt):
    kp, labels = gt["keypoints"], gt["labels"]
    flagged = kp[..., 2] > 0
    assert flagged.mean() > 0.4, "most keypoints of a walking scene are visible"
    assert (~flagged).any(), "some keypoints are hidden (self-occlusion, the other person)"
    for i, t, k in zip(*np.nonzero(flagged)):
        x, y = kp[i, t, k, :2]
        assert labels[t, int(np.floor(y)), int(np.floor(x))] == i + 1, (i, t, k)


def test_boxes_and_visibility_follow_the_labels(gt):
    labels, boxes, vis = gt["labels"], gt["boxes"], gt["visibility"]
    for i in range(N):
        for t in range(T):
            m = labels[t] == i + 1
            if not m.any():
                assert np.isnan(boxes[i, t]).all() and vis[i, t] == 0
                continue
            rows, cols = np.nonzero(m)
            np.testing.assert_array_equal(
                boxes[i, t], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            )
            assert 0 < vis[i, t] <= 1


def _silhouette(verts_px: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Independent reference: the pixels whose centre lies in a projected triangle, by
    scikit-image's point-in-polygon fill (its pixel centres are integers, ours are at +0.5)."""
    from skimage.draw import polygon

    mask = np.zeros((H, W), bool)
    c, r = verts_px[:, 0] - 0.5, verts_px[:, 1] - 0.5
    for f in faces:
        rr, cc = polygon(r[f], c[f], shape=(H, W))
        mask[rr, cc] = True
    return mask


def test_labels_match_the_projected_mesh(scene_bundle, gt):
    """Labels agree with the bundle's meshes (FK + skinning of rig and motion, projected by the
    bundle's camera and filled by scikit-image), up to a pixel centre lying on a triangle edge."""
    b = scene_bundle
    for t in (0, T // 2, T - 1):
        sil = []
        for p in b.people:
            _, skin = bd.forward_kinematics(
                p.rig.joints, p.rig.parents, p.motion.rotvecs[t : t + 1], p.motion.trans[t : t + 1]
            )
            v = bd.skin_points(p.rig.vertices, None, p.rig.weights, skin)[0]
            sil.append(_silhouette(b.camera.project(v, t), p.rig.faces))
        labels = gt["labels"][t]
        for i in range(N):
            mine = labels == i + 1
            others = np.any([s for j, s in enumerate(sil) if j != i], axis=0)
            assert sil[i].sum() > 100
            outside = int((mine & ~sil[i]).sum())
            missing = int((sil[i] & ~others & ~mine).sum())
            assert outside + missing <= 2, (
                f"frame {t}, person {i}: {outside} pixels outside, {missing} missing"
            )


def test_fk_of_bundle_equals_body_model(scene_bundle, model):
    for p in scene_bundle.people:
        _, joints = model.forward(p.motion.betas, p.motion.poses, p.motion.trans)
        np.testing.assert_allclose(bd.world_joints(p), joints.detach().numpy(), atol=1e-5)


def test_feet_stay_on_the_ground(scene_bundle, model):
    feet = np.isin(np.argmax(model.weights, axis=1), [7, 8, 10, 11])
    for p in scene_bundle.people:
        verts, joints = model.forward(p.motion.betas, p.motion.poses, p.motion.trans)
        lowest = verts.detach().numpy()[:, feet, 1].min(axis=1)  # per frame
        assert np.abs(lowest).max() < 0.01, (
            f"{p.id}: lowest foot vertex {lowest.min():.3f}..{lowest.max():.3f} m"
        )
        slide = ev.foot_sliding(joints.detach().numpy()[:, : ev.BODY_JOINTS], np.arange(T), 1)
        assert slide < 4.0, f"{p.id}: foot sliding {slide:.2f} mm/frame"


def test_people_are_in_view(gt, scene_bundle):
    assert (gt["visibility"] > 0).mean() > 0.8
    xy = gt["keypoints"][..., :2]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)
    assert inside.mean() > 0.8
    # heading follows the walking direction (pelvis forward axis vs. ground velocity)
    for p in scene_bundle.people:
        vel = np.diff(p.motion.trans[:, [0, 2]], axis=0)
        moving = np.linalg.norm(vel, axis=1) > 0.02  # > 0.6 m/s at 30 fps
        if moving.sum() < 3:
            continue
        fwd = bd.axis_angle_to_matrix(p.motion.poses[1:, :3])[:, :, 2][:, [0, 2]]
        cos = (fwd * vel).sum(1) / np.linalg.norm(fwd, axis=1) / np.linalg.norm(vel, axis=1)
        assert np.median(cos[moving]) > 0.8


def test_eval_of_ground_truth_against_itself_is_zero(synth_scene):
    gt_dir = synth_scene / "bundle"
    r = ev.evaluate(bd.read_bundle(gt_dir), bd.read_bundle(gt_dir))
    assert len(r["matches"]) == N and r["missed"] == [] and r["id_switches"] == 0
    assert all(m["mpjpe_mm"] < 1e-6 and m["pa_mpjpe_mm"] < 1e-3 for m in r["matches"])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        core_main(["synth", "--out", str(tmp_path), "--size", "640by360"])
    assert "size must look like 640x360" in capsys.readouterr().err
    assert core_main(["synth", "--out", str(tmp_path), "--people", "0"]) == 2
    assert "people must be at least 1" in capsys.readouterr().err
    assert core_main(["synth", "--out", str(tmp_path), "--body-model", str(tmp_path / "nowhere")]) == 1
    assert "SMPL-X body model not found" in capsys.readouterr().err


def test_turning_on_the_spot_takes_steps_within_the_joint_limits(model):
    """A sharp corner is taken standing, turning on the spot: the legs must stay anatomical
    (a planted foot held through the whole turn wrung the hip round by up to 180 degrees, which
    no fit with joint limits could follow) and every stance foot must stay put."""
    import torch

    from core.motion.priors import Priors
    from core.synth import motion as mo

    rest = model.rest(np.zeros(model.num_betas))
    geo = mo.BodyGeometry.measure(rest.vertices, rest.joints, model.weights)
    fine = np.arange(0, 5.0, 1 / 300)
    # out 1.5 m and straight back: a 180 degree turn on the spot
    plan = mo.PathPlan(waypoints=np.array([[0.0, 0.0], [0.0, 1.5], [0.0, 0.0]]), speed=1.2)
    path = mo.simulate_path(plan, fine, lambda t: (0.0, 10.0))
    times = np.arange(0, 4.5, 1 / 30)
    assert np.ptp(np.interp(times, path.t, path.heading)) > 0.9 * np.pi  # it did turn round
    legs = [j - 1 for j in (1, 2, 4, 5, 7, 8, 10, 11)]  # hips, knees, ankles, toes
    priors = Priors()
    for phase0 in (0.0, 0.25, 0.5, 0.75):  # wherever in its stride the turn comes
        poses, trans = mo.gait(geo, path, times, phase0, mo.GaitStyle())
        limits = priors.joint_limit_terms(torch.tensor(poses[None, :, 3:66], dtype=torch.float32))[0].numpy()
        worst = limits[:, legs].max()
        assert worst < 0.05**2, f"phase {phase0}: leg joints beyond their limits by {np.sqrt(worst):.2f} rad"
        _, joints = model.forward(np.zeros(model.num_betas), poses.astype(np.float32), trans.astype(np.float32))
        slide = ev.foot_sliding(joints.detach().numpy()[:, : ev.BODY_JOINTS], np.arange(len(times)), 1)
        assert slide < 4.0, f"phase {phase0}: foot sliding {slide:.2f} mm/frame"
