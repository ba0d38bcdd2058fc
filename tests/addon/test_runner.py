"""The add-on's worker runner (addon/runner.py) against the real worker process, without Blender.

The worker here is the real ``python -m core run`` (real argument parsing, protocol, pipeline,
resume keys, signal handling); where a test needs stages that run for a while or succeed on
any input, the pipeline's stage list is swapped for small test stages by a stand-in for the
environment's Python (``troupe_extension.fake_env_python``), as tests/core/test_pipeline.py does. The runs on
the real stages (a synthetic clip end to end) are in test_runner_real.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.addon.troupe_extension import CORE_PYTHON, ROOT, assert_reaped, fake_env_python, load_troupe_module

pytestmark = pytest.mark.skipif(not CORE_PYTHON.exists(), reason="needs .venv/core (scripts/setup.sh core)")

runner = load_troupe_module("addon.runner")


@pytest.fixture(name="fake_env_python")
def _fake_env_python(tmp_path_factory) -> str:
    return fake_env_python(tmp_path_factory.mktemp("fakeenv"))


@pytest.fixture()
def odd_dir(tmp_path) -> Path:
    """A folder whose name has spaces and non-ASCII letters."""
    d = tmp_path / "Aufnahme mit Leerzeichen ü é 舞蹈"
    d.mkdir()
    return d


def make_spec(python: str, folder: Path, job: str = "job", **kw) -> runner.JobSpec:
    video = folder / "clip ü.mp4"
    video.write_bytes(b"not read by the test stages")
    return runner.JobSpec(python=python, video=str(video), job_dir=str(folder / job), **kw)


def wait_until(job, predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(job):
        assert time.monotonic() < deadline, f"timed out; status {job.status}: {job.message}"
        job.poll(timeout=0.2)


def test_run_reports_ordered_progress_and_done(fake_env_python, odd_dir, monkeypatch):
    monkeypatch.setenv("TEST_STAGE_DELAY", "0.3")
    spec = make_spec(fake_env_python, odd_dir)
    job = runner.Job.start(spec)
    seen_running = []
    job.wait(timeout=60, on_change=lambda j: seen_running.append((j.status, j.stage, j.fraction)))
    assert job.finished and job.status == runner.DONE, job.error
    assert job.bundle == str(Path(spec.job_dir) / "bundle")
    kinds = [m["type"] for m in job.history]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"progress"}
    fractions = [m["fraction"] for m in job.history if m["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [m["stage"] for m in job.history if m["type"] == "progress"][-1] == "second"
    assert any(st == runner.RUNNING and 0 < f < 1 for st, _, f in seen_running), "progress was seen live"
    # The path with spaces and non-ASCII letters reached the worker intact.
    assert (Path(spec.job_dir) / "first" / "out.txt").read_text() == "first"
    log = job.log_path.read_text(encoding="utf-8")
    assert "library chatter" in log
    assert job.elapsed_s >= 0.3 and job.eta_s == 0.0  # at least the two stages' delays
    assert_reaped(job.pid)


def test_cancel_ends_within_seconds_and_the_next_run_resumes(fake_env_python, odd_dir, monkeypatch):
    monkeypatch.setenv("TEST_STAGE_DELAY", "4")
    spec = make_spec(fake_env_python, odd_dir)
    job = runner.Job.start(spec)
    wait_until(job, lambda j: j.stage == "second" and j.stage_fraction > 0)
    t0 = time.monotonic()
    job.cancel()
    assert job.status == runner.CANCELLING
    wait_until(job, lambda j: j.finished, timeout=10)
    assert time.monotonic() - t0 < 5.0
    assert job.status == runner.CANCELLED and "resume" in job.error
    assert job.log_path.is_file()
    assert_reaped(job.pid)
    calls = Path(spec.job_dir) / "calls.txt"
    assert calls.read_text().split() == ["first", "second"]

    monkeypatch.setenv("TEST_STAGE_DELAY", "0")
    again = runner.Job.start(spec)
    again.wait(timeout=60)
    assert again.status == runner.DONE, again.error
    assert calls.read_text().split() == ["first", "second", "second"], "the finished stage is not redone"


def test_a_worker_that_ignores_cancel_is_killed_after_the_grace_period(fake_env_python, odd_dir, monkeypatch):
    monkeypatch.setenv("TEST_IGNORE_CANCEL", "1")
    job = runner.Job.start(make_spec(fake_env_python, odd_dir), grace_s=1.0)
    wait_until(job, lambda j: j.stage == "second")
    time.sleep(0.3)  # inside the stage's long sleep
    t0 = time.monotonic()
    job.cancel()
    wait_until(job, lambda j: j.finished, timeout=10)
    assert 1.0 <= time.monotonic() - t0 < 5.0
    assert job.status == runner.CANCELLED
    assert_reaped(job.pid)


def test_a_killed_worker_is_an_error_that_points_at_its_log(fake_env_python, odd_dir, monkeypatch):
    monkeypatch.setenv("TEST_STAGE_DELAY", "4")
    job = runner.Job.start(make_spec(fake_env_python, odd_dir))
    wait_until(job, lambda j: j.stage == "second" and j.stage_fraction > 0)
    os.kill(job.pid, signal.SIGKILL)
    wait_until(job, lambda j: j.finished, timeout=10)
    assert job.status == runner.FAILED
    assert "SIGKILL" in job.error and str(job.log_path) in job.error
    assert "second" in job.error and "resume" in job.error
    assert job.log_path.is_file()
    assert_reaped(job.pid)


def test_missing_body_model_is_one_clear_error_line(odd_dir):
    """The real worker and pipeline: the body model is looked for before any stage runs."""
    spec = make_spec(str(CORE_PYTHON), odd_dir, body_model=str(odd_dir / "no model here"))
    job = runner.Job.start(spec)
    job.wait(timeout=60)
    assert job.status == runner.FAILED
    assert "SMPL-X body model not found" in job.error and "SMPLX_NEUTRAL.npz" in job.error
    assert str(odd_dir / "no model here") in job.error
    assert [m["type"] for m in job.history] == ["start", "error"]
    assert job.log_path == Path(spec.job_dir) / "troupe.log" and job.log_path.is_file()


def test_relative_paths_are_relative_to_the_callers_folder(fake_env_python, odd_dir, monkeypatch):
    monkeypatch.chdir(Path(fake_env_python).parent)
    spec = make_spec("./python", odd_dir)
    absolute = spec.video
    spec.video = os.path.relpath(spec.video)
    job = runner.Job.start(spec)
    job.wait(timeout=60)
    assert job.status == runner.DONE, job.error
    assert Path(json.loads((Path(spec.job_dir) / "config.json").read_text())["video"]).resolve() == Path(absolute)


def test_missing_environment_python_fails_without_starting(odd_dir):
    job = runner.Job.start(make_spec(str(odd_dir / "env" / "bin" / "python"), odd_dir))
    assert job.finished and job.status == runner.FAILED and job.pid is None
    assert "was not found" in job.error and "Set up environment" in job.error


def test_a_worker_that_cannot_start_names_the_reason(tmp_path, odd_dir):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'numpy'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    job = runner.Job.start(make_spec(str(broken), odd_dir))
    job.wait(timeout=30)
    assert job.status == runner.FAILED
    assert "could not start" in job.error and "No module named 'numpy'" in job.error
    assert "troupe.log" in job.error


def test_queue_runs_one_job_per_key_in_order(fake_env_python, odd_dir):
    q = runner.JobQueue()
    first = q.submit("scene", make_spec(fake_env_python, odd_dir, "a"))
    assert first is not None
    assert q.submit("scene", make_spec(fake_env_python, odd_dir, "b")) is None, "queued behind the running job"
    assert [Path(s.job_dir).name for s in q.waiting("scene")] == ["b"]
    with pytest.raises(ValueError, match="already used"):
        q.submit("other scene", make_spec(fake_env_python, odd_dir, "a"))
    finished = []
    deadline = time.monotonic() + 60
    while q.busy("scene"):
        assert time.monotonic() < deadline
        finished += q.poll("scene", timeout=0.2)[1]
    assert [Path(j.spec.job_dir).name for j in finished] == ["a", "b"]
    assert all(j.status == runner.DONE for j in finished)


def test_eta_is_measured_from_the_first_stage_that_does_work(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    job = runner.Job(["p"], "j/troupe.log", python="p")
    job._handle({"type": "start", "protocol": runner.PROTOCOL_VERSION})
    # Two resumed stages jump to 50 % at once; then real work goes at 10 % per 10 s.
    job._handle({"type": "progress", "stage": "ingest", "fraction": 0.1, "stage_fraction": 1.0})
    job._handle({"type": "progress", "stage": "people", "fraction": 0.5, "stage_fraction": 1.0})
    assert job.eta_s is None
    clock[0] += 10.0
    job._handle({"type": "progress", "stage": "motion", "fraction": 0.6, "stage_fraction": 0.3})
    assert job.eta_s == pytest.approx(40.0)
    assert runner.format_duration(job.eta_s) == "0:40" and runner.format_duration(3725) == "1:02:05"


def test_worker_command_is_a_list_without_a_shell():
    spec = runner.JobSpec(python="/env/bin/python", video="/v/a b.mp4", job_dir="/j/ü", frame_end=50,
                          quality="high", body_model="/m", pose_prior="/p/prior.npz", extra_args=("--tracker", "import"),
                          parent_pid=42)  # fmt: skip
    argv = spec.argv()
    assert argv[argv.index("--pose-prior") + 1] == "/p/prior.npz"
    bare = runner.JobSpec(python="p", video="v", job_dir="j").argv()
    assert "--pose-prior" not in bare and "--motion-init" not in bare
    init = runner.JobSpec(python="p", video="v", job_dir="j", motion_init="/r/gvhmr.npz").argv()
    assert init[init.index("--motion-init") + 1] == "/r/gvhmr.npz" and "--allow-pickle" not in init
    assert "--allow-pickle" in runner.JobSpec(python="p", video="v", job_dir="j", motion_init="/r/phalp.pkl",
                                              allow_pickle=True).argv()  # fmt: skip
    assert argv[:4] == ["/env/bin/python", "-m", "core", "run"] and "/v/a b.mp4" in argv
    assert argv[argv.index("--parent-pid") + 1] == "42" and argv[-2:] == ["--tracker", "import"]
    assert argv[argv.index("--frame-end") + 1] == "50" and argv[argv.index("--quality") + 1] == "high"
    with pytest.raises(ValueError, match="quality"):
        runner.JobSpec(python="p", video="v", job_dir="j", quality="ultra").argv()
    env = runner.core_environment({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and env["PYTHONPATH"] == str(ROOT) and env["PATH"] == "/bin"


def test_presets_match_the_core():
    # stdlib only; the checkout is on sys.path (conftest)
    from core.pipeline import PICKLE_SUFFIXES, QUALITY_PRESETS
    from core.protocol import PROTOCOL_VERSION

    assert runner.QUALITY_PRESETS == QUALITY_PRESETS and runner.PROTOCOL_VERSION == PROTOCOL_VERSION
    assert runner.PICKLE_SUFFIXES == PICKLE_SUFFIXES


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.addon.troupe_extension import load_troupe_module
runner = load_troupe_module("addon.runner")
job = runner.Job.start(runner.JobSpec(python={python!r}, video={video!r}, job_dir={job!r}))
job.poll(timeout=30)  # the start line
print(job.pid, flush=True)
time.sleep(600)
"""


def test_the_worker_stops_when_blender_dies(fake_env_python, odd_dir, monkeypatch):
    """Blender killed outright: the worker notices within seconds (--parent-pid) and ends cleanly."""
    import subprocess
    import sys

    monkeypatch.setenv("TEST_STAGE_DELAY", "10")
    spec = make_spec(fake_env_python, odd_dir)
    code = PARENT.format(root=str(ROOT), python=fake_env_python, video=spec.video, job=spec.job_dir)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists(), "the worker outlived Blender"
    log = (Path(spec.job_dir) / "troupe.log").read_text(encoding="utf-8")
    # It notices by the broken pipe or by --parent-pid, whichever comes first, and cancels cleanly.
    assert "cancelled; finished stages are kept" in log and "Traceback" not in log


def test_the_worker_cancels_when_the_process_it_watches_ends(fake_env_python, odd_dir, monkeypatch):
    """--parent-pid alone (the pipe stays open): the worker checks the process every second."""
    import subprocess

    monkeypatch.setenv("TEST_STAGE_DELAY", "10")
    watched = subprocess.Popen(["sleep", "600"])
    job = runner.Job.start(make_spec(fake_env_python, odd_dir, parent_pid=watched.pid))
    wait_until(job, lambda j: j.stage == "second")
    watched.kill()
    watched.wait()
    wait_until(job, lambda j: j.finished, timeout=15)
    assert job.status == runner.CANCELLED
    assert f"parent process {watched.pid} is gone: cancelling" in job.log_path.read_text(encoding="utf-8")
