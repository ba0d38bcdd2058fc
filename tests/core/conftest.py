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
