"""Fixtures shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN_CACHE = ROOT / ".cache" / "standin"


@pytest.fixture(scope="session")
def standin_model_dir() -> Path:
    """Folder with the generated SMPL-X-shaped stand-in (test data, not a human body model):
    SMPLX_NEUTRAL.npz, SMPLX_MALE.npz, SMPLX_FEMALE.npz.

    Generated into ``.cache/standin/`` of the checkout on first use (a few seconds) and reused
    while the files carry the current generator version.
    """
    from core.body.standin import ensure_standin

    return ensure_standin(STANDIN_CACHE)


SYNTH_SCENE = {"people": 2, "frames": 12, "size": (160, 90), "seed": 3}


@pytest.fixture(scope="session")
def synth_scene(standin_model_dir, tmp_path_factory) -> Path:
    """A tiny ``python -m core synth`` output (``SYNTH_SCENE``, stand-in body), made once per
    session: video.mp4, bundle/ and gt/ (docs/formats.md)."""
    from core.body.model import BodyModel
    from core.synth.generate import generate
    from core.synth.scene import SynthConfig

    out = tmp_path_factory.mktemp("synth") / "scene"
    generate(SynthConfig(**SYNTH_SCENE), out, BodyModel(standin_model_dir))
    return out


@pytest.fixture(scope="session")
def walker_prior(standin_model_dir, tmp_path_factory) -> Path:
    """A learned pose prior (``core.motion.pose_prior``, 4 components) built from the poses
    ``core synth``'s gait gives the people of 20 scenes (seeds 100-119, none a test scene's)."""
    from core.body.model import BodyModel
    from core.motion.pose_prior import build_pose_prior, write_pose_prior
    from core.synth.generate import sample_poses

    poses = sample_poses(BodyModel(standin_model_dir), range(100, 120))
    out = tmp_path_factory.mktemp("prior") / "walkers.npz"
    write_pose_prior(out, build_pose_prior(poses, components=4), "core synth gait, seeds 100-119")
    return out
