"""A moving camera's path: the plausibility check on solved paths, and structure from motion on a
small rendered orbit scene scored against its true camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.motion import camera
from core.motion.inputs import intrinsics, read_synth
from core.synth.scene import LOOK_AT, look_at


def orbit_poses(num: int, deg_per_frame: float = 0.4, radius: float = 7.0) -> np.ndarray:
    """[num, 4, 4] camera-to-world of a camera 2.2 m up orbiting LOOK_AT, looking at it."""
    az = np.radians(deg_per_frame) * np.arange(num)
    eyes = np.stack([radius * np.sin(az), np.full(num, 2.2), -radius * np.cos(az)], 1)
    return np.stack([np.linalg.inv(look_at(e, LOOK_AT)) for e in eyes])


def room_points(n: int = 2000, seed: int = 0) -> np.ndarray:
    """[n, 3] points on a floor and walls about 11 m from the centre."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(-11, 11, n // 2), np.zeros(n // 2), rng.uniform(-11, 11, n // 2)]
    ang = rng.uniform(0, 2 * np.pi, n - n // 2)
    walls = np.c_[11 * np.cos(ang), rng.uniform(0, 4.5, len(ang)), 11 * np.sin(ang)]
    return np.concatenate([floor, walls])


def test_check_path_accepts_smooth_paths():
    times = np.arange(60)
    ok = camera.check_path(times, orbit_poses(60), room_points(), sampled=60)
    assert ok.ok, ok.problems
    # a camera that stands still, then starts to move and turns, with a few frames unregistered
    poses = orbit_poses(60)
    speed = np.clip(np.arange(60) - 20, 0, None) / 20.0  # 0 for 20 frames, then speeding up
    az = np.radians(0.4) * np.cumsum(speed)
    eyes = np.stack([7 * np.sin(az), np.full(60, 2.2), -7 * np.cos(az)], 1)
    poses = np.stack([np.linalg.inv(look_at(e, LOOK_AT)) for e in eyes])
    keep = np.setdiff1d(times, [7, 30, 31, 45])
    ok = camera.check_path(keep, poses[keep], room_points(), sampled=60)
    assert ok.ok, ok.problems
    # an operator who stops walking, pans, and walks on
    stop = orbit_poses(60)
    stop[20:40, :3, 3] = stop[20, :3, 3]
    stop[40:, :3, 3] = orbit_poses(60)[20:40, :3, 3]
    ok = camera.check_path(times, stop, room_points(), sampled=60)
    assert ok.ok, ok.problems


def test_check_path_rejects_stalls_jumps_and_absurd_distances():
    poses = orbit_poses(60)
    points = room_points()
    # centres that stand at a few places while the view keeps turning (the degenerate COLMAP path)
    stalled = poses.copy()
    stalled[:, :3, 3] = poses[(np.arange(60) // 15) * 15, :3, 3]
    bad = camera.check_path(np.arange(60), stalled, points, sampled=60)
    assert not bad.ok and "jumps" in bad.problems[-1] and bad.stats["jumps"] >= 3
    # one jump: the path's second half moved away (a bad initial pair's two models)
    split = poses.copy()
    split[30:, :3, 3] += [5.0, 0.0, 0.0]
    bad = camera.check_path(np.arange(60), split, points, sampled=60)
    assert not bad.ok and bad.stats["jumps"] == 1
    # one centre far away (COLMAP put two at ~1e11 units)
    far = poses.copy()
    far[40, :3, 3] = 1e11
    bad = camera.check_path(np.arange(60), far, points, sampled=60)
    assert not bad.ok and any("scene's depth away" in p for p in bad.problems)
    # too few frames registered
    bad = camera.check_path(np.arange(20), poses[:20], points, sampled=60)
    assert not bad.ok and "registered 20 of 60" in bad.problems[0]


@pytest.fixture(scope="module")
def orbit_scene(standin_model_dir, tmp_path_factory) -> Path:
    from core.body.model import BodyModel
    from core.synth.generate import generate
    from core.synth.scene import SynthConfig

    out = tmp_path_factory.mktemp("camera") / "orbit"
    cfg = SynthConfig(people=1, frames=40, size=(384, 216), seed=3, camera="orbit", orbit_deg_per_s=30.0)
    generate(cfg, out, BodyModel(standin_model_dir))
    return out


def test_solve_path_matches_the_true_orbit(orbit_scene):
    """The rendered floor and walls repeat their paving and stone courses: matching descriptors
    between distant frames picks the wrong copies; the solved path must still follow the orbit."""
    pytest.importorskip("pycolmap")
    import cv2

    cap = cv2.VideoCapture(str(orbit_scene / "video.mp4"))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    inp = read_synth(orbit_scene)
    K = intrinsics(inp.image_size, inp.focal_px, len(frames))
    solved = camera.solve_path(frames, inp.labels, K[0], methods=("tracks",))
    assert solved is not None and solved.check.ok, solved and solved.attempts
    assert len(solved.times) >= 0.9 * solved.sampled
    with np.load(orbit_scene / "bundle" / "camera.npz") as z:
        gt = np.linalg.inv(z["world_to_cam"])
    rot, cen, length = camera.path_errors(solved.cam_to_scene, gt)
    assert rot.max() < 2.0
    assert cen.max() < 0.05 * length


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A cornery grey texture to track (blurred noise, BGR)."""
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, (h // 4, w // 4)).astype(np.float32)
    img = cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_NEAREST), (0, 0), 1.5)
    return cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def test_a_camera_turning_in_place_is_solved_as_a_rotation():
    import cv2
    from scipy.spatial.transform import Rotation

    w, h, num_t = 320, 180, 24
    K = intrinsics((w, h), 300.0, 1)[0]
    canvas = _texture(3 * h, 3 * w)
    shift = np.array([[1.0, 0, -w], [0, 1, -h], [0, 0, 1]])  # canvas pixels -> frame 0's pixels
    turns = [Rotation.from_euler("yx", [0.4 * t, 0.1 * t], degrees=True).as_matrix() for t in range(num_t)]
    frames = [cv2.warpPerspective(canvas, K @ r @ np.linalg.inv(K) @ shift, (w, h)) for r in turns]
    solved = camera.solve_rotation(camera.track_background(frames, None, np.arange(num_t)), K, np.arange(num_t), w)
    assert not isinstance(solved, str), solved
    times, poses = solved
    assert list(times) == list(range(num_t))
    for r, pose in zip(turns, poses):  # pose: camera-to-scene, so its rotation's transpose turns scene directions into the camera's
        err = Rotation.from_matrix(pose[:3, :3].T @ r.T).magnitude()
        assert np.degrees(err) < 0.1
    # the same background seen from a camera sliding sideways past a near and a far wall: no pure turn explains it
    near, far = _texture(3 * h, 3 * w, seed=1), canvas
    slide = []
    for t in range(num_t):
        frame = cv2.warpAffine(far, np.float32([[1, 0, -w + 0.75 * t], [0, 1, -h]]), (w, h))
        frame[h // 2 :] = cv2.warpAffine(near, np.float32([[1, 0, -w + 7.5 * t], [0, 1, -h]]), (w, h))[h // 2 :]
        slide.append(frame)
    verdict = camera.solve_rotation(camera.track_background(slide, None, np.arange(num_t)), K, np.arange(num_t), w)
    assert isinstance(verdict, str) and "background" in verdict, verdict
