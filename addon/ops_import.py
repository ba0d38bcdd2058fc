# SPDX-License-Identifier: GPL-3.0-or-later
"""Import / export operators and their File menu entries. Thin: settings -> importer -> create."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..core import bundle
from . import gsplat, interchange
from .importer import PERSON_KEY, ImportSettings, import_bundle

Result = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]  # of an operator


def _report_problems(op: Any, exc: Exception) -> Result:
    problems = getattr(exc, "problems", None) or [str(exc)]
    for line in problems:
        op.report({"ERROR"}, line)
    return {"CANCELLED"}


class TROUPE_OT_import_bundle(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import a Troupe result bundle: a rigged armature, body mesh and splats per person, and the camera"""

    bl_idname = "import_scene.troupe_bundle"
    bl_label = "Import Troupe Bundle"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".json"
    filepath: StringProperty(name="File Path", subtype="FILE_PATH", maxlen=1024)  # type: ignore[valid-type]
    filter_glob: StringProperty(default="bundle.json", options={"HIDDEN"})  # type: ignore[valid-type]
    people: StringProperty(  # type: ignore[valid-type]
        name="People", default="", description="Person ids to import, separated by commas (empty: everyone)"
    )
    armature: BoolProperty(name="Armatures", default=True, description="Rigged SMPL-X armatures with keyframes")  # type: ignore[valid-type]
    mesh: BoolProperty(name="Body Meshes", default=True, description="Skinned SMPL-X body meshes")  # type: ignore[valid-type]
    appearance_mesh: BoolProperty(name="Appearance Meshes", default=True, description="The bundle's mesh.ply per person, where present")  # type: ignore[valid-type]
    splats: BoolProperty(name="Gaussian Splats", default=True, description="Each person's splats, bound to the armature")  # type: ignore[valid-type]
    camera: BoolProperty(name="Camera", default=True, description="The solved camera")  # type: ignore[valid-type]
    background: BoolProperty(name="Video Background", default=True, description="The source video behind the camera view")  # type: ignore[valid-type]
    image_plane: BoolProperty(name="Video Plate", default=False, description="The source video on a plate behind the people, for renders")  # type: ignore[valid-type]
    frame_offset: IntProperty(name="First Frame", default=1, description="Scene frame of the bundle's first frame")  # type: ignore[valid-type]
    replace: EnumProperty(  # type: ignore[valid-type]
        name="Earlier Imports",
        items=(("REPLACE", "Replace", "Remove an earlier import of the same bundle first"),
               ("ADD", "Add Beside", "Keep earlier imports")),  # fmt: skip
        default="REPLACE",
    )
    scene_settings: BoolProperty(name="Scene Settings", default=True, description="Frame range, frame rate, resolution, active camera")  # type: ignore[valid-type]
    hide_unseen: BoolProperty(  # type: ignore[valid-type]
        name="Hide People Where Not Seen", default=True,
        description="Hide each person in the viewport and in renders on the frames where it is not in the video",
    )  # fmt: skip

    def settings(self) -> ImportSettings:
        ids = [p.strip() for p in self.people.split(",") if p.strip()]
        return ImportSettings(
            people=ids or None, armature=self.armature, mesh=self.mesh, appearance_mesh=self.appearance_mesh,
            splats=self.splats, camera=self.camera, background=self.background, image_plane=self.image_plane,
            frame_offset=self.frame_offset, replace=self.replace == "REPLACE", scene_settings=self.scene_settings,
            hide_unseen=self.hide_unseen,
        )  # fmt: skip

    def execute(self, context: Any) -> Result:
        if context.view_layer.objects.active is not None and context.view_layer.objects.active.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        try:
            result = import_bundle(self.filepath, self.settings(), context)
        except (bundle.BundleError, FileNotFoundError, ValueError) as exc:
            return _report_problems(self, exc)
        for warning in result.warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Imported {len(result.people)} people from {Path(self.filepath).name}")
        return {"FINISHED"}


class TROUPE_OT_import_3dgs_ply(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import a 3D Gaussian Splatting PLY (any trainer's) as ellipsoids with colour and opacity"""

    bl_idname = "import_scene.troupe_3dgs_ply"
    bl_label = "Import 3DGS PLY"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filepath: StringProperty(name="File Path", subtype="FILE_PATH", maxlen=1024)  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]
    up_axis: EnumProperty(  # type: ignore[valid-type]
        name="Up Axis",
        items=(("Y_DOWN", "-Y (COLMAP)", "Most 3DGS trainers: OpenCV / COLMAP world, -Y up"),
               ("Y_UP", "+Y", "+Y up (Troupe bundles, glTF)"), ("Z_UP", "+Z", "Already Blender's frame")),  # fmt: skip
        default="Y_DOWN",
    )
    points: EnumProperty(  # type: ignore[valid-type]
        name="Display",
        items=(("AUTO", "Auto", "Points above 500k Gaussians, else ellipsoids"), ("ELLIPSOIDS", "Ellipsoids", ""),
               ("POINTS", "Points", "A light point cloud")),  # fmt: skip
        default="AUTO",
    )

    def execute(self, context: Any) -> Result:
        display = None if self.points == "AUTO" else self.points == "POINTS"
        try:
            obj = gsplat.import_3dgs_ply(self.filepath, self.up_axis, context.collection, display)
        except (bundle.BundleError, FileNotFoundError, ValueError) as exc:
            return _report_problems(self, exc)
        self.report({"INFO"}, f"Imported {len(obj.data.vertices)} Gaussians")  # type: ignore[union-attr]
        return {"FINISHED"}


class TROUPE_OT_import_smplx_motion(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import an SMPL-X motion file (AMASS layout: poses, trans, betas, gender, mocap_frame_rate)"""

    bl_idname = "import_anim.troupe_smplx_motion"
    bl_label = "Import SMPL-X Motion"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filepath: StringProperty(name="File Path", subtype="FILE_PATH", maxlen=1024)  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})  # type: ignore[valid-type]
    body_model: StringProperty(  # type: ignore[valid-type]
        name="Body Model", subtype="FILE_PATH", default="",
        description="SMPL-X model file (SMPLX_NEUTRAL.npz) or the folder holding it (your own copy)",
    )  # fmt: skip
    up_axis: EnumProperty(  # type: ignore[valid-type]
        name="Up Axis",
        items=(("AUTO", "Auto", "Decide from the root orientation (AMASS files are +Z up)"),
               ("Z", "+Z (AMASS)", ""), ("Y", "+Y", "")),  # fmt: skip
        default="AUTO",
    )
    fps: FloatProperty(name="Frame Rate", default=0.0, min=0.0, description="Resample to this rate (0: the scene's)")  # type: ignore[valid-type]
    mesh: BoolProperty(name="Body Mesh", default=True)  # type: ignore[valid-type]

    def execute(self, context: Any) -> Result:
        model = self.body_model or _preferred_body_model(context)
        if not model:
            self.report({"ERROR"}, "Choose your SMPL-X body model file (SMPLX_NEUTRAL.npz) in the options")
            return {"CANCELLED"}
        try:
            result = interchange.import_motion(self.filepath, model, self.up_axis, self.fps or None,
                                               context.scene.frame_start, self.mesh, context)  # fmt: skip
        except (interchange.InterchangeError, FileNotFoundError, ValueError) as exc:
            return _report_problems(self, exc)
        self.report({"INFO"}, f"Imported {next(iter(result.people))}")
        return {"FINISHED"}


def _preferred_body_model(context: Any) -> str:
    """The add-on preference for the body model folder (``prefs.body_model_dir``), if set."""
    addon = context.preferences.addons.get((__package__ or "").rpartition(".")[0])
    prefs = getattr(addon, "preferences", None)
    return str(getattr(prefs, "body_model_dir", "") or "")


class TROUPE_OT_export_person(bpy.types.Operator, ExportHelper):  # type: ignore[misc]
    """Export the active Troupe armature (and its body mesh) as FBX or BVH for retargeting"""

    bl_idname = "export_anim.troupe_person"
    bl_label = "Export Troupe Person"

    filename_ext = ".fbx"
    filepath: StringProperty(name="File Path", subtype="FILE_PATH", maxlen=1024)  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.fbx;*.bvh", options={"HIDDEN"})  # type: ignore[valid-type]
    format: EnumProperty(  # type: ignore[valid-type]
        name="Format",
        items=(("FBX", "FBX", "Armature + skinned mesh, baked animation (game engines, Rokoko, Auto-Rig Pro)"),
               ("BVH", "BVH", "Skeleton motion only")),  # fmt: skip
        default="FBX",
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE" and PERSON_KEY in obj

    def check(self, context: Any) -> bool:  # type: ignore[override]
        self.filename_ext = "." + self.format.lower()
        return super().check(context)

    def execute(self, context: Any) -> Result:
        path = Path(self.filepath).with_suffix("." + self.format.lower())
        interchange.export_person(context.active_object, path, self.format, context)
        self.report({"INFO"}, f"Exported {path.name}")
        return {"FINISHED"}


def _menu_import(self: Any, context: Any) -> None:
    self.layout.operator(TROUPE_OT_import_bundle.bl_idname, text="Troupe Bundle (bundle.json)")
    self.layout.operator(TROUPE_OT_import_3dgs_ply.bl_idname, text="3DGS PLY (.ply)")
    self.layout.operator(TROUPE_OT_import_smplx_motion.bl_idname, text="SMPL-X Motion (.npz)")


def _menu_export(self: Any, context: Any) -> None:
    self.layout.operator(TROUPE_OT_export_person.bl_idname, text="Troupe Person (.fbx/.bvh)")


CLASSES = (TROUPE_OT_import_bundle, TROUPE_OT_import_3dgs_ply, TROUPE_OT_import_smplx_motion, TROUPE_OT_export_person)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
