# SPDX-License-Identifier: GPL-3.0-or-later
"""Start and watch the reconstruction worker (``python -m core run``) without blocking. No bpy.

The worker runs in the GPU environment's Python, with the extension folder on ``PYTHONPATH``,
and speaks the JSON line protocol of ``core/protocol.py`` on its stdout (see DESIGN.md,
"Worker protocol"). A reader thread turns those lines into messages on a queue, so Blender's
timer can ``poll()`` without ever waiting; headless runs call the same ``poll`` with a timeout.

    spec = JobSpec(python=..., video=..., job_dir=...)
    job = Job.start(spec)            # never raises for a bad environment: the job fails instead
    while not job.finished:
        job.poll(timeout=0.5)        # 0 from a UI timer
        print(job.status, job.stage, job.fraction, job.eta_s)
    job.bundle / job.error / job.log_path

Cancel sends SIGINT (CTRL_BREAK on Windows): the worker stops at its next progress report and
keeps its finished stages, so the next run on the same job folder resumes. A worker that does
not end within ``CANCEL_GRACE_S`` is killed with its process group. A worker that ends without a
``done`` or ``error`` line (killed, crashed) fails with a message that points at its log.

``JobQueue`` keeps one running job per key (the add-on uses one key per scene) and starts the
queued ones in order.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envsetup import core_environment, log_tail

PROTOCOL_VERSION = 1  # core/protocol.py PROTOCOL_VERSION this reader understands
QUALITY_PRESETS = ("preview", "standard", "high")  # core/pipeline.py QUALITY_PRESETS
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")  # core/pipeline.py PICKLE_SUFFIXES
CANCEL_GRACE_S = 20.0  # seconds a cancelled worker gets to stop on its own before it is killed
LOG_NAME = "troupe.log"  # core/pipeline.py JobDir.log_path

# Job.status values. The first three are live; the others are final.
STARTING, RUNNING, CANCELLING = "starting", "running", "cancelling"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)


@dataclass
class JobSpec:
    """One reconstruction run: what the panel or the headless script asks the worker for."""

    python: str  # the GPU environment's Python executable
    video: str  # video file or folder of frames
    job_dir: str  # job folder (an existing one is resumed)
    frame_start: int = 0  # first source frame (0-based)
    frame_end: int | None = None  # one past the last source frame; None = to the end
    frame_step: int = 1  # use every n-th frame
    max_people: int = 8  # keep at most this many people
    quality: str = "standard"  # one of QUALITY_PRESETS
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    body_model: str | None = None  # SMPL-X model folder or file; None = the worker's search path
    weights_dir: str | None = None  # learned-model weights / download cache
    pose_prior: str | None = None  # learned pose prior for the motion fit (`python -m core pose-prior`)
    motion_init: str | None = None  # another tool's result the motion fit starts from (docs/motion.md)
    allow_pickle: bool = False  # let the worker read a pickled motion_init: trusted files only
    extra_args: tuple[str, ...] = ()  # further worker flags, e.g. ("--tracker", "import", "--tracks", DIR)
    parent_pid: int | None = field(default_factory=os.getpid)  # the worker cancels when it exits

    @property
    def log_path(self) -> Path:
        return Path(self.job_dir) / LOG_NAME

    def argv(self) -> list[str]:
        """The worker's command line (a list: no shell, any characters in paths)."""
        if self.quality not in QUALITY_PRESETS:
            raise ValueError(f"quality must be one of {QUALITY_PRESETS}, not {self.quality!r}")
        args = [self.python, "-m", "core", "run", str(self.video), "--out", str(self.job_dir), "--progress", "json"]
        args += ["--frame-start", str(self.frame_start), "--frame-step", str(self.frame_step)]
        if self.frame_end is not None:
            args += ["--frame-end", str(self.frame_end)]
        args += ["--max-people", str(self.max_people), "--quality", self.quality, "--device", self.device]
        if self.body_model:
            args += ["--body-model", str(self.body_model)]
        if self.weights_dir:
            args += ["--weights-dir", str(self.weights_dir)]
        if self.pose_prior:
            args += ["--pose-prior", str(self.pose_prior)]
        if self.motion_init:
            args += ["--motion-init", str(self.motion_init)] + (["--allow-pickle"] if self.allow_pickle else [])
        if self.parent_pid:
            args += ["--parent-pid", str(self.parent_pid)]
        return args + list(self.extra_args)


def is_pickled(path: str) -> bool:
    """Whether the worker reads ``path`` as a pickle (a --motion-init file it opens only with --allow-pickle)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def python_problem(python: str, role: str = "the GPU environment's Python") -> str | None:
    """Why ``python`` cannot be started, or None if it looks like an executable."""
    if not python:
        return f"no path is set for {role}"
    p = Path(python)
    if not p.is_file():
        return f"{role} was not found: {python}"
    if sys.platform != "win32" and not os.access(p, os.X_OK):
        return f"{role} is not executable: {python}"
    return None


def job_folder(output_dir: str | Path, video: str | Path) -> Path:
    """The job folder of ``video`` under ``output_dir``: one per video, so running again resumes."""
    v = Path(video)
    name = v.stem if v.suffix else v.name  # a folder of frames is named by itself
    safe = re.sub(r'[<>:"/\\|?*\x00-\x1f]', "_", name).strip(" .") or "video"
    return Path(output_dir) / safe


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``; None -> ``"--:--"``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


_EOF = object()


class LineProcess:
    """A child process whose stdout carries JSON objects, one per line.

    stdout is read on a daemon thread into a queue, so ``get`` never blocks longer than asked.
    The child's stderr (everything it prints before it sends its output to its own log, or a
    crash it cannot catch) is appended to ``log_path``. The child gets its own process group
    (session), so a Ctrl-C in Blender's terminal does not reach it and ``kill`` takes its
    children along.
    """

    def __init__(self, argv: list[str], log_path: Path | str, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:  # fmt: skip
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.other_output: collections.deque[str] = collections.deque(maxlen=20)  # non-JSON stdout lines
        self._queue: queue.Queue[Any] = queue.Queue()
        self.eof = False
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd, **kwargs
            )
        self._reader = threading.Thread(target=self._read, name=f"troupe-reader-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = None
                if isinstance(msg, dict) and isinstance(msg.get("type"), str):
                    self._queue.put(msg)
                else:
                    self.other_output.append(line)
        finally:
            self.proc.stdout.close()
            self._queue.put(_EOF)

    def get(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next message; None if none came within ``timeout`` seconds or stdout has ended."""
        if self.eof:
            return None
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if item is _EOF:
            self.eof = True
            return None
        return item

    def returncode(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> None:
        """Ask the child to stop cleanly (SIGINT; CTRL_BREAK on Windows)."""
        if self.proc.poll() is not None:
            return
        try:
            if sys.platform == "win32":
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                self.proc.send_signal(signal.SIGINT)
        except OSError:
            pass

    def kill(self) -> None:
        """Kill the child and everything it started (its process group, even once the child
        itself has ended), and reap it."""
        if sys.platform == "win32":
            if self.proc.poll() is None:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.proc.pid)], capture_output=True, check=False)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass  # the group is empty
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        self.proc.wait()


class Job:
    """One worker run: its live state, read from the worker's protocol lines.

    Attributes a UI shows: ``status`` (STARTING, RUNNING, CANCELLING, then DONE, FAILED or
    CANCELLED), ``stage``, ``fraction`` (whole run, 0..1), ``stage_fraction``, ``message``,
    ``elapsed_s``, ``eta_s``; at the end ``bundle`` (DONE) or ``error`` (FAILED, CANCELLED),
    and always ``log_path``. ``finished`` is True once the status is final and the worker
    process has been reaped.
    """

    def __init__(self, argv: list[str], log_path: Path | str, *, python: str, cwd: str | None = None,
                 spec: JobSpec | None = None, grace_s: float = CANCEL_GRACE_S) -> None:  # fmt: skip
        self.argv = argv
        self.python = python  # the executable argv starts (named in errors)
        self.cwd = cwd
        self.spec = spec  # the reconstruction run, for worker jobs
        self.grace_s = grace_s  # seconds between a cancel (or the last line) and a kill
        self.status = STARTING
        self.stage = ""
        self.fraction = 0.0
        self.stage_fraction = 0.0
        self.message = ""
        self.result: dict[str, Any] = {}  # the ``done`` message
        self.bundle: str | None = None
        self.error: str | None = None
        self.log_path = Path(log_path)
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=5000)  # messages, in order
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self._cancel_at: float | None = None
        self._eta_ref: tuple[float, float] | None = None  # (monotonic time, fraction) the rate is measured from
        self.process: LineProcess | None = None

    @classmethod
    def start(cls, spec: JobSpec, grace_s: float = CANCEL_GRACE_S) -> Job:
        """Start the worker for ``spec``. A missing or broken Python gives a FAILED job, not an exception."""
        return cls.launch(spec.argv(), spec.log_path, python=spec.python, spec=spec, grace_s=grace_s)

    @classmethod
    def launch(cls, argv: list[str], log_path: Path | str, *, python: str, cwd: str | None = None,
               spec: JobSpec | None = None, grace_s: float = CANCEL_GRACE_S,
               role: str = "the GPU environment's Python",
               hint: str = "Set it in Preferences > Add-ons > Troupe, or run 'Set up environment' there") -> Job:  # fmt: skip
        """Start any command that speaks the protocol (the worker, the environment set-up):
        ``argv[0]`` is ``python``; ``role`` and ``hint`` name it and what to do when it cannot start."""
        if python:  # a relative path would be looked up in ``cwd``
            python = os.path.abspath(python)
            argv = [python, *argv[1:]]
        job = cls(argv, log_path, python=python, cwd=cwd, spec=spec, grace_s=grace_s)
        problem = python_problem(python, role)
        if problem is None:
            try:
                job.process = LineProcess(argv, log_path, env=core_environment(), cwd=cwd)
            except OSError as exc:
                problem = f"could not start {python}: {exc}"
        if problem is not None:
            job._finish(FAILED, f"{problem}. {hint}.")
        return job

    # -- state -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def finished(self) -> bool:
        return self.status in FINAL and (self.process is None or self.process.returncode() is not None)

    @property
    def elapsed_s(self) -> float:
        return (self._t_end if self._t_end is not None else time.monotonic()) - self._t0

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the progress rate since the first stage that does real work."""
        if self.status in FINAL:
            return 0.0 if self.status == DONE else None
        if self._eta_ref is None:
            return None
        t_ref, f_ref = self._eta_ref
        dt, df = time.monotonic() - t_ref, self.fraction - f_ref
        if dt < 2.0 or df < 0.005:
            return None
        return (1.0 - self.fraction) * dt / df

    # -- driving ---------------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> bool:
        """Read what the worker has said; wait up to ``timeout`` s for the first message.

        Returns True if anything changed. Never raises for anything the worker does.
        """
        proc = self.process
        if proc is None:
            return False
        changed = False
        msg = proc.get(timeout)
        while msg is not None:
            changed |= self._handle(msg)
            msg = proc.get()
        now = time.monotonic()
        rc = proc.returncode()
        if self.status == CANCELLING and rc is None and self._cancel_at is not None and now - self._cancel_at > self.grace_s:
            proc.kill()
            rc = proc.returncode()
        if self.status in FINAL:
            # The worker prints its last line and exits; one that lingers is stopped.
            if rc is None and self._t_end is not None and now - self._t_end > self.grace_s:
                proc.kill()
            return changed
        if rc is not None:
            # Exited: drain what the reader thread still holds, then judge the exit.
            proc._reader.join(timeout=2.0)
            msg = proc.get()
            while msg is not None:
                changed |= self._handle(msg)
                msg = proc.get()
            if self.status not in FINAL:
                proc.kill()  # whatever it started dies with it
                self._finish_without_last_line(rc)
            return True
        return changed

    def cancel(self) -> None:
        """Ask the worker to stop (it is killed if it has not stopped within ``grace_s``)."""
        if self.status in FINAL:
            return
        if self.process is None or self.process.returncode() is not None:
            self._finish(CANCELLED, "cancelled before the worker started")
            return
        if self.status != CANCELLING:
            self.status = CANCELLING
            self.message = "cancelling..."
            self._cancel_at = time.monotonic()
            self.process.interrupt()

    def wait(self, timeout: float | None = None, on_change: Any = None) -> bool:
        """Block until finished (headless use); ``on_change(job)`` after each change. True if finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                return False
            if self.poll(timeout=0.25) and on_change is not None:
                on_change(self)
        return True

    def abandon(self) -> None:
        """Cancel and let a background thread reap the worker (Blender is closing or reloading)."""
        proc = self.process
        if proc is None or proc.returncode() is not None:
            return
        proc.interrupt()

        def reap() -> None:
            try:
                proc.proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()

        threading.Thread(target=reap, name=f"troupe-reap-{proc.pid}", daemon=True).start()

    # -- internals -------------------------------------------------------------------------------

    def _finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        if error:
            self.message = error
        self._t_end = time.monotonic()

    def _handle(self, msg: dict[str, Any]) -> bool:
        self.history.append(msg)
        kind = msg.get("type")
        if kind == "start":
            if msg.get("protocol") != PROTOCOL_VERSION:
                self._finish(FAILED, f"the worker speaks protocol {msg.get('protocol')}, this add-on "
                                     f"{PROTOCOL_VERSION}: install matching versions. Log: {self.log_path}")  # fmt: skip
                if self.process:
                    self.process.interrupt()
                return True
            if self.status == STARTING:
                self.status = RUNNING
            return True
        if self.status in FINAL:
            return False
        if kind == "progress":
            stage = str(msg.get("stage", ""))
            fraction = float(msg.get("fraction", self.fraction))
            stage_fraction = float(msg.get("stage_fraction", 0.0))
            now = time.monotonic()
            # A stage that reports "complete" as its first line was skipped (resumed): the rate
            # for the time estimate is measured from the last such jump.
            skipped = stage != self.stage and stage_fraction >= 1.0
            if self._eta_ref is None or skipped:
                self._eta_ref = (now, fraction)
            self.stage, self.fraction, self.stage_fraction = stage, fraction, stage_fraction
            if self.status != CANCELLING:
                self.message = str(msg.get("message", ""))
            return True
        if kind == "done":
            self.result = msg
            self.bundle = str(msg["bundle"]) if msg.get("bundle") else None
            self.fraction = 1.0
            self.message = "finished"
            self._finish(DONE)
            return True
        if kind == "error":
            text = str(msg.get("message", "the worker reported an error"))
            log = msg.get("log") or str(self.log_path)
            self.log_path = Path(log)
            if msg.get("cancelled"):
                self._finish(CANCELLED, text)
            else:
                self._finish(FAILED, text)
            return True
        return False

    def _finish_without_last_line(self, rc: int) -> None:
        log = self.log_path
        if self.status == CANCELLING:
            self._finish(CANCELLED, f"cancelled (the worker was stopped). The job folder is kept: run again to resume. Log: {log}")
            return
        if rc < 0 and sys.platform != "win32":
            why = f"was killed by {_signal_name(rc)}"
            if -rc == signal.SIGKILL:
                why += " (most often: the system ran out of memory)"
        else:
            why = f"stopped with exit code {rc}"
        last = [ln for ln in list(self.process.other_output if self.process else []) + log_tail(log, 3)]
        detail = f" Last output: {last[-1].strip()}" if last else ""
        if self.status == STARTING:
            self._finish(FAILED, f"the worker could not start in {self.python}: it {why}.{detail} Log: {log}")
        else:
            self._finish(FAILED, f"the worker {why} before it finished{' ' + self.stage if self.stage else ''}. "
                                 f"Finished stages are kept: run again to resume.{detail} Log: {log}")  # fmt: skip


class JobQueue:
    """One running job per key (a scene), the others waiting in order.

    Keys are any hashable; the add-on uses the scene's session id. Two jobs may not share a job
    folder at the same time.
    """

    def __init__(self) -> None:
        self._active: dict[Hashable, Job] = {}
        self._waiting: dict[Hashable, collections.deque[JobSpec]] = {}

    def submit(self, key: Hashable, spec: JobSpec) -> Job | None:
        """Start ``spec`` now (returns its Job) or queue it behind the key's running job (None)."""
        folder = Path(spec.job_dir).absolute()
        for other in [j.spec for j in self._active.values() if j.spec] + [s for q in self._waiting.values() for s in q]:
            if Path(other.job_dir).absolute() == folder:
                raise ValueError(f"the job folder {folder} is already used by a running or queued job")
        if key in self._active:
            self._waiting.setdefault(key, collections.deque()).append(spec)
            return None
        job = self._active[key] = Job.start(spec)
        return job

    def active(self, key: Hashable) -> Job | None:
        return self._active.get(key)

    def waiting(self, key: Hashable) -> list[JobSpec]:
        return list(self._waiting.get(key, ()))

    def busy(self, key: Hashable) -> bool:
        return key in self._active or bool(self._waiting.get(key))

    def keys(self) -> Iterable[Hashable]:
        return set(self._active) | {k for k, q in self._waiting.items() if q}

    def poll(self, key: Hashable, timeout: float = 0.0) -> tuple[bool, list[Job]]:
        """Advance the key's jobs. Returns (anything changed, jobs that finished since the last poll);
        the next waiting job is started as soon as the running one has finished."""
        finished: list[Job] = []
        job = self._active.get(key)
        if job is None:
            job = self._start_next(key)
            if job is None:
                return False, finished
        changed = job.poll(timeout)
        if job.finished:
            finished.append(job)
            del self._active[key]
            self._start_next(key)
            changed = True
        return changed, finished

    def _start_next(self, key: Hashable) -> Job | None:
        waiting = self._waiting.get(key)
        if not waiting:
            return None
        spec = waiting.popleft()
        job = self._active[key] = Job.start(spec)
        return job

    def cancel(self, key: Hashable, clear_queue: bool = False) -> None:
        if clear_queue:
            self._waiting.pop(key, None)
        job = self._active.get(key)
        if job is not None:
            job.cancel()

    def clear_waiting(self, key: Hashable) -> int:
        return len(self._waiting.pop(key, ()))

    def shutdown(self) -> None:
        """Stop every job without waiting (their workers are reaped in the background)."""
        self._waiting.clear()
        for job in self._active.values():
            job.abandon()
        self._active.clear()
