"""The worker's line protocol (stdout, one JSON object per line).

    {"type": "progress", "stage": "track", "fraction": 0.42, "stage_fraction": 0.8, "message": "..."}
    {"type": "done", "bundle": "/abs/path/to/job/bundle"}
    {"type": "error", "message": "...", "log": "/abs/path/to/job/troupe.log", "cancelled": false}

``fraction`` is the whole run's progress in [0, 1]; ``stage_fraction`` that of the stage.
Exactly one ``done`` or ``error`` line ends every run. Everything else (library output,
warnings, tracebacks) goes to the log file, never to stdout, so the reader can trust every line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

PROTOCOL_VERSION = 1


class Reporter:
    """Writes protocol lines (mode "json") or human-readable progress (mode "text").

    When the reader has gone (Blender quit or crashed: a broken pipe), nothing more is written
    and ``on_reader_gone`` is called once, so the worker can cancel cleanly instead of failing
    on its next line.
    """

    def __init__(self, stream: IO[str], mode: str = "json", on_reader_gone: Callable[[], None] | None = None) -> None:
        if mode not in ("json", "text"):
            raise ValueError(f"progress mode must be 'json' or 'text', not {mode!r}")
        self.stream = stream
        self.mode = mode
        self.finished = False
        self.reader_gone = False
        self.on_reader_gone = on_reader_gone
        self._last_text = 0.0

    def _emit(self, obj: dict[str, Any]) -> None:
        if self.reader_gone:
            return
        try:
            self._write(obj)
        except (BrokenPipeError, ConnectionResetError):
            self.reader_gone = True
            if self.on_reader_gone is not None:
                self.on_reader_gone()

    def _write(self, obj: dict[str, Any]) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        else:
            kind = obj["type"]
            if kind == "progress":
                now = time.monotonic()
                if now - self._last_text < 0.5 and obj.get("stage_fraction", 0) < 1.0:
                    return
                self._last_text = now
                msg = f"[{obj['fraction'] * 100:5.1f}%] {obj['stage']}: {obj.get('message', '')}"
            elif kind == "done":
                msg = f"done: {obj['bundle']}"
            else:
                msg = f"error: {obj['message']}\n  log: {obj.get('log')}"
            self.stream.write(msg + "\n")
        self.stream.flush()

    def hello(self, job: str) -> None:
        if self.mode == "json":
            self._emit({"type": "start", "protocol": PROTOCOL_VERSION, "job": job, "pid": os.getpid()})

    def progress(self, stage: str, fraction: float, stage_fraction: float, message: str = "") -> None:
        self._emit(
            {
                "type": "progress",
                "stage": stage,
                "fraction": round(min(max(fraction, 0.0), 1.0), 4),
                "stage_fraction": round(min(max(stage_fraction, 0.0), 1.0), 4),
                "message": message,
            }
        )

    def done(self, bundle: str) -> None:
        self.finished = True
        self._emit({"type": "done", "bundle": bundle})

    def error(self, message: str, log: str | None, *, cancelled: bool = False) -> None:
        self.finished = True
        self._emit({"type": "error", "message": message, "log": log, "cancelled": cancelled})


def redirect_std_to(log_file: IO[str]) -> IO[str]:
    """Send fd 1 and 2 (and sys.stdout/err) to ``log_file``; return a text stream on the
    original stdout for protocol lines. Library prints then land in the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    proto_fd = os.dup(1)
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    proto = os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)
    sys.stdout = log_file
    sys.stderr = log_file
    return proto
