# SPDX-License-Identifier: GPL-3.0-or-later
"""The Troupe panel in the 3D viewport's sidebar, and the per-scene settings and job state.

Everything the panel shows lives in ``scene.troupe`` (``TroupeSceneSettings``), so the last job's
folder and outcome are saved with the .blend and the panel draws the same in every state:
idle, queued, running, cancelling, done, failed, cancelled, interrupted. The operators of
``ops_run`` write the job state; this module only draws it.
"""

from __future__ import annotations

import textwrap
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import runner
from .compat import BLEND_RELATIVE_PATH

# Job states saved in the scene (scene.troupe.job_status).
JOB_STATES = (
    ("NONE", "None", "No job has run in this scene"),
    ("QUEUED", "Queued", "Waiting for another job of this scene"),
    ("RUNNING", "Running", "The worker is running"),
    ("CANCELLING", "Cancelling", "The worker was asked to stop"),
    ("DONE", "Done", "The last job finished"),
    ("FAILED", "Failed", "The last job ended with an error"),
    ("CANCELLED", "Cancelled", "The last job was cancelled; running again resumes it"),
    ("INTERRUPTED", "Interrupted", "Blender closed or the file was reloaded during the job; running again resumes it"),
)
LIVE_STATES = {"QUEUED", "RUNNING", "CANCELLING"}

_QUALITY_HELP = {
    "preview": "Fast, rough: for checking framing and tracking",
    "standard": "The default balance of time and quality",
    "high": "Slowest; best motion and appearance",
}
QUALITY_ITEMS = [(q, q.capitalize(), _QUALITY_HELP.get(q, q)) for q in runner.QUALITY_PRESETS]


class TroupeSceneSettings(bpy.types.PropertyGroup):
    """Inputs of the next run and the state of the last job (saved with the .blend)."""

    # -- inputs ----------------------------------------------------------------------------------
    video_source: EnumProperty(  # type: ignore[valid-type]
        name="Video",
        items=(("FILE", "File", "A video file or a folder of frames"),
               ("CLIP", "Movie Clip", "The scene's active movie clip")),  # fmt: skip
        default="FILE",
    )
    video_path: StringProperty(name="Video File", subtype="FILE_PATH", options=BLEND_RELATIVE_PATH,  # type: ignore[valid-type]
                               description="Video to reconstruct")  # fmt: skip
    frame_start: IntProperty(name="Start", default=0, min=0, description="First frame of the video to use (0-based)")  # type: ignore[valid-type]
    frame_end: IntProperty(name="End", default=0, min=0, description="One past the last frame to use; 0 = to the end")  # type: ignore[valid-type]
    frame_step: IntProperty(name="Step", default=1, min=1, max=100, description="Use every n-th frame")  # type: ignore[valid-type]
    max_people: IntProperty(name="Max People", default=8, min=1, max=64,  # type: ignore[valid-type]
                            description="Keep at most this many people (the longest, most visible tracks)")  # fmt: skip
    quality: EnumProperty(  # type: ignore[valid-type]
        name="Quality",
        items=QUALITY_ITEMS,
        default="standard",
    )
    output_dir: StringProperty(  # type: ignore[valid-type]
        name="Output Folder", subtype="DIR_PATH", default="//troupe/", options=BLEND_RELATIVE_PATH,
        description="Job folders are made here, one per video; running again on the same video resumes",
    )  # fmt: skip
    motion_init: StringProperty(  # type: ignore[valid-type]
        name="Start Motion From", subtype="FILE_PATH", options=BLEND_RELATIVE_PATH,
        description="Another tool's result for this clip (GVHMR, PromptHMR, 4D-Humans, AMASS npz, a Troupe bundle): "
                    "the motion fit starts from it and fits everyone jointly; empty: Troupe's own start",
    )  # fmt: skip
    motion_init_pickle: BoolProperty(  # type: ignore[valid-type]
        name="Trust Pickled File", default=False,
        description="Let the worker read a .pkl start (4D-Humans / PHALP). Unpickling can run code: only for files you trust",
    )  # fmt: skip
    extra_args: StringProperty(  # type: ignore[valid-type]
        name="Worker Options",
        description="Further options for the worker, as on its command line (e.g. --tracker import --tracks DIR)",
    )
    import_when_done: BoolProperty(name="Import When Done", default=True,  # type: ignore[valid-type]
                                   description="Import the result into this scene when the job finishes")  # fmt: skip

    # -- state of the last job (written by ops_run) ---------------------------------------------
    job_status: EnumProperty(name="Status", items=JOB_STATES, default="NONE")  # type: ignore[valid-type]
    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH")  # type: ignore[valid-type]
    job_stage: StringProperty(name="Stage")  # type: ignore[valid-type]
    job_fraction: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")  # type: ignore[valid-type]
    job_message: StringProperty(name="Message")  # type: ignore[valid-type]
    job_error: StringProperty(name="Error")  # type: ignore[valid-type]
    job_log: StringProperty(name="Log", subtype="FILE_PATH")  # type: ignore[valid-type]
    job_bundle: StringProperty(name="Bundle", subtype="DIR_PATH")  # type: ignore[valid-type]
    job_elapsed: FloatProperty(name="Elapsed", description="Seconds the job has run (or ran)")  # type: ignore[valid-type]
    job_eta: FloatProperty(name="Time Left", default=-1.0, description="Estimated seconds left; -1 = unknown")  # type: ignore[valid-type]
    job_imported: BoolProperty(name="Imported")  # type: ignore[valid-type]
    job_queued: IntProperty(name="Queued", description="Jobs waiting behind the running one")  # type: ignore[valid-type]


def wrap(text: str, width_px: int) -> list[str]:
    """Lines of ``text`` that fit a panel ``width_px`` wide (roughly 7 px per character)."""
    width = max(20, int(width_px / 7) - 2)
    return [ln for para in text.splitlines() for ln in (textwrap.wrap(para, width) or [""])]


def _labels(layout: Any, text: str, width_px: int, icon: str = "NONE", limit: int = 12) -> None:
    lines = wrap(text, width_px)
    col = layout.column(align=True)
    col.scale_y = 0.8
    for i, line in enumerate(lines[:limit]):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")
    if len(lines) > limit:
        col.label(text="... (the rest is in the log)", icon="BLANK1")


def _times(st: TroupeSceneSettings) -> str:
    text = f"Elapsed {runner.format_duration(st.job_elapsed)}"
    if st.job_status in LIVE_STATES:
        text += f"  ·  about {runner.format_duration(st.job_eta if st.job_eta >= 0 else None)} left"
    return text


def _draw_live(box: Any, st: TroupeSceneSettings, width: int) -> None:
    if st.job_status == "QUEUED":
        box.label(text="Waiting for the running job", icon="TIME")
    else:
        stage = st.job_stage.capitalize() or "Starting"
        box.label(text=stage if st.job_status == "RUNNING" else f"{stage}: cancelling...", icon="RENDER_ANIMATION")
        box.progress(factor=st.job_fraction, type="BAR", text=f"{st.job_fraction * 100:.0f} %")
        if st.job_message:
            _labels(box, st.job_message, width, limit=2)
        box.label(text=_times(st))
    row = box.row(align=True)
    row.enabled = st.job_status != "CANCELLING"
    row.operator("troupe.cancel", text="Cancel", icon="CANCEL")
    if st.job_queued:
        row = box.row(align=True)
        row.label(text=f"{st.job_queued} more queued")
        row.operator("troupe.clear_queue", text="", icon="X")


class _SidebarTab(bpy.types.Panel):
    """The Troupe tab of the 3D viewport's sidebar (a base: not registered itself)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Troupe"


class _SubPanel(_SidebarTab):
    bl_parent_id = "TROUPE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}


class TROUPE_PT_main(_SidebarTab):
    bl_label = "Troupe"
    bl_idname = "TROUPE_PT_main"

    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        st = context.scene.troupe
        width = context.region.width if context.region else 300
        live = st.job_status in LIVE_STATES

        col = layout.column()  # the next run's settings (a running job keeps the ones it started with)
        col.row().prop(st, "video_source", expand=True)
        if st.video_source == "FILE":
            col.prop(st, "video_path", text="")
        elif context.scene.active_clip is not None:
            col.label(text=context.scene.active_clip.name, icon="FILE_MOVIE")
        else:
            col.label(text="No active movie clip in this scene", icon="ERROR")
        row = col.row(align=True)
        row.prop(st, "frame_start")
        row.prop(st, "frame_end")
        row.prop(st, "frame_step")
        col.prop(st, "max_people")
        col.prop(st, "quality")
        col.prop(st, "output_dir")

        row = layout.row()
        row.scale_y = 1.4
        if st.job_status in ("RUNNING", "CANCELLING", "QUEUED"):
            row.operator("troupe.run", text="Queue Another Run", icon="ADD")
        elif st.job_status in ("CANCELLED", "INTERRUPTED") or (st.job_status == "FAILED" and st.job_dir):
            row.operator("troupe.run", text="Run (resumes)", icon="PLAY")
        else:
            row.operator("troupe.run", text="Run", icon="PLAY")

        if st.job_status == "NONE":
            return
        box = layout.box()
        if live:
            _draw_live(box, st, width)
        elif st.job_status == "DONE":
            box.label(text=f"Done  ·  {_times(st)}", icon="CHECKMARK")
            box.label(text="Imported into this scene" if st.job_imported else "Not imported yet", icon="BLANK1")
        elif st.job_status == "FAILED":
            box.label(text="Failed", icon="ERROR")
            _labels(box, st.job_error or st.job_message, width, icon="BLANK1")
        else:  # CANCELLED / INTERRUPTED
            box.label(text=st.job_status.capitalize(), icon="INFO")
            _labels(box, st.job_error or st.job_message, width, icon="BLANK1", limit=4)

        row = box.row(align=True)
        if st.job_status == "DONE":
            row.operator("troupe.import_result", text="Import Result", icon="IMPORT")
        sub = row.row(align=True)
        sub.enabled = bool(st.job_log)
        sub.operator("troupe.open_path", text="Open Log", icon="TEXT").what = "LOG"
        sub = row.row(align=True)
        sub.enabled = bool(st.job_dir)
        sub.operator("troupe.open_path", text="Job Folder", icon="FILE_FOLDER").what = "JOB"


class TROUPE_PT_advanced(_SubPanel):
    bl_label = "Advanced"
    bl_idname = "TROUPE_PT_advanced"

    def draw(self, context: Any) -> None:
        st = context.scene.troupe
        layout: Any = self.layout
        layout.prop(st, "import_when_done")
        layout.prop(st, "motion_init")
        if runner.is_pickled(st.motion_init):
            layout.prop(st, "motion_init_pickle")
        layout.prop(st, "extra_args", text="Options")
        if st.job_dir:
            layout.label(text="Last job folder:")
            _labels(layout, st.job_dir, context.region.width if context.region else 300, icon="FILE_FOLDER", limit=3)


class TROUPE_PT_environment(_SubPanel):
    bl_label = "GPU Environment"
    bl_idname = "TROUPE_PT_environment"

    def draw(self, context: Any) -> None:
        from . import prefs

        layout: Any = self.layout
        ok, lines = prefs.environment_summary(context)
        col = layout.column(align=True)
        for i, line in enumerate(lines):
            col.label(text=line, icon=("CHECKMARK" if ok else "ERROR") if i == 0 else "BLANK1")
        layout.operator("troupe.show_preferences", text="Set Up / Preferences", icon="PREFERENCES")


CLASSES = (TroupeSceneSettings, TROUPE_PT_main, TROUPE_PT_advanced, TROUPE_PT_environment)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.troupe = PointerProperty(type=TroupeSceneSettings)  # type: ignore[attr-defined,func-returns-value]


def unregister() -> None:
    del bpy.types.Scene.troupe  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
