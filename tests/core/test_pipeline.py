"""The resumable pipeline and the worker's line protocol, with small test stages.

The real stages are tested in their own files; here the stages are tiny modules written into
a temporary folder, so the protocol, resume keys and cancelling are checked on their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core import pipeline
from core.pipeline import Cancelled, JobDir, RunConfig, StageSpec, run_pipeline

ROOT = Path(__file__).resolve().parents[2]

STAGE_CODE = textwrap.dedent(
    '''
    import json, os, sys, time

    def run_stage(ctx):
        calls = ctx.job.root / "calls.txt"
        with open(calls, "a") as fh:
            fh.write(ctx.name + "\\n")
        print("library chatter on stdout")           # must land in the log, not the protocol
        print("library chatter on stderr", file=sys.stderr)
        delay = float(os.environ.get("TEST_STAGE_DELAY", "0"))
        steps = 5
        for i in range(steps):
            ctx.progress(i / steps, f"step {i}")
            end = time.monotonic() + delay / steps
            while os.environ.get("TEST_CHATTER") and ctx.name == "second" and i > 0 and time.monotonic() < end:
                print("a library that logs a lot " * 1000)  # the log file is busy most of the time
                ctx.progress(i / steps, f"step {i}")
            time.sleep(max(0.0, end - time.monotonic()))
        (ctx.out_dir / "out.json").write_text(json.dumps({"stage": ctx.name}))
    '''
)


@pytest.fixture()
def stage_module(tmp_path, monkeypatch):
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_stage.py").write_text(STAGE_CODE)
    monkeypatch.syspath_prepend(str(mod_dir))
    return mod_dir


def specs() -> list[StageSpec]:
    return [
        StageSpec("first", "fake_stage:run_stage", ("frame_step",), 1.0, "first"),
        StageSpec("second", "fake_stage:run_stage", ("quality",), 1.0, "second"),
    ]


def calls(job: JobDir) -> list[str]:
    p = job.root / "calls.txt"
    return p.read_text().split() if p.exists() else []


def test_resume_skips_done_stages_and_reruns_only_what_a_setting_changes(tmp_path, stage_module):
    job = JobDir(tmp_path / "job")
    events = []
    report = lambda st, f, sf, m: events.append((st, f, sf))  # noqa: E731
    run_pipeline(job, RunConfig(), report, stages=specs())
    assert calls(job) == ["first", "second"]
    fractions = [f for _, f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    run_pipeline(job, RunConfig(), report, stages=specs())
    assert calls(job) == ["first", "second"], "an unchanged run must not redo anything"

    run_pipeline(job, RunConfig(quality="high"), report, stages=specs())
    assert calls(job) == ["first", "second", "second"], "a downstream setting re-runs only that stage"

    run_pipeline(job, RunConfig(quality="high", frame_step=2), report, stages=specs())
    assert calls(job)[-2:] == ["first", "second"], "an upstream setting re-runs it and everything after"
    assert json.loads(job.config_path.read_text())["frame_step"] == 2


def test_a_stage_whose_code_changed_runs_again(tmp_path, stage_module):
    """After an update of Troupe that changed a stage, resuming a job runs that stage (and those
    after it) again instead of handing back the old code's results; the stages before it stay done."""
    (stage_module / "fake_second.py").write_text(STAGE_CODE)
    stages = [specs()[0], StageSpec("second", "fake_second:run_stage", ("quality",), 1.0, "second")]
    job = JobDir(tmp_path / "job")
    run_pipeline(job, RunConfig(), lambda *a: None, stages=stages)
    run_pipeline(job, RunConfig(), lambda *a: None, stages=stages)
    assert calls(job) == ["first", "second"]
    (stage_module / "fake_second.py").write_text(STAGE_CODE + "\n# a fix in the second stage\n")
    run_pipeline(job, RunConfig(), lambda *a: None, stages=stages)
    assert calls(job) == ["first", "second", "second"]
    assert pipeline.code_fingerprint("core.motion.stage:run_stage") == pipeline.code_fingerprint("core.motion.fit:x")


def test_an_input_file_rebuilt_at_the_same_path_runs_the_motion_stage_again(tmp_path):
    """The motion stage's key holds its input files' content (the pose prior, the init), not only
    their paths: a prior rebuilt in place must not leave the old fit standing."""
    motion = next(s for s in pipeline.STAGES if s.name == "motion")
    prior = tmp_path / "prior.npz"
    prior.write_bytes(b"first")
    config = RunConfig(video="clip.mp4", pose_prior=str(prior))
    first = pipeline.stage_key(motion, config, "up")
    assert pipeline.stage_key(motion, config, "up") == first
    prior.write_bytes(b"second")
    assert pipeline.stage_key(motion, config, "up") != first
    # and a stage that does not read it keeps its key
    people = next(s for s in pipeline.STAGES if s.name == "people")
    assert pipeline.stage_key(people, config, "up") == pipeline.stage_key(people, RunConfig(video="clip.mp4"), "up")


def test_a_change_in_code_a_stage_imports_from_another_package_runs_it_again(tmp_path, monkeypatch):
    """A stage's results depend on the shared code it imports (the body model, the bundle), not
    only on its own package: a fix there must re-run it, and a change in code it never imports
    must not throw its results away."""
    pkg = tmp_path / "mods" / "tpkg"
    for d in ("", "stagepkg", "shared", "other"):
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "stagepkg" / "run.py").write_text(
        "def run_stage(ctx):\n    from ..shared.model import scale\n    from .. import helper\n    return scale, helper\n"
    )
    (pkg / "shared" / "model.py").write_text("import tpkg.shared.geometry\nscale = 1.0\n")
    (pkg / "shared" / "geometry.py").write_text("UP = (0, 1, 0)\n")
    (pkg / "helper.py").write_text("x = 1\n")
    (pkg / "other" / "unused.py").write_text("y = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    target = "tpkg.stagepkg.run:run_stage"
    names = {"/".join(f.relative_to(pkg).parts) for f in pipeline.code_files(target)}
    assert names == {"__init__.py", "stagepkg/__init__.py", "stagepkg/run.py", "shared/__init__.py", "shared/model.py",
                     "shared/geometry.py", "helper.py"}  # fmt: skip
    before = pipeline.code_fingerprint(target)
    for f, changed in (("other/unused.py", False), ("shared/geometry.py", True), ("helper.py", True)):
        (pkg / f).write_text((pkg / f).read_text() + "# a fix\n")
        now = pipeline.code_fingerprint(target)
        assert (now != before) == changed, f
        before = now
    # Troupe's own: the motion stage counts the body model and the bundle it writes with
    motion = {"/".join(f.parts[-2:]) for f in pipeline.code_files("core.motion.stage:run_stage")}
    assert {"motion/fit.py", "body/model.py", "core/bundle.py"} <= motion and "core/pipeline.py" not in motion


def test_cancel_keeps_finished_stages_and_resumes(tmp_path, stage_module):
    job = JobDir(tmp_path / "job")
    seen = []

    def report(stage, f, sf, msg):
        seen.append(stage)

    def cancelled():
        return "second" in seen

    with pytest.raises(Cancelled):
        run_pipeline(job, RunConfig(), report, cancelled, stages=specs())
    assert job.marker("first").exists() and not job.marker("second").exists()
    assert calls(job) == ["first"]
    run_pipeline(job, RunConfig(), lambda *a: None, stages=specs())
    assert calls(job) == ["first", "second"], "the finished first stage is not redone"


def test_missing_stage_module_is_reported_unavailable(tmp_path):
    spec = StageSpec("motion", "core.no_such_stage:run_stage", (), 1.0, "motion")
    with pytest.raises(pipeline.StageUnavailable, match="stage 'motion'.*not available"):
        pipeline.load_stage(spec)


def test_missing_dependency_is_named(tmp_path, monkeypatch):
    (tmp_path / "needs_dep.py").write_text("import troupe_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(pipeline.JobError, match="troupe_missing_dependency_xyz"):
        pipeline.load_stage(StageSpec("x", "needs_dep:run_stage", (), 1.0))


# --- the worker process and its protocol ------------------------------------------------

WORKER_WRAPPER = textwrap.dedent(
    """
    import sys
    from core import pipeline
    from core.pipeline import StageSpec
    pipeline.STAGES[:] = [
        StageSpec("first", "fake_stage:run_stage", (), 1.0, "first"),
        StageSpec("second", "fake_stage:run_stage", (), 1.0, "second"),
    ]
    from core.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)


def start_worker(tmp_path: Path, mod_dir: Path, job: Path, delay: float = 0.0, chatter: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(mod_dir)]), TEST_STAGE_DELAY=str(delay),
               TEST_CHATTER="1" if chatter else "")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_WRAPPER, "run", str(tmp_path / "clip.mp4"), "--out", str(job), "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def test_worker_speaks_only_protocol_lines_on_stdout(tmp_path, stage_module):
    job = tmp_path / "job with spaces ü"
    proc = start_worker(tmp_path, stage_module, job)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]  # every line is JSON
    assert lines[0]["type"] == "start"
    assert lines[-1] == {"type": "done", "bundle": str(job / "bundle")}
    progress = [ln for ln in lines if ln["type"] == "progress"]
    assert [p["stage"] for p in progress][0] == "first" and progress[-1]["stage"] == "second"
    fr = [p["fraction"] for p in progress]
    assert fr == sorted(fr)
    log = (job / "troupe.log").read_text()
    assert "library chatter on stdout" in log and "library chatter on stderr" in log
    assert "chatter" not in out


def test_sigint_cancels_cleanly_and_the_next_run_resumes(tmp_path, stage_module):
    job = tmp_path / "job"
    proc = start_worker(tmp_path, stage_module, job, delay=3.0)
    assert proc.stdout is not None
    # wait until the second stage runs, then cancel
    for line in proc.stdout:
        msg = json.loads(line)
        if msg["type"] == "progress" and msg["stage"] == "second" and msg["stage_fraction"] > 0:
            break
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5.0
    last = json.loads(rest.splitlines()[-1])
    assert last["type"] == "error" and last.get("cancelled") is True, last
    assert Path(last["log"]).is_file()
    assert proc.returncode == 130
    assert (job / "first" / ".done.json").exists() and not (job / "second" / ".done.json").exists()

    proc = start_worker(tmp_path, stage_module, job)
    out, _ = proc.communicate(timeout=60)
    assert json.loads(out.splitlines()[-1])["type"] == "done"
    assert (job / "calls.txt").read_text().split() == ["first", "second", "second"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO (POSIX)")
def test_sigint_that_lands_inside_a_write_to_the_log_still_cancels(tmp_path, stage_module):
    """A library in the stage writes to the log (a slow disk, a network share) when the cancel
    comes. A signal handler that wrote to the log itself would break that write ("reentrant
    call") and turn the cancel into a failure. The log is a FIFO whose reader stops reading, so
    the stage is certainly inside a write when the signal lands."""
    job = tmp_path / "job"
    job.mkdir()
    os.mkfifo(job / "troupe.log")
    reading, stopped, log = threading.Event(), threading.Event(), bytearray()

    def read_log() -> None:
        with open(job / "troupe.log", "rb", buffering=0) as fh:
            while chunk := fh.read(4096):
                log.extend(chunk)
                if not reading.is_set():
                    stopped.set()
                    reading.wait()

    reading.set()
    threading.Thread(target=read_log, daemon=True).start()
    proc = start_worker(tmp_path, stage_module, job, delay=3.0, chatter=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        msg = json.loads(line)
        if msg["type"] == "progress" and msg["stage"] == "second" and msg["stage_fraction"] > 0:
            break
    reading.clear()  # the pipe fills and the stage's next write blocks
    assert stopped.wait(10)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    reading.set()
    rest, _ = proc.communicate(timeout=30)
    last = json.loads(rest.splitlines()[-1])
    assert last["type"] == "error" and last.get("cancelled") is True, last
    assert proc.returncode == 130
    assert b"the next run resumes after them (SIGINT)" in log


def test_unavailable_stage_ends_in_one_error_line(tmp_path):
    job = tmp_path / "job"
    wrapper = WORKER_WRAPPER.replace("fake_stage:run_stage", "core.not_built_yet:run_stage")
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, "run", "x.mp4", "--out", str(job), "--progress", "json"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60,
    )  # fmt: skip
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    terminal = [ln for ln in lines if ln["type"] in ("done", "error")]
    assert len(terminal) == 1 and terminal[0]["type"] == "error"
    assert "not available" in terminal[0]["message"] and proc.returncode == 2
