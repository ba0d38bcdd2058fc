"""The runner on the real pipeline: a synthetic clip through ingest, people (ground-truth tracks),
motion and export, and the real ingest's answer to a file that is not a video.

A test that needs a stage that is not built yet skips and names it.
"""

from __future__ import annotations

import pytest

from tests.addon.troupe_extension import (
    CORE_PYTHON,
    cpu_path_options,
    load_troupe_module,
    needs_cpu_path,
    small_synth,
)

pytestmark = pytest.mark.skipif(not CORE_PYTHON.exists(), reason="needs .venv/core (scripts/setup.sh core)")

runner = load_troupe_module("addon.runner")

def test_a_file_that_is_not_a_video_is_one_clear_error(tmp_path, standin_dir):
    folder = tmp_path / "Aufnahme ü"
    folder.mkdir()
    video = folder / "kaputt 1.mp4"
    video.write_bytes(bytes(range(256)) * 40)
    job = runner.Job.start(runner.JobSpec(python=str(CORE_PYTHON), video=str(video), job_dir=str(folder / "job"),
                                          body_model=str(standin_dir)))  # fmt: skip
    job.wait(timeout=120)
    assert job.status == runner.FAILED
    assert str(video) in job.error and "could not open it as a video" in job.error
    terminal = [m for m in job.history if m["type"] in ("done", "error")]
    assert len(terminal) == 1 and job.stage == "ingest"


@needs_cpu_path
def test_synthetic_clip_runs_through_every_stage_to_a_valid_bundle(tmp_path_factory, standin_dir):
    synth_dir = small_synth(tmp_path_factory.getbasetemp())
    job_dir = tmp_path_factory.mktemp("real") / "job ü"
    spec = runner.JobSpec(python=str(CORE_PYTHON), video=str(synth_dir / "video.mp4"), job_dir=str(job_dir),
                          body_model=str(standin_dir), extra_args=cpu_path_options(synth_dir))  # fmt: skip
    job = runner.Job.start(spec)
    job.wait(timeout=600)
    assert job.status == runner.DONE, job.error
    progress = [m for m in job.history if m["type"] == "progress"]
    fractions = [m["fraction"] for m in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert list(dict.fromkeys(m["stage"] for m in progress)) == ["ingest", "people", "motion", "export"]
    assert len(progress) > 8, "the stages report progress while they work, not only at their ends"
    bundle = load_troupe_module("core.bundle")
    result, truth = bundle.read_bundle(job.bundle), bundle.read_bundle(synth_dir / "bundle")
    assert sorted(p.id for p in result.people) == sorted(p.id for p in truth.people)
    assert result.frame_count == truth.frame_count
