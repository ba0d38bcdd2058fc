"""The export stage: motion bundle + avatars -> the job's result bundle."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from core import bundle as bd
from core.export import assemble, write_swapped
from core.pipeline import JobError
from tests.core.toy_bundle import make_bundle


def splats_for(person: bd.Person, n: int = 32) -> bd.Splats:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, bd.NUM_JOINTS, size=(n, 4)).astype(np.int32)
    return bd.Splats(
        means=person.rig.joints[ids[:, 0]] + rng.normal(0, 0.02, (n, 3)).astype(np.float32),
        sh=rng.normal(0, 0.3, (n, 1, 3)).astype(np.float32),
        opacity=np.zeros(n, np.float32),
        log_scales=np.full((n, 3), -4.0, np.float32),
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        skin_joints=ids,
        skin_weights=np.full((n, 4), 0.25, np.float32),
    )


@pytest.fixture()
def job(tmp_path):
    motion = make_bundle(people=2, frames=8)
    bd.write_bundle(tmp_path / "motion", motion)
    avatars = copy.deepcopy(motion)
    avatars.people = [avatars.people[0]]  # only p0 has an avatar
    refined = avatars.people[0]
    refined.motion.poses = refined.motion.poses + 0.05  # the fit refined p0's poses
    refined.splats = splats_for(refined)
    bd.write_bundle(tmp_path / "avatars", avatars)
    return tmp_path, motion


def test_export_takes_each_avatar_with_the_motion_it_was_fitted_to(job):
    root, motion = job
    result = assemble(root / "motion", root / "avatars", "/videos/clip.mp4")
    out = bd.read_bundle(write_swapped(result, root / "bundle"))
    p0, p1 = out.person("p0"), out.person("p1")
    assert p0.splats is not None and p0.splats.count == 32
    np.testing.assert_allclose(p0.motion.poses, motion.person("p0").motion.poses + 0.05, atol=1e-6)
    assert p1.splats is None, "a person without an avatar keeps motion and body only"
    np.testing.assert_allclose(p1.motion.poses, motion.person("p1").motion.poses, atol=1e-6)
    assert out.video == "/videos/clip.mp4"


def test_export_without_avatars_is_the_motion_bundle(job):
    root, motion = job
    out = bd.read_bundle(write_swapped(assemble(root / "motion", None, None), root / "bundle"))
    assert [p.id for p in out.people] == ["p0", "p1"]
    assert all(p.splats is None for p in out.people)


def test_a_broken_motion_output_is_a_clear_job_error(job):
    root, _ = job
    (root / "motion" / "people" / "p1" / "rig.npz").unlink()
    with pytest.raises(JobError, match=r"(?s)motion stage's output.*people/p1/rig.npz"):
        assemble(root / "motion", root / "avatars", None)


def test_rewriting_replaces_the_previous_bundle_whole(job):
    root, _ = job
    dest = root / "bundle"
    write_swapped(assemble(root / "motion", root / "avatars", None), dest)
    (dest / "stale.txt").write_text("from an older run")
    write_swapped(assemble(root / "motion", None, None), dest)
    assert not (dest / "stale.txt").exists()
    assert not (root / "bundle.partial").exists() and not (root / "bundle.old").exists()
    assert bd.validate(dest) == []
