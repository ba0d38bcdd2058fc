# SPDX-License-Identifier: GPL-3.0-or-later
"""Troupe's add-on preferences: the GPU environment (where it is, set-up, check, repair), the
body model and weights folders, and the compute device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, StringProperty

from . import envsetup

# The extension's package (bl_ext.<repo>.troupe when installed; troupe when loaded from a checkout).
ADDON_ID = __package__.rpartition(".")[0] or __package__

DEVICES = (
    ("auto", "Automatic", "The first CUDA GPU if there is one, else the CPU"),
    ("cuda", "CUDA GPU", "An NVIDIA GPU through CUDA (fails clearly if there is none)"),
    ("cpu", "CPU", "No GPU: only for short clips and tests, very slow"),
)


class TroupePythonCandidate(bpy.types.PropertyGroup):
    path: StringProperty(name="Path")  # type: ignore[valid-type]
    label: StringProperty(name="Label")  # type: ignore[valid-type]
    usable: BoolProperty(name="Usable")  # type: ignore[valid-type]


class TroupePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(  # type: ignore[valid-type]
        name="GPU Environment Python", subtype="FILE_PATH",
        description="Python executable of the environment the reconstruction runs in (filled in by the set-up)",
    )  # fmt: skip
    body_model_dir: StringProperty(  # type: ignore[valid-type]
        name="Body Model Folder", subtype="DIR_PATH",
        description="Folder with the SMPL-X model files (SMPLX_NEUTRAL.npz ...), from the SMPL-X authors",
    )  # fmt: skip
    weights_dir: StringProperty(  # type: ignore[valid-type]
        name="Model Weights Folder", subtype="DIR_PATH",
        description="Where learned-model weights are found and downloaded to (empty: the core's default cache)",
    )  # fmt: skip
    pose_prior_file: StringProperty(  # type: ignore[valid-type]
        name="Pose Prior", subtype="FILE_PATH",
        description="A learned pose prior for the motion fit, built from motion capture you have "
                    "(python -m core pose-prior PRIOR.npz AMASS_FOLDER); empty: none",
    )  # fmt: skip
    device: EnumProperty(name="Device", items=DEVICES, default="auto")  # type: ignore[valid-type]

    # -- set-up of the environment --------------------------------------------------------------
    base_python: StringProperty(  # type: ignore[valid-type]
        name="Python to Use", subtype="FILE_PATH",
        description="Python 3.11+ the environment is created from (nothing is installed into it); 'Find' lists them",
    )  # fmt: skip
    env_dir: StringProperty(  # type: ignore[valid-type]
        name="Environment Folder", subtype="DIR_PATH",
        description="Where the environment is created (empty: inside the extension's user folder)",
    )  # fmt: skip
    package_source: StringProperty(  # type: ignore[valid-type]
        name="Package Source",
        description="Extra pip options, e.g. --index-url URL or --extra-index-url URL (a mirror, PyTorch's CUDA wheels)",
    )  # fmt: skip
    requirements_file: StringProperty(  # type: ignore[valid-type]
        name="Requirements File", subtype="FILE_PATH",
        description="Install this requirements file instead of the extension's GPU package list (advanced)",
    )  # fmt: skip
    env_report: StringProperty(name="Environment Report", options={"HIDDEN"})  # type: ignore[valid-type]
    candidates: CollectionProperty(type=TroupePythonCandidate)  # type: ignore[valid-type]
    show_setup_options: BoolProperty(name="Set-up Options", default=False)  # type: ignore[valid-type]

    def draw(self, context: Any) -> None:
        from . import ops_run

        layout: Any = self.layout
        box = layout.box()
        box.label(text="GPU Environment", icon="CONSOLE")
        ok, lines = environment_summary(context)
        col = box.column(align=True)
        for i, line in enumerate(lines):
            col.label(text=line, icon=("CHECKMARK" if ok else "ERROR") if i == 0 else "BLANK1")
        box.prop(self, "python_path")

        job = ops_run.SETUP.job
        if job is not None and not job.finished:
            box.label(text=f"{ops_run.SETUP.mode.capitalize()}: {job.stage or 'starting'}", icon="TIME")
            box.progress(factor=job.fraction, type="BAR", text=f"{job.fraction * 100:.0f} %")
            log = box.column(align=True)
            log.scale_y = 0.7
            for line in envsetup.log_tail(job.log_path, 6):
                log.label(text=line[:120])
            box.operator("troupe.env_cancel", text="Cancel", icon="CANCEL")
        else:
            row = box.row(align=True)
            have_env = bool(jobs_python(self))
            row.operator("troupe.env_setup", text="Repair" if have_env else "Set Up Environment",
                         icon="TOOL_SETTINGS" if have_env else "IMPORT").mode = "INSTALL"  # fmt: skip
            sub = row.row(align=True)
            sub.enabled = have_env
            sub.operator("troupe.env_setup", text="Check", icon="VIEWZOOM").mode = "CHECK"
            sub.operator("troupe.env_setup", text="Recreate", icon="FILE_REFRESH").mode = "RECREATE"
            if job is not None:
                row = box.row(align=True)
                row.label(text=f"Last {ops_run.SETUP.mode.lower()}: {job.status}", icon="INFO")
                row.operator("troupe.open_path", text="Open Log", icon="TEXT").path = str(job.log_path)

        box.prop(self, "show_setup_options", icon="TRIA_DOWN" if self.show_setup_options else "TRIA_RIGHT", emboss=False)
        if self.show_setup_options:
            sub = box.column()
            row = sub.row(align=True)
            row.prop(self, "base_python")
            row.operator("troupe.find_python", text="Find", icon="VIEWZOOM")
            for cand in self.candidates:
                r = sub.row(align=True)
                r.enabled = cand.usable
                r.label(text=cand.label, icon="CHECKMARK" if cand.usable else "X")
                r.operator("troupe.use_python", text="Use").path = cand.path
            sub.prop(self, "env_dir")
            sub.label(text=f"Environment: {env_folder(self)}", icon="BLANK1")
            sub.prop(self, "package_source")
            sub.prop(self, "requirements_file")

        box = layout.box()
        box.label(text="Models", icon="ARMATURE_DATA")
        box.prop(self, "body_model_dir")
        col = box.column(align=True)
        col.scale_y = 0.8
        col.label(text="SMPL-X comes from its authors under their licence (smpl-x.is.tue.mpg.de):", icon="INFO")
        col.label(text="download the NPZ files and choose their folder here.", icon="BLANK1")
        box.prop(self, "weights_dir")
        box.prop(self, "pose_prior_file")
        layout.prop(self, "device")


def get(context: Any = None) -> TroupePreferences | None:
    """The add-on's preferences, or None when the add-on was registered without being enabled."""
    preferences: Any = (context or bpy.context).preferences
    addon = preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def env_folder(prefs: TroupePreferences | None) -> Path:
    """The folder the set-up creates the environment in."""
    if prefs is not None and prefs.env_dir:
        return Path(bpy.path.abspath(prefs.env_dir))
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="gpu-env", create=False))
    except (ValueError, AttributeError):  # not installed as an extension (a checkout, the headless script)
        return Path(bpy.utils.user_resource("CONFIG")) / "troupe" / "gpu-env"


def jobs_python(prefs: TroupePreferences | None) -> str:
    """The Python jobs run with: the preference, else the default environment if it exists."""
    if prefs is not None and prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    default = envsetup.env_python(env_folder(prefs))
    return str(default) if default.is_file() else ""


def environment_summary(context: Any) -> tuple[bool, list[str]]:
    """(ready, lines) about the environment, from the last set-up or check."""
    prefs = get(context)
    python = jobs_python(prefs)
    if not python:
        return False, ["Not set up: open the add-on's preferences and press 'Set Up Environment'"]
    report: dict[str, Any] = {}
    if prefs is not None and prefs.env_report:
        try:
            report = json.loads(prefs.env_report)
        except ValueError:
            report = {}
    if not report or Path(report.get("executable", "")) != Path(python):
        return False, [f"Not checked yet: {python}", "press 'Check' in the add-on's preferences"]
    return not report.get("problems"), envsetup.summarize(report) or [python]


CLASSES = (TroupePythonCandidate, TroupePreferences)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
