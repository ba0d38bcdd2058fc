"""``python -m core run``: the reconstruction worker the Blender add-on starts.

Speaks the line protocol of ``core.protocol`` on stdout; everything else goes to the job's
``troupe.log``. SIGINT cancels cleanly: the current stage stops at its next progress report,
finished stages keep their outputs and the next run resumes after them. With
``--parent-pid`` the worker cancels itself when that process (Blender) is gone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from . import pipeline
from .pipeline import QUALITY_PRESETS, Cancelled, JobDir, JobError, RunConfig, StageUnavailable, run_pipeline
from .protocol import Reporter, redirect_std_to

log = logging.getLogger("troupe")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (anything OpenCV reads) or a folder of frames")
    p.add_argument("--out", required=True, help="job directory (created; an existing one is resumed)")
    p.add_argument("--progress", choices=("json", "text"), default="text",
                   help="json: one protocol line per event on stdout (for the add-on); text: for people")
    p.add_argument("--frame-start", type=int, default=0)
    p.add_argument("--frame-end", type=int, default=None, help="one past the last source frame")
    p.add_argument("--frame-step", type=int, default=1)
    p.add_argument("--max-size", type=int, default=1280, help="longest image side to work at")
    p.add_argument("--max-people", type=int, default=8)
    p.add_argument("--quality", choices=QUALITY_PRESETS, default="standard")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--tracker", choices=("sam2", "offline", "import"), default="offline")
    p.add_argument("--tracks", default=None, help="for --tracker import: masks folder or a `core synth` output")
    p.add_argument("--keypoints", choices=("auto", "vitpose", "offline", "import"), default="auto")
    p.add_argument("--body-model", default=None, help="SMPL-X model folder or file")
    p.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral")
    p.add_argument("--motion-init", default=None, metavar="PATH",
                   help="start the motion fit from another tool's result: a Troupe bundle, an npz (docs/motion.md) "
                        "or, with --allow-pickle, a 4D-Humans/PHALP .pkl")
    p.add_argument("--allow-pickle", action="store_true",
                   help="let --motion-init read pickled files (they can run code): only for files you trust")
    p.add_argument("--pose-prior", default=None, metavar="PATH",
                   help="fit with a learned pose prior built from motion capture (`python -m core pose-prior`)")
    p.add_argument("--weights-dir", default=None, help="folder of learned-model weights / download cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-avatars", dest="avatars", action="store_false", help="motion only: skip the Gaussian avatars")
    p.add_argument("--parent-pid", type=int, default=None, help="cancel when this process exits")
    p.add_argument("--verbose", action="store_true", help="debug-level log")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        video=str(Path(args.video).absolute()),
        frame_start=args.frame_start,
        frame_end=args.frame_end,
        frame_step=args.frame_step,
        max_size=args.max_size,
        max_people=args.max_people,
        quality=args.quality,
        device=args.device,
        tracker=args.tracker,
        tracks=str(Path(args.tracks).absolute()) if args.tracks else None,
        keypoints=args.keypoints,
        body_model=args.body_model,
        gender=args.gender,
        motion_init=str(Path(args.motion_init).absolute()) if args.motion_init else None,
        allow_pickle=args.allow_pickle,
        pose_prior=str(Path(args.pose_prior).absolute()) if args.pose_prior else None,
        weights_dir=args.weights_dir,
        seed=args.seed,
        avatars=args.avatars,
    )


def preflight(config: RunConfig) -> None:
    """Find the body model and read the pose prior before any stage runs, not after minutes of
    tracking."""
    from .body.model import BodyModelNotFound, find_model_file

    if any(s.name == "motion" for s in pipeline.STAGES):
        try:
            find_model_file(config.body_model, config.gender)
        except BodyModelNotFound as exc:
            raise JobError(str(exc)) from None
        if config.pose_prior:
            from .motion.pose_prior import read_pose_prior

            read_pose_prior(config.pose_prior)  # PosePriorError is a JobError


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x00100000 | 0x1000, False, pid)  # SYNCHRONIZE | QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return True


class CancelFlag:
    """Whether, and why, the run was asked to stop. Set from signal handlers, so it takes no lock
    (a ``threading.Event`` does: a handler that runs while the main thread sets it would deadlock)."""

    def __init__(self) -> None:
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    def is_set(self) -> bool:
        return bool(self.reason)


def _watch_parent(pid: int, cancel: CancelFlag) -> None:
    # When the pid is our own parent, being re-parented also means it is gone (even if the pid is reused).
    was_parent = os.name != "nt" and os.getppid() == pid
    while not cancel.is_set():
        if not _pid_alive(pid) or (was_parent and os.getppid() != pid):
            log.warning("parent process %d is gone: cancelling", pid)
            cancel.set(f"parent process {pid} is gone")
            return
        time.sleep(1.0)


def main(args: argparse.Namespace) -> int:
    job = JobDir(args.out)
    job.root.mkdir(parents=True, exist_ok=True)
    log_file = open(job.log_path, "a", encoding="utf-8", buffering=1)  # open for the life of the process
    proto = redirect_std_to(log_file) if args.progress == "json" else sys.stdout
    logging.basicConfig(
        stream=log_file,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if args.progress == "text":
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        logging.getLogger().addHandler(console)
    cancel = CancelFlag()

    def on_reader_gone() -> None:
        log.warning("nobody reads the progress any more (the add-on has gone): cancelling")
        cancel.set("the add-on stopped reading the progress")

    reporter = Reporter(proto, args.progress, on_reader_gone=on_reader_gone)

    def on_sigint(signum: int, frame: object) -> None:
        # No logging here: the signal may land inside the main thread's own write to the log,
        # and a second write from the handler fails that one ("reentrant call"). The reason is
        # logged when the stage stops.
        if cancel.is_set():  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        cancel.set(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    if hasattr(signal, "SIGBREAK"):  # Windows: the add-on cancels with CTRL_BREAK_EVENT
        signal.signal(signal.SIGBREAK, on_sigint)
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, cancel), daemon=True).start()

    log.info("troupe worker pid %d: %s", os.getpid(), " ".join(sys.argv))
    reporter.hello(str(job.root))
    log_path = str(job.log_path)
    try:
        config = config_from_args(args)
        preflight(config)
        bundle = run_pipeline(
            job, config, lambda st, f, sf, msg: reporter.progress(st, f, sf, msg), cancel.is_set
        )
        reporter.done(str(bundle))
        return 0
    except (Cancelled, KeyboardInterrupt):
        log.warning("cancelled; finished stages are kept and the next run resumes after them (%s)",
                    cancel.reason or "KeyboardInterrupt")
        reporter.error("cancelled; run again with the same job folder to resume", log_path, cancelled=True)
        return 130
    except (JobError, StageUnavailable) as exc:
        log.error("%s", exc)
        reporter.error(str(exc), log_path)
        return 2
    except Exception as exc:
        log.error("unexpected failure:\n%s", traceback.format_exc())
        reporter.error(f"unexpected failure: {type(exc).__name__}: {exc} (details in the log)", log_path)
        return 1
    finally:
        log_file.flush()
