"""The field-of-view search (``core.motion.camera.search_fov``): the focal length of a video
without camera metadata, from people standing on one floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.motion import camera
from core.motion.inputs import DEFAULT_HFOV_DEG, focal_from_hfov, read_synth

SIZE = (640, 360)


def standing_people(hfov: float, pitch_deg: float, seed: int = 0, noise_px: float = 1.0) -> np.ndarray:
    """[3, 60, 17, 3] COCO-17 ankles, hips and shoulders of three upright people of different
    heights walking at 4-9 m in front of a camera 2.2 m high, pitched down ``pitch_deg``."""
    rng = np.random.default_rng(seed)
    f = focal_from_hfov(SIZE[0], hfov)
    rot = camera._level_rotation(math.radians(pitch_deg), 0.0)
    heights = {15: 0.1, 16: 0.1, 11: 0.9, 12: 0.9, 5: 1.45, 6: 1.45}
    kps = np.zeros((3, 60, 17, 3))
    for p in range(3):
        scale = math.exp(rng.normal() * 0.05)
        start, vel = np.array([rng.uniform(-2, 2), rng.uniform(4, 8)]), rng.uniform(-1, 1, 2)
        for t in range(60):
            x, z = start + vel * t / 30
            for j, y in heights.items():
                side = 0.15 if j % 2 else -0.15
                c = rot @ np.array([x + side, y * scale - 2.2, z])
                kps[p, t, j] = (*(f * c[:2] / c[2] + np.array(SIZE) / 2), 1.0)
    kps[..., :2] += rng.normal(size=kps[..., :2].shape) * noise_px
    return kps


@pytest.mark.parametrize("hfov", [40.0, 75.0])
def test_upright_figures_give_the_focal_length(hfov):
    # ideal figures: the horizon and the vertical vanishing point fix the focal length, far from
    # the default FOV (alone 37 % off in focal length at 40 degrees)
    found = camera.search_fov(standing_people(hfov, 12.0), SIZE)
    assert found.source == "people"
    assert found.focal_px == pytest.approx(focal_from_hfov(SIZE[0], hfov), rel=0.04)
    assert found.pitch_deg == pytest.approx(12.0, abs=1.5)


def test_no_feet_or_a_level_camera_keep_the_default():
    kps = standing_people(40.0, 12.0)
    kps[:, :, 15:17, 2] = 0  # feet cut off by the frame
    found = camera.search_fov(kps, SIZE)
    assert found.hfov_deg == DEFAULT_HFOV_DEG and found.source.startswith("default: only 0 person-frames")
    # a level camera tells nothing about the focal length: the prior keeps the default
    level = camera.search_fov(standing_people(40.0, 0.0), SIZE)
    assert level.hfov_deg == pytest.approx(DEFAULT_HFOV_DEG, abs=5)


def test_an_answer_at_the_end_of_the_searched_range_is_not_trusted():
    # figures that only a wider lens explains, searched over narrow FOVs: the best fit sits on the
    # range's edge (what a person on a box does to the one-floor model), so the default is used
    found = camera.search_fov(standing_people(75.0, 12.0), SIZE, grid_deg=np.arange(30.0, 50.0, 5.0))
    assert found.hfov_deg == DEFAULT_HFOV_DEG
    assert found.source.startswith("default: the people's geometry points past the searched 30-45 deg")


def test_fov_search_on_a_synthetic_scene(standin_model_dir, tmp_path):
    # a rendered scene (stand-in bodies walking, self-occlusion, noisy and dropped keypoints) with
    # a wide lens: the default FOV (60 degrees) would be 33 % off in focal length
    from core.body.model import BodyModel
    from core.synth.generate import generate
    from core.synth.scene import SynthConfig

    cfg = SynthConfig(people=4, frames=60, size=(480, 270), seed=2, hfov_deg=75.0, camera_distance=5.0)
    generate(cfg, tmp_path, BodyModel(standin_model_dir))
    inp = read_synth(tmp_path, noise_px=2.0, drop=0.1, seed=0, masks=False)
    assert abs(focal_from_hfov(480, DEFAULT_HFOV_DEG) / inp.focal_px - 1) > 0.3
    found = camera.search_fov(inp.keypoints, inp.image_size)
    assert found.source == "people"
    assert found.focal_px == pytest.approx(inp.focal_px, rel=0.12)
    assert camera.choose_focal(inp).focal_px == pytest.approx(found.focal_px)
