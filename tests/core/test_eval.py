"""`python -m core eval`: known perturbations of a bundle give exactly the known numbers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from core import bundle as bd
from core import evaluate as ev
from core.__main__ import main as core_main
from tests.core.toy_bundle import make_bundle

FRAMES = 24
CAMERA_RIGHT = {"pitch_err_deg": 0.0, "roll_err_deg": 0.0, "height_ratio": 1.0}


@pytest.fixture(scope="module")
def gt() -> bd.Bundle:
    return make_bundle(people=3, frames=FRAMES)


def by_gt(result: dict) -> dict[str, dict]:
    return {m["gt"]: m for m in result["matches"]}


def test_self_is_all_zero(gt):
    r = ev.evaluate(gt, gt)
    assert [(m["pred"], m["gt"]) for m in r["matches"]] == [("p0", "p0"), ("p1", "p1"), ("p2", "p2")]
    for m in r["matches"]:
        assert m["frames"] == FRAMES
        for k in ("mpjpe_mm", "mpjpe_pelvis_mm", "pa_mpjpe_mm", "w_mpjpe_mm", "wa_mpjpe_mm", "rte_mm"):
            assert m[k] == pytest.approx(0.0, abs=1e-6), k
        assert m["jitter_pred"] == m["jitter_gt"] > 0
        assert m["foot_slide_pred_mm"] == m["foot_slide_gt_mm"]
        assert m["id_switches"] == 0
    assert r["missed"] == [] and r["extra"] == [] and r["id_switches"] == 0
    assert r["camera"] == pytest.approx(CAMERA_RIGHT, abs=1e-9)


def test_shift_of_one_person_is_camera_error_only(gt):
    pred = copy.deepcopy(gt)
    pred.person("p1").motion.trans += np.float32([0.05, 0.0, 0.0])
    r = by_gt(ev.evaluate(pred, gt))
    assert r["p1"]["mpjpe_mm"] == pytest.approx(50.0, abs=1e-3)
    for k in ("mpjpe_pelvis_mm", "pa_mpjpe_mm", "w_mpjpe_mm", "wa_mpjpe_mm", "rte_mm"):
        assert r["p1"][k] == pytest.approx(0.0, abs=1e-3), k
    assert r["p0"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert r["p2"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_pa_mpjpe_ignores_global_rotation_but_not_pose(gt):
    pred = copy.deepcopy(gt)
    pred.person("p0").motion.poses[:, 0] += 0.3  # lean the whole body forward
    pred.person("p1").motion.poses[:, 18 * 3 + 1] += 0.5  # bend the left elbow
    r = by_gt(ev.evaluate(pred, gt))
    assert r["p0"]["mpjpe_pelvis_mm"] > 20 and r["p0"]["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)
    assert r["p1"]["mpjpe_pelvis_mm"] > 3 and r["p1"]["pa_mpjpe_mm"] > 3


def test_world_frame_choice_does_not_matter(gt):
    """Rotating and moving the whole predicted world (camera included) changes no number."""
    yaw, shift = 0.7, np.array([2.0, 0.0, -1.0])
    rot = bd.axis_angle_to_matrix(np.array([0.0, yaw, 0.0]))
    pred = copy.deepcopy(gt)
    world = np.eye(4)
    world[:3, :3], world[:3, 3] = rot, shift
    pred.camera.world_to_cam = pred.camera.world_to_cam @ np.linalg.inv(world)
    for p in pred.people:
        from scipy.spatial.transform import Rotation

        go = p.motion.poses[:, :3].astype(np.float64)
        p.motion.poses[:, :3] = (Rotation.from_matrix(rot) * Rotation.from_rotvec(go)).as_rotvec()
        root = p.rig.joints[0].astype(np.float64)
        p.motion.trans = ((p.motion.trans + root) @ rot.T + shift - root).astype(np.float32)
    r = ev.evaluate(pred, gt)
    for m in r["matches"]:
        for k in ("mpjpe_mm", "pa_mpjpe_mm", "w_mpjpe_mm", "wa_mpjpe_mm", "rte_mm"):
            assert m[k] == pytest.approx(0.0, abs=1e-2), k
        assert m["jitter_pred"] == pytest.approx(m["jitter_gt"], rel=1e-3)
    assert r["camera"] == pytest.approx(CAMERA_RIGHT, abs=1e-6)


def test_camera_tilted_or_raised_is_scored_against_the_floor(gt):
    """The solved camera's pitch and roll against the floor, and its height as a ratio; a camera
    turned upside down about its viewing axis is 180 degrees off in roll."""
    pitch, roll, height = ev.camera_level(gt.camera.world_to_cam)  # at (0, 1.6, -6), looking at (0, 0.9, 0)
    assert pitch == pytest.approx(np.full(FRAMES, np.degrees(np.arctan2(0.7, 6.0))), abs=1e-4)
    assert roll == pytest.approx(np.zeros(FRAMES), abs=1e-4)
    assert height == pytest.approx(np.full(FRAMES, 1.6), abs=1e-6)

    def turned(axis: int, deg: float) -> bd.Bundle:
        pred = copy.deepcopy(gt)
        r = np.eye(4)
        r[:3, :3] = bd.axis_angle_to_matrix(np.radians(deg) * np.eye(3)[axis])  # about the camera's own axis
        pred.camera.world_to_cam = r @ pred.camera.world_to_cam
        return pred

    assert ev.evaluate(turned(0, 3.0), gt)["camera"] == pytest.approx({**CAMERA_RIGHT, "pitch_err_deg": 3.0}, abs=1e-4)
    assert ev.evaluate(turned(2, 2.0), gt)["camera"]["roll_err_deg"] == pytest.approx(2.0, abs=0.01)
    upside_down = ev.evaluate(turned(2, 180.0), gt)["camera"]
    assert upside_down == pytest.approx({**CAMERA_RIGHT, "roll_err_deg": 180.0}, abs=1e-3)
    raised = copy.deepcopy(gt)
    m = raised.camera.world_to_cam
    m[:, :3, 3] -= m[:, :3, :3] @ np.array([0.0, 0.16, 0.0])  # the camera 16 cm higher: 1.76 m
    assert ev.evaluate(raised, gt)["camera"]["height_ratio"] == pytest.approx(1.1, abs=1e-6)


def test_world_errors_are_aligned_every_chunk_of_frames(gt, monkeypatch):
    """W-MPJPE is WHAM's W-MPJPE100: every 100 frames (here 10) are aligned on their own first two
    frames, so a drift is scored by how far it goes within a piece, not over the whole clip."""
    monkeypatch.setattr(ev, "WORLD_CHUNK", 10)
    pred = copy.deepcopy(gt)
    step = np.float32(0.01)  # 1 cm further every frame along z
    pred.person("p2").motion.trans[:, 2] += step * np.arange(FRAMES, dtype=np.float32)
    m = by_gt(ev.evaluate(pred, gt))["p2"]
    # each piece's first two frames are 1 cm apart: the similarity splits that, and within the
    # piece frame k is off by about k cm; pieces of 10, 10 and 4 frames
    expect = np.mean([10.0 * abs(k - 0.5) for n in (10, 10, 4) for k in range(n)])
    assert m["w_mpjpe_mm"] == pytest.approx(expect, rel=0.15)
    assert m["wa_mpjpe_mm"] < m["w_mpjpe_mm"]
    monkeypatch.setattr(ev, "WORLD_CHUNK", 100)
    whole = by_gt(ev.evaluate(pred, gt))["p2"]["w_mpjpe_mm"]
    assert whole > 1.8 * m["w_mpjpe_mm"]  # one alignment for all 24 frames: the drift keeps growing


def test_drift_after_the_first_two_frames_is_w_mpjpe(gt):
    pred = copy.deepcopy(gt)
    pred.person("p2").motion.trans[2:] += np.float32([0.0, 0.0, 0.1])
    m = by_gt(ev.evaluate(pred, gt))["p2"]
    assert m["w_mpjpe_mm"] == pytest.approx(100.0 * (FRAMES - 2) / FRAMES, abs=1e-2)
    assert m["mpjpe_mm"] == pytest.approx(100.0 * (FRAMES - 2) / FRAMES, abs=1e-2)


def test_identity_switch_halfway(gt):
    half = FRAMES // 2
    pred = copy.deepcopy(gt)
    a, b = pred.person("p0").motion, gt.person("p1").motion
    a.poses[half:], a.trans[half:] = b.poses[half:], b.trans[half:]  # p0 becomes p1 halfway
    pred.person("p1").motion.visibility[half:] = 0  # and the real p1 track ends there
    r = ev.evaluate(pred, gt)
    assert r["id_switches"] == 1
    assert r["id_switches_per_pred"] == {"p0": 1, "p1": 0, "p2": 0}
    assert r["missed"] == [] and r["extra"] == []


def test_swap_of_two_tracks_counts_one_switch_each(gt):
    half = FRAMES // 2
    pred = copy.deepcopy(gt)
    a, b = pred.person("p0").motion, pred.person("p2").motion
    a.poses[half:], b.poses[half:] = b.poses[half:].copy(), a.poses[half:].copy()
    a.trans[half:], b.trans[half:] = b.trans[half:].copy(), a.trans[half:].copy()
    r = ev.evaluate(pred, gt)
    assert r["id_switches_per_pred"] == {"p0": 1, "p1": 0, "p2": 1}


def test_missed_and_extra_people(gt):
    pred = copy.deepcopy(gt)
    pred.people = [pred.person("p0"), pred.person("p2")]
    far = copy.deepcopy(pred.person("p0"))
    far.id = "ghost"
    far.motion.trans += np.float32([6.0, 0.0, 0.0])  # far to the side: nowhere near anyone in the image
    pred.people.append(far)
    r = ev.evaluate(pred, gt)
    assert r["missed"] == ["p1"]
    assert r["extra"] == ["ghost"]
    assert sorted(m["gt"] for m in r["matches"]) == ["p0", "p2"]


def test_partial_frames_are_matched_by_source_frame(gt):
    """A prediction that starts at source frame 5 is compared on the frames both have."""
    pred = copy.deepcopy(gt)
    start = 5
    cam = pred.camera
    pred.camera = bd.Camera(K=cam.K[start:], world_to_cam=cam.world_to_cam[start:], image_size=cam.image_size)
    for p in pred.people:
        m = p.motion
        m.poses, m.trans, m.expression, m.visibility = (
            m.poses[start:],
            m.trans[start:],
            m.expression[start:],
            m.visibility[start:],
        )
    pred.frame_start = start
    gt_late = copy.deepcopy(gt)
    gt_late.person("p1").motion.visibility[:10] = 0  # GT p1 not seen in frames 0..9
    r = ev.evaluate(pred, gt_late)
    assert r["frames"]["common"] == FRAMES - start
    m = by_gt(r)
    assert m["p0"]["frames"] == FRAMES - start and m["p1"]["frames"] == FRAMES - 10
    assert m["p0"]["w_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_jitter_and_foot_sliding_units():
    """Still limbs: a cubic path has jitter 6a m/s^3; a constant slide of v m/frame with the feet
    on the ground is v*1000 mm of foot sliding."""
    fps, frames = 30.0, 16
    t = np.arange(frames) / fps
    b = make_bundle(people=1, frames=frames, fps=fps)
    m = b.people[0].motion
    m.poses[:] = m.poses[0]
    a = 2.0
    m.trans[:, 0] = a * t**3
    r = ev.evaluate(b, b)["matches"][0]
    assert r["jitter_gt"] == pytest.approx(6 * a, rel=1e-3)
    v = 0.004
    m.trans[:, 0] = v * np.arange(frames)
    r = ev.evaluate(b, b)["matches"][0]
    assert r["foot_slide_gt_mm"] == pytest.approx(v * 1000, rel=1e-3)


def test_planted_foot_slide_ignores_a_foot_that_skims_the_floor():
    """Standing for 8 frames, then walking off: lifted 10 cm in the truth, only 2 cm in the
    prediction. The prediction's own contacts then take in the walking steps (its feet never
    leave the 3 cm band), where the truth's planted frames show that its feet hold still."""
    frames = 16
    gt = make_bundle(people=1, frames=frames)
    pred = make_bundle(people=1, frames=frames)
    for b, lift in ((gt, 0.10), (pred, 0.02)):
        m = b.people[0].motion
        m.poses[:] = m.poses[0]
        m.trans[:] = m.trans[0]
        walk = np.arange(frames) >= 8
        m.trans[walk, 0] += 0.05 * np.arange(1, walk.sum() + 1)
        m.trans[walk, 1] += lift
    r = ev.evaluate(pred, gt)["matches"][0]
    assert r["foot_slide_gt_mm"] == pytest.approx(0.0, abs=1e-6)
    assert r["foot_slide_pred_mm"] > 20.0  # the walking steps counted as sliding
    assert r["foot_slide_planted_mm"] == pytest.approx(0.0, abs=1e-6)


def test_cli_writes_json_and_refuses_invalid_bundle(gt, tmp_path, capsys):
    gt_dir = bd.write_bundle(tmp_path / "gt", gt)
    pred = copy.deepcopy(gt)
    pred.person("p1").motion.trans += np.float32([0.05, 0.0, 0.0])
    pred_dir = bd.write_bundle(tmp_path / "pred", pred)
    out = tmp_path / "eval.json"
    assert core_main(["eval", str(pred_dir), str(gt_dir), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "PA-MPJPE" in table and "missed GT people: none" in table
    result = json.loads(out.read_text())
    assert by_gt(result)["p1"]["mpjpe_mm"] == pytest.approx(50.0, abs=1e-2)
    assert result["joints"][0] == "pelvis" and len(result["joints"]) == 22
    (gt_dir / "camera.npz").unlink()
    assert core_main(["eval", str(pred_dir), str(gt_dir)]) == 1
    assert "camera.npz: file is missing" in capsys.readouterr().out


def test_a_person_misplaced_in_depth_still_matches(gt):
    """A monocular result can be metres off in depth (scale) yet be the right person: matching is
    in the image, so the person is matched and the error shows up in MPJPE, not as missed."""
    pred = copy.deepcopy(gt)
    w2c = pred.camera.world_to_cam[0]
    p = pred.person("p1")
    cam_pos = -w2c[:3, :3].T @ w2c[:3, 3]
    joints = bd.world_joints(p)
    # Scale the person about the camera centre by 1.5: same image, 50 % farther, 50 % bigger.
    p.rig.joints = (p.rig.joints * 1.5).astype(np.float32)
    pelvis0 = joints[:, 0]
    p.motion.trans = (cam_pos + 1.5 * (pelvis0 - cam_pos) - p.rig.joints[0]).astype(np.float32)
    r = ev.evaluate(pred, gt)
    assert r["missed"] == [] and r["extra"] == []
    m = next(m for m in r["matches"] if m["gt"] == "p1")
    assert m["pred"] == "p1" and m["match_cost"] < 1e-3
    assert m["mpjpe_mm"] > 1000 and m["pa_mpjpe_mm"] < 1e-3
