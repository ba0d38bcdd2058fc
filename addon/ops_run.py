# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators that run reconstruction jobs and set up the GPU environment.

The work is done by plain functions (``submit``, ``tick``, ``cancel``, ``setup_start``,
``setup_tick``) around ``runner.Job`` / ``runner.JobQueue``. The operators only call them: from a
0.1 s window timer in the UI (a modal operator that passes every event on, so Blender stays
responsive), or in a blocking loop under ``blender -b`` and the ``bpy`` module. A scene runs one
job at a time; pressing Run again queues the next job behind it. The scene's ``troupe``
settings carry the job's state, so the panel draws from them and they are saved with the .blend.
"""

from __future__ import annotations

import atexit
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bpy
from bpy.app.handlers import persistent
from bpy.props import EnumProperty, StringProperty

from . import envsetup, prefs, runner

Result = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]  # of an operator

QUEUE = runner.JobQueue()
_DRIVEN: set[int] = set()  # scenes (keys) whose jobs a modal or blocking loop is polling
_STATUS = {runner.STARTING: "RUNNING", runner.RUNNING: "RUNNING", runner.CANCELLING: "CANCELLING",
           runner.DONE: "DONE", runner.FAILED: "FAILED", runner.CANCELLED: "CANCELLED"}  # fmt: skip


@dataclass
class _Setup:
    job: runner.Job | None = None  # the environment set-up or check in progress (or the last one)
    mode: str = ""  # INSTALL | RECREATE | CHECK


SETUP = _Setup()


# -- jobs of a scene -----------------------------------------------------------------------------


def scene_key(scene: Any) -> int:
    return int(scene.session_uid)


def scene_by_key(key: int) -> Any | None:
    return next((s for s in bpy.data.scenes if s.session_uid == key), None)


def video_of(scene: Any) -> str:
    """The video the panel points at, as an absolute path ("" if none is chosen)."""
    st = scene.troupe
    if st.video_source == "CLIP":
        clip = scene.active_clip
        if clip is None:
            return ""
        path = bpy.path.abspath(clip.filepath, library=clip.library)
        return str(Path(path).parent) if clip.source == "SEQUENCE" else path
    return bpy.path.abspath(st.video_path) if st.video_path else ""


def job_spec(context: Any, scene: Any, python: str = "") -> runner.JobSpec:
    """The worker run the scene's settings and the preferences describe; ValueError says what is missing."""
    st = scene.troupe
    video = video_of(scene)
    if not video:
        raise ValueError("choose a video file (or a movie clip) in the Troupe panel first")
    raw = st.output_dir or "//troupe/"
    if raw.startswith("//") and not bpy.data.filepath:  # an unsaved .blend has no folder of its own
        out = Path(video).parent / (raw[2:] or "troupe")
    else:
        out = Path(bpy.path.abspath(raw)).expanduser().absolute()
    pref = prefs.get(context)
    try:
        extra = tuple(envsetup.split_args(st.extra_args))
    except ValueError as exc:
        raise ValueError(f"the worker options in the Advanced panel cannot be read: {exc}") from None
    return runner.JobSpec(
        python=python or prefs.jobs_python(pref),
        video=video,
        job_dir=str(runner.job_folder(out, video)),
        frame_start=st.frame_start,
        frame_end=st.frame_end or None,
        frame_step=st.frame_step,
        max_people=st.max_people,
        quality=st.quality,
        device=pref.device if pref else "auto",
        body_model=bpy.path.abspath(pref.body_model_dir) if pref and pref.body_model_dir else None,
        weights_dir=bpy.path.abspath(pref.weights_dir) if pref and pref.weights_dir else None,
        pose_prior=bpy.path.abspath(pref.pose_prior_file) if pref and pref.pose_prior_file else None,
        motion_init=bpy.path.abspath(st.motion_init) if st.motion_init else None,
        # the trust applies to the pickled file it was given for, not to whatever path comes later
        allow_pickle=st.motion_init_pickle and runner.is_pickled(st.motion_init),
        extra_args=extra,
    )


def _set(st: Any, **values: Any) -> None:
    """Write only what changed (every write tags the scene for an update; floats are stored in 32 bits)."""
    for name, value in values.items():
        old = getattr(st, name)
        if (abs(old - value) > 1e-6) if isinstance(value, float) else old != value:
            setattr(st, name, value)


def sync(scene: Any, job: runner.Job) -> None:
    """Copy a job's live state into the scene's settings (what the panel draws)."""
    assert job.spec is not None
    eta = job.eta_s
    _set(
        scene.troupe,
        job_status=_STATUS[job.status],
        job_dir=job.spec.job_dir,
        job_stage=job.stage,
        job_fraction=min(max(job.fraction, 0.0), 1.0),
        job_message=job.message[:1000],
        job_error=job.error or "",
        job_log=str(job.log_path),
        job_bundle=job.bundle or "",
        job_elapsed=float(int(job.elapsed_s)),  # whole seconds: one write a second
        job_eta=-1.0 if eta is None else float(round(eta)),
        job_queued=len(QUEUE.waiting(scene_key(scene))),
    )
    if job.status != runner.DONE:
        _set(scene.troupe, job_imported=False)


def submit(context: Any, scene: Any, python: str = "") -> runner.Job | None:
    """Start a job for the scene, or queue it behind the running one (returns None then)."""
    spec = job_spec(context, scene, python)
    key = scene_key(scene)
    job = QUEUE.submit(key, spec)
    st = scene.troupe
    if job is None:
        st.job_queued = len(QUEUE.waiting(key))
        return None
    sync(scene, job)
    return job


def cancel(scene: Any, clear_queue: bool = True) -> None:
    key = scene_key(scene)
    QUEUE.cancel(key, clear_queue=clear_queue)
    job = QUEUE.active(key)
    if job is not None:
        sync(scene, job)
    scene.troupe.job_queued = len(QUEUE.waiting(key))


def tick(key: int, timeout: float = 0.0) -> tuple[bool, list[runner.Job]]:
    """Advance a scene's jobs: (still busy, jobs that ended now). Imports the result of a finished
    job into its scene when the scene asks for it."""
    scene = scene_by_key(key)
    if scene is None:  # the scene was deleted: its jobs have nowhere to go
        QUEUE.cancel(key, clear_queue=True)
    changed, finished = QUEUE.poll(key, timeout)
    if scene is not None:
        for job in finished:
            sync(scene, job)
            if job.status == runner.DONE and scene.troupe.import_when_done and import_result(scene) is None:
                if not bpy.app.background:  # one undo step for the import made from the timer
                    bpy.ops.ed.undo_push(message="Troupe: import result")
        active = QUEUE.active(key)
        if active is not None and (changed or active.status in (runner.STARTING, runner.RUNNING)):
            sync(scene, active)
    return QUEUE.busy(key), finished


def import_result(scene: Any) -> str | None:
    """Import the scene's last bundle into it; returns an error message or None."""
    st = scene.troupe
    try:
        from . import importer  # the bundle importer (File > Import > Troupe bundle)

        context: Any = bpy.context
        if context.scene == scene:
            importer.import_bundle(st.job_bundle, context=context)
        else:  # the job's scene is not the one shown
            with context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
                importer.import_bundle(st.job_bundle, context=bpy.context)
    except Exception as exc:  # the importer names what is wrong; show it, keep the job's result
        message = f"the result could not be imported: {exc}"
        _set(st, job_imported=False, job_error=message)
        return message
    _set(st, job_imported=True, job_error="")
    return None


def progress_text(job: runner.Job) -> str:
    """One line for the status bar and the console."""
    if job.status == runner.STARTING:
        return "Troupe: starting the worker..."
    text = f"Troupe: {job.stage or 'starting'} {job.fraction * 100:.0f}%  ·  {runner.format_duration(job.elapsed_s)}"
    left = job.eta_s
    if left is not None and job.status == runner.RUNNING:
        text += f"  ·  about {runner.format_duration(left)} left"
    if job.status == runner.CANCELLING:
        return text + "  ·  cancelling..."
    return text + (f"  ·  {job.message[:80]}" if job.message else "")


def _redraw(context: Any) -> None:
    wm = context.window_manager if context else None
    for window in wm.windows if wm else ():
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


@persistent
def _on_load_pre(*_args: Any) -> None:
    """Another file is opened: its scenes cannot receive this file's results."""
    QUEUE.shutdown()
    _DRIVEN.clear()


@persistent
def _on_load_post(*_args: Any) -> None:
    """A job that was live when the file was saved is not running now: say so, and how to resume."""
    for scene in bpy.data.scenes:
        st = getattr(scene, "troupe", None)
        if st is not None and st.job_status in ("QUEUED", "RUNNING", "CANCELLING") and not QUEUE.busy(scene_key(scene)):
            st.job_status = "INTERRUPTED"
            st.job_message = st.job_error = ("Blender was closed or the file reopened while this job ran. "
                                             "Run again to resume: finished stages are kept.")  # fmt: skip
            st.job_queued = 0


# -- the polling loop ----------------------------------------------------------------------------


class _PollLoop:
    """Calls ``step(context, timeout) -> busy`` from a 0.1 s timer (UI) or in a loop (background),
    then ``end(context)``. Events pass through: Blender stays usable while a job runs."""

    _timer: Any = None

    def step(self, context: Any, timeout: float) -> bool:
        raise NotImplementedError

    def end(self, context: Any) -> Result:
        raise NotImplementedError

    def stop(self, context: Any) -> None:
        """Ctrl-C in a blocking loop, or Blender dropped the modal handler."""

    def begin(self, context: Any) -> Result:
        if bpy.app.background or context.window is None:
            try:
                while self.step(context, 0.25):
                    pass
            except KeyboardInterrupt:
                self.stop(context)
                while self.step(context, 0.25):
                    pass
            return self.end(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> Result:
        if event.type == "TIMER" and not self.step(context, 0.0):
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
            return self.end(context)
        return {"PASS_THROUGH"}

    def cancel(self, context: Any) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        self.stop(context)


class TROUPE_OT_run(_PollLoop, bpy.types.Operator):
    """Reconstruct the chosen video and import the result into this scene"""

    bl_idname = "troupe.run"
    bl_label = "Run Troupe"
    bl_options = {"REGISTER"}

    python: StringProperty(  # type: ignore[valid-type]
        name="Python", options={"HIDDEN", "SKIP_SAVE"},
        description="Run with this environment's Python instead of the preference (headless use)",
    )  # fmt: skip

    def execute(self, context: Any) -> Result:
        scene = context.scene
        try:
            job = submit(context, scene, self.python)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.key = scene_key(scene)
        if job is None:
            self.report({"INFO"}, f"Troupe: queued behind the running job ({len(QUEUE.waiting(self.key))} waiting)")
        if self.key in _DRIVEN:  # a loop already polls this scene's jobs
            return {"FINISHED"}
        _DRIVEN.add(self.key)
        self._status_text = ""
        self._printed: tuple[Any, ...] = ()
        self._last_print = self._last_redraw = 0.0
        self.outcome: list[runner.Job] = []
        return self.begin(context)

    def invoke(self, context: Any, event: Any) -> Result:
        return self.execute(context)

    def step(self, context: Any, timeout: float) -> bool:
        busy, finished = tick(self.key, timeout)
        self.outcome += finished
        for ended in finished:
            self._report_end(ended)
        job = QUEUE.active(self.key)
        text = progress_text(job) if job is not None else ""
        now = time.monotonic()
        if bpy.app.background:  # the console: on each new stage or percent, else every 30 s
            shown = (job.status, job.stage, int(job.fraction * 100)) if job is not None else ()
            if job is not None and (shown != self._printed or now - self._last_print > 30.0):
                print(text, flush=True)
                self._printed, self._last_print = shown, now
        elif text != self._status_text and context.workspace is not None:
            context.workspace.status_text_set(text or None)
        if finished or text != self._status_text or now - self._last_redraw > 1.0:
            _redraw(context)
            self._last_redraw = now
        self._status_text = text
        return busy

    def _report_end(self, job: runner.Job) -> None:
        scene = scene_by_key(self.key)
        if job.status == runner.DONE:
            error = scene.troupe.job_error if scene is not None else ""
            if error:
                self.report({"ERROR"}, f"Troupe: {error}")
            else:
                self.report({"INFO"}, f"Troupe: done in {runner.format_duration(job.elapsed_s)}: {job.bundle}")
        elif job.status == runner.CANCELLED:
            self.report({"WARNING"}, f"Troupe: {job.error}")
        else:
            self.report({"ERROR"}, f"Troupe: {job.error}  (log: {job.log_path})")

    def stop(self, context: Any) -> None:
        scene = scene_by_key(self.key)
        if scene is not None:
            cancel(scene)
        else:
            QUEUE.cancel(self.key, clear_queue=True)

    def cancel(self, context: Any) -> None:
        super().cancel(context)
        # Blender dropped the loop (file loaded, window closed): let the workers go in the background.
        job = QUEUE.active(self.key)
        if job is not None:
            job.abandon()
        _DRIVEN.discard(self.key)

    def end(self, context: Any) -> Result:
        _DRIVEN.discard(self.key)
        if not bpy.app.background and context.workspace is not None:
            context.workspace.status_text_set(None)
        last = self.outcome[-1] if self.outcome else None
        return {"FINISHED"} if last is not None and last.status == runner.DONE else {"CANCELLED"}


class TROUPE_OT_cancel(bpy.types.Operator):
    """Stop the running job (finished stages are kept: Run resumes) and drop the queued ones"""

    bl_idname = "troupe.cancel"
    bl_label = "Cancel Troupe Job"

    def execute(self, context: Any) -> Result:
        cancel(context.scene)
        return {"FINISHED"}


class TROUPE_OT_clear_queue(bpy.types.Operator):
    """Drop the jobs waiting behind the running one"""

    bl_idname = "troupe.clear_queue"
    bl_label = "Clear Troupe Queue"

    def execute(self, context: Any) -> Result:
        QUEUE.clear_waiting(scene_key(context.scene))
        context.scene.troupe.job_queued = 0
        return {"FINISHED"}


class TROUPE_OT_import_result(bpy.types.Operator):
    """Import the last job's result bundle into this scene (again)"""

    bl_idname = "troupe.import_result"
    bl_label = "Import Troupe Result"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(context.scene.troupe.job_bundle)

    def execute(self, context: Any) -> Result:
        error = import_result(context.scene)
        if error:
            self.report({"ERROR"}, f"Troupe: {error}")
            return {"CANCELLED"}
        return {"FINISHED"}


class TROUPE_OT_open_path(bpy.types.Operator):
    """Open the job's log or folder with the system's default program"""

    bl_idname = "troupe.open_path"
    bl_label = "Open"

    what: EnumProperty(items=(("LOG", "Log", ""), ("JOB", "Job Folder", ""), ("PATH", "Path", "")),  # type: ignore[valid-type]
                       default="PATH", options={"SKIP_SAVE"})  # fmt: skip
    path: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: Any) -> Result:
        st = context.scene.troupe
        path = {"LOG": st.job_log, "JOB": st.job_dir}.get(self.what, self.path)
        if not path or not Path(path).exists():
            self.report({"ERROR"}, f"Troupe: {path or 'nothing'} does not exist (yet)")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=path)
        return {"FINISHED"}


class TROUPE_OT_show_preferences(bpy.types.Operator):
    """Open Troupe's preferences (GPU environment, body model, device)"""

    bl_idname = "troupe.show_preferences"
    bl_label = "Troupe Preferences"

    def execute(self, context: Any) -> Result:
        bpy.ops.screen.userpref_show()
        bpy.ops.preferences.addon_show(module=prefs.ADDON_ID)
        return {"FINISHED"}


# -- the GPU environment -------------------------------------------------------------------------


def setup_start(pref: prefs.TroupePreferences, mode: str) -> runner.Job:
    """Start creating / repairing (INSTALL), recreating (RECREATE) or checking (CHECK) the environment."""
    env_dir = prefs.env_folder(pref)
    if mode == "CHECK":
        python = prefs.jobs_python(pref)
        env_dir = Path(python).parent.parent if python else env_dir
    else:
        python = bpy.path.abspath(pref.base_python) if pref.base_python else ""
        if not python:
            usable = [c for c in envsetup.find_pythons() if c.usable]
            python = usable[0].path if usable else ""
            pref.base_python = python
    argv = envsetup.setup_argv(
        python, str(env_dir), pip_args=pref.package_source, recreate=mode == "RECREATE", check=mode == "CHECK",
        requirements=bpy.path.abspath(pref.requirements_file) if pref.requirements_file else None,
    )  # fmt: skip
    if mode == "CHECK":
        role, hint = "the GPU environment's Python", "Set up the environment first"
    else:
        role, hint = "the Python to create the environment with", "Choose a Python 3.11 or newer in the set-up options ('Find' lists them)"
    SETUP.job = runner.Job.launch(argv, envsetup.log_path_for(env_dir), python=python, role=role, hint=hint)
    SETUP.mode = mode
    return SETUP.job


def setup_tick(pref: prefs.TroupePreferences, timeout: float = 0.0) -> bool:
    """Advance the set-up; when it is done, store its report and the environment's Python. Busy?"""
    job = SETUP.job
    if job is None:
        return False
    job.poll(timeout)
    if not job.finished:
        return True
    if job.status == runner.DONE and job.result.get("report") is not None:
        pref.env_report = json.dumps(job.result["report"])
        pref.python_path = str(job.result["python"])
    return False


class TROUPE_OT_env_setup(_PollLoop, bpy.types.Operator):
    """Create the GPU environment (or repair, recreate or check it): a separate Python with PyTorch
    and the reconstruction's packages. Nothing is installed into Blender's own Python"""

    bl_idname = "troupe.env_setup"
    bl_label = "Set Up Troupe Environment"

    mode: EnumProperty(  # type: ignore[valid-type]
        items=(("INSTALL", "Install", "Create the environment or install what is missing"),
               ("RECREATE", "Recreate", "Delete the environment and create it again"),
               ("CHECK", "Check", "Verify PyTorch, the GPU and the packages")),  # fmt: skip
        default="INSTALL",
    )

    def execute(self, context: Any) -> Result:
        pref = prefs.get(context)
        if pref is None:
            self.report({"ERROR"}, "Troupe: enable the add-on first (its preferences hold the environment)")
            return {"CANCELLED"}
        if SETUP.job is not None and not SETUP.job.finished:
            self.report({"WARNING"}, "Troupe: a set-up is already running")
            return {"CANCELLED"}
        if self.mode != "CHECK" and not bpy.app.online_access and not pref.package_source:
            self.report({"ERROR"}, "Troupe: Blender's online access is off (Preferences > System > Network). The "
                        "set-up downloads PyTorch and the other packages (several GB): allow online access, or set "
                        "a Package Source you trust (e.g. --no-index --find-links FOLDER of wheels)")  # fmt: skip
            return {"CANCELLED"}
        self._last = ""
        setup_start(pref, self.mode)
        return self.begin(context)

    def step(self, context: Any, timeout: float) -> bool:
        pref = prefs.get(context)
        busy = setup_tick(pref, timeout) if pref is not None else False
        job = SETUP.job
        if job is not None and job.message != self._last:
            self._last = job.message
            if bpy.app.background:
                print(f"[{job.fraction * 100:5.1f}%] {job.stage}: {job.message}", flush=True)
            _redraw(context)
        return busy

    def stop(self, context: Any) -> None:
        if SETUP.job is not None:
            SETUP.job.cancel()

    def end(self, context: Any) -> Result:
        job = SETUP.job
        _redraw(context)
        if job is None or job.status != runner.DONE:
            self.report({"ERROR"}, f"Troupe set-up: {job.error if job else 'did not run'}")
            return {"CANCELLED"}
        report = job.result.get("report", {})
        text = "Troupe environment: " + "; ".join(envsetup.summarize(report))
        if report.get("problems"):
            self.report({"WARNING"}, text)
        else:
            self.report({"INFO"}, text)
        return {"FINISHED"}


class TROUPE_OT_env_cancel(bpy.types.Operator):
    """Stop the environment set-up (run it again, or Repair, to finish it)"""

    bl_idname = "troupe.env_cancel"
    bl_label = "Cancel Set-up"

    def execute(self, context: Any) -> Result:
        if SETUP.job is not None:
            SETUP.job.cancel()
        return {"FINISHED"}


class TROUPE_OT_find_python(bpy.types.Operator):
    """List the Python interpreters on this computer that can create the environment"""

    bl_idname = "troupe.find_python"
    bl_label = "Find Python"

    def execute(self, context: Any) -> Result:
        pref = prefs.get(context)
        if pref is None:
            return {"CANCELLED"}
        found = envsetup.find_pythons([bpy.path.abspath(pref.base_python)] if pref.base_python else None)
        pref.candidates.clear()
        for info in found:
            item = pref.candidates.add()
            item.path, item.label, item.usable = info.path, info.label(), info.usable
        usable = [i for i in found if i.usable]
        if usable and not pref.base_python:
            pref.base_python = usable[0].path
        if usable:
            self.report({"INFO"}, f"Troupe: {len(usable)} usable Python interpreter(s) found")
        else:
            self.report({"WARNING"}, "Troupe: no Python 3.11+ found: install one (python.org) and press Find again")
        return {"FINISHED"}


class TROUPE_OT_use_python(bpy.types.Operator):
    """Create the environment from this Python"""

    bl_idname = "troupe.use_python"
    bl_label = "Use This Python"

    path: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: Any) -> Result:
        pref = prefs.get(context)
        if pref is not None:
            pref.base_python = self.path
        return {"FINISHED"}


CLASSES = (
    TROUPE_OT_run, TROUPE_OT_cancel, TROUPE_OT_clear_queue, TROUPE_OT_import_result, TROUPE_OT_open_path,
    TROUPE_OT_show_preferences, TROUPE_OT_env_setup, TROUPE_OT_env_cancel, TROUPE_OT_find_python,
    TROUPE_OT_use_python,
)  # fmt: skip


def _shutdown() -> None:
    QUEUE.shutdown()
    if SETUP.job is not None and not SETUP.job.finished:
        SETUP.job.abandon()


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    atexit.register(_shutdown)


def unregister() -> None:
    _shutdown()
    _DRIVEN.clear()
    atexit.unregister(_shutdown)
    for handlers, fn in ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post)):
        if fn in handlers:
            handlers.remove(fn)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

