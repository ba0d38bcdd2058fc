# SPDX-License-Identifier: GPL-3.0-or-later
"""Motion in and out: SMPL-X motion files (AMASS layout) in, FBX and BVH out.

SMPL-X body model files (``SMPLX_<GENDER>.npz``, the user's own copy) are read with numpy alone,
``allow_pickle=False`` (the add-on cannot run smplx or torch):

    shaped vertices  v = v_template + shapedirs[:, :, :B] @ betas
    rest joints      J = J_regressor @ v
    skin weights     weights;  parents  kintree_table[0] (the root's uint32 -1 becomes -1)

SMPL-X files carry 300 shape components (then 100 expression ones); files with fewer (the
10 + 10 of the original release and of Troupe's stand-in) carry 10 shape components first,
as in the ``smplx`` package. No pose correctives (``posedirs``) are applied: the mesh follows
the armature by linear blend skinning only.

AMASS files (``poses`` (T,165), ``trans`` (T,3), ``betas``, ``gender``, ``mocap_frame_rate``)
are recorded +Z up, whereas SMPL-X's model space, Troupe bundles and other tools' exports are
+Y up. ``up_axis="AUTO"`` decides per file from where the root orientation sends the model's
up axis (+Y in model space) on average: towards world +Z means a +Z-up file (AMASS), towards
+Y a +Y-up one. The armature's rest pose is always built upright in Blender; only the world
motion is converted, so both kinds stand on Blender's floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..core import bundle
from . import axes, rig
from .axes import AxisConversion

SHAPE_SPACE_DIM = 300  # SMPL-X's shape components before the expression ones (full release)


class InterchangeError(ValueError):
    """A motion or body model file cannot be used; the message names the file and the field."""


def _load(path: Path, what: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InterchangeError(f"{path}: {what} file not found") from None
    except Exception as exc:
        raise InterchangeError(f"{path}: cannot be read as an .npz file ({type(exc).__name__}: {exc})") from None


def _array(data: Any, path: Path, key: str, ndim: int | None = None) -> np.ndarray:
    if key not in data.files:
        raise InterchangeError(f"{path.name}: missing array '{key}'")
    try:
        a = data[key]
    except ValueError:
        raise InterchangeError(f"{path.name}: array '{key}' is a pickled object; Troupe never unpickles files") from None
    if ndim is not None and a.ndim != ndim:
        raise InterchangeError(f"{path.name}: '{key}' has shape {a.shape}, expected {ndim} dimensions")
    return a


@dataclass
class BodyModel:
    """The parts of an SMPL-X model file the add-on needs."""

    v_template: np.ndarray  # (V,3)
    shapedirs: np.ndarray  # (V,3,S)
    j_regressor: np.ndarray  # (55,V)
    weights: np.ndarray  # (V,55)
    parents: np.ndarray  # (55,)
    faces: np.ndarray  # (F,3)

    @property
    def num_shape(self) -> int:
        s = self.shapedirs.shape[2]
        return SHAPE_SPACE_DIM if s >= SHAPE_SPACE_DIM + 100 else min(s, 10)


def load_body_model(path: str | Path, gender: str = "neutral") -> BodyModel:
    """An SMPL-X ``.npz`` file, or a folder holding ``SMPLX_<GENDER>.npz`` (or smplx/ with it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        name = f"SMPLX_{gender.upper()}.npz"
        found = [c for c in (p / name, p / "smplx" / name, p / "models" / "smplx" / name) if c.is_file()]
        if not found:
            raise InterchangeError(f"{p}: no {name} in this folder (nor in smplx/ or models/smplx/)")
        p = found[0]
    data = _load(p, "SMPL-X body model")
    with data:
        v = _array(data, p, "v_template", 2).astype(np.float64)
        shapedirs = _array(data, p, "shapedirs", 3).astype(np.float64)
        jreg = _array(data, p, "J_regressor", 2).astype(np.float64)
        weights = _array(data, p, "weights", 2).astype(np.float64)
        kintree = _array(data, p, "kintree_table", 2).astype(np.int64)
        faces = _array(data, p, "f", 2).astype(np.int64)
    if jreg.shape[0] != bundle.NUM_JOINTS or weights.shape[1] != bundle.NUM_JOINTS:
        raise InterchangeError(f"{p.name}: expected SMPL-X's {bundle.NUM_JOINTS} joints, found {jreg.shape[0]} "
                               "(an SMPL or SMPL-H file?)")  # fmt: skip
    parents = kintree[0].copy()
    parents[0] = -1
    parents[parents > 1_000_000] = -1
    return BodyModel(v, shapedirs, jreg, weights, parents, faces)


def body_rig(model: BodyModel, betas: np.ndarray) -> bundle.Rig:
    """The bundle rig of a body with these betas (extra betas beyond the model's are ignored)."""
    betas = np.asarray(betas, np.float64).reshape(-1)
    n = min(len(betas), model.num_shape)
    verts = model.v_template + model.shapedirs[:, :, :n] @ betas[:n]
    joints = model.j_regressor @ verts
    return bundle.Rig(joints=joints, parents=model.parents, vertices=verts, faces=model.faces,
                      weights=model.weights)  # fmt: skip


@dataclass
class MotionFile:
    rotvecs: np.ndarray  # (T,55,3)
    trans: np.ndarray  # (T,3)
    betas: np.ndarray  # (B,)
    gender: str
    fps: float


def read_motion(path: str | Path) -> MotionFile:
    """An SMPL-X motion file in the AMASS layout (also a Troupe ``motion.npz``)."""
    p = Path(path)
    data = _load(p, "motion")
    with data:
        poses = _array(data, p, "poses", 2).astype(np.float64)
        trans = _array(data, p, "trans", 2).astype(np.float64)
        betas = _array(data, p, "betas").astype(np.float64).reshape(-1)
        gender = str(_array(data, p, "gender")) if "gender" in data.files else "neutral"
        rate_key = "mocap_frame_rate" if "mocap_frame_rate" in data.files else "mocap_framerate"
        fps = float(_array(data, p, rate_key)) if rate_key in data.files else 0.0
    if poses.shape[1] != bundle.NUM_POSE:
        raise InterchangeError(f"{p.name}: 'poses' has {poses.shape[1]} values per frame, expected SMPL-X's "
                               f"{bundle.NUM_POSE} (156 is SMPL-H: use the SMPL-X version of the data set)")  # fmt: skip
    if trans.shape != (poses.shape[0], 3):
        raise InterchangeError(f"{p.name}: 'trans' has shape {trans.shape}, expected ({poses.shape[0]}, 3)")
    if not fps > 0:
        raise InterchangeError(f"{p.name}: no positive 'mocap_frame_rate' (frames per second)")
    gender = gender.strip().lower().replace("b'", "").replace("'", "")
    if gender not in bundle.GENDERS:
        gender = "neutral"
    return MotionFile(poses.reshape(-1, bundle.NUM_JOINTS, 3), trans, betas, gender, fps)


def detect_up_axis(rotvecs: np.ndarray) -> str:
    """"Z" or "Y": where the root orientation sends the model's +Y (up) axis, on average."""
    r0 = bundle.axis_angle_to_matrix(np.asarray(rotvecs)[:, 0])
    up = r0[:, :, 1].mean(axis=0)
    return "Z" if abs(up[2]) > abs(up[1]) else "Y"


def world_conversion(up_axis: str, rotvecs: np.ndarray) -> AxisConversion:
    """The conversion of a motion file's world frame: "Z" (none), "Y" (``axes.Y_UP``), "AUTO"."""
    if up_axis == "AUTO":
        up_axis = detect_up_axis(rotvecs)
    if up_axis not in ("Y", "Z"):
        raise ValueError(f"up_axis must be AUTO, Y or Z, not {up_axis!r}")
    return axes.IDENTITY if up_axis == "Z" else axes.Y_UP


def motion_person(path: str | Path, model: BodyModel, pid: str, target_fps: float | None = None) -> tuple[bundle.Person, float]:
    """A bundle ``Person`` from a motion file, resampled to ``target_fps`` (slerp / linear).
    Returns the person and its frame rate."""
    m = read_motion(path)
    rotvecs, trans, fps = m.rotvecs, m.trans, m.fps
    if target_fps and abs(target_fps - fps) > 1e-6:
        rotvecs, trans = rig.resample(rotvecs, trans, fps, target_fps)
        fps = target_fps
    t = len(rotvecs)
    motion = bundle.Motion(betas=m.betas, poses=rotvecs.reshape(t, -1), trans=trans, expression=np.zeros((t, 0)),
                           visibility=np.ones(t), gender=m.gender, fps=fps)  # fmt: skip
    return bundle.Person(id=pid, motion=motion, rig=body_rig(model, m.betas), name=pid), fps


def import_motion(
    path: str | Path,
    body_model: str | Path,
    up_axis: str = "AUTO",
    target_fps: float | None = None,
    frame_offset: int = 1,
    mesh: bool = True,
    context: Any | None = None,
) -> Any:
    """Import an AMASS-layout SMPL-X motion file as an armature (+ body mesh) in a new collection.

    target_fps: resample to this rate (default: the scene's frame rate). Returns the importer's
    ``ImportResult`` (one person, id = the file name).
    """
    from .datablocks import all_or_nothing
    from .importer import ImportResult, ImportSettings, create_person

    ctx: Any = context or bpy.context
    scene = ctx.scene
    path = Path(path)
    m = read_motion(path)
    model = load_body_model(body_model, m.gender)
    fps = target_fps or scene.render.fps / scene.render.fps_base
    person, _ = motion_person(path, model, path.stem, fps)
    world_conv = world_conversion(up_axis, m.rotvecs)
    with all_or_nothing() as created:
        top = bpy.data.collections.new(f"Troupe {path.stem}")
        scene.collection.children.link(top)
        result = ImportResult(collection=top)
        frames = frame_offset + np.arange(person.motion.num_frames, dtype=np.float64)
        settings = ImportSettings(mesh=mesh, splats=False)
        result.people[person.id] = create_person(person, 0, frames, top, ctx, settings, None, axes.Y_UP, world_conv)
        scene.frame_start = frame_offset
        scene.frame_end = int(frames[-1])
    result.import_id = created.import_id
    return result


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _select_only(context: Any, objects: list[bpy.types.Object], active: bpy.types.Object) -> None:
    for o in context.view_layer.objects:
        o.select_set(False)
    for o in objects:
        o.select_set(True)
    context.view_layer.objects.active = active


def _frame_range(armature: bpy.types.Object, scene: Any) -> tuple[int, int]:
    from . import compat

    curves = compat.fcurves_of(armature)
    if not curves:
        return scene.frame_start, scene.frame_end
    lo = min(fc.range()[0] for fc in curves)
    hi = max(fc.range()[1] for fc in curves)
    return int(round(lo)), int(round(hi))


def export_person(armature: bpy.types.Object, path: str | Path, fmt: str = "FBX", context: Any | None = None) -> Path:
    """Export a Troupe armature (and its skinned body mesh) with Blender's own exporters.

    Both files are +Y up (what game engines, retargeting tools such as Rokoko and Auto-Rig Pro,
    and Blender's own importers with their defaults expect). FBX: armature + meshes parented to
    it, baked animation, no leaf bones, -Z forward. BVH: the skeleton's motion, each bone's
    rotation in its native order; Blender's BVH exporter writes armature space as it is, so it
    exports a temporary copy whose rest pose is turned to +Y up (the keys are shared: bone-space
    rotations do not change when the whole rest pose turns).
    """
    import mathutils

    ctx: Any = context or bpy.context
    if armature.type != "ARMATURE":
        raise ValueError(f"{armature.name} is not an armature")
    if fmt not in ("FBX", "BVH"):
        raise ValueError(f"format must be FBX or BVH, not {fmt!r}")
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scene = ctx.scene
    start, end = _frame_range(armature, scene)
    view_layer = ctx.view_layer
    if view_layer.objects.active is not None and view_layer.objects.active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    previous_active = view_layer.objects.active
    previous = [o for o in view_layer.objects if o.select_get()]
    saved_range = (scene.frame_start, scene.frame_end)
    temp = None
    try:
        scene.frame_start, scene.frame_end = start, end
        if fmt == "FBX":
            meshes = [c for c in armature.children if c.type == "MESH" and any(m.type == "ARMATURE" for m in c.modifiers)]
            _select_only(ctx, [armature, *meshes], armature)
            bpy.ops.export_scene.fbx(
                filepath=str(out), use_selection=True, object_types={"ARMATURE", "MESH"}, add_leaf_bones=False,
                bake_anim=True, bake_anim_use_all_actions=False, bake_anim_use_nla_strips=False,
                bake_anim_simplify_factor=0.0, axis_forward="-Z", axis_up="Y", use_armature_deform_only=True,
            )  # fmt: skip
        else:
            temp = armature.copy()
            source: Any = armature.data
            data = source.copy()
            temp.data = data
            data.transform(mathutils.Matrix(np.linalg.inv(axes.Y_UP.matrix4).tolist()))
            temp.matrix_world = mathutils.Matrix.Identity(4)
            scene.collection.objects.link(temp)
            _select_only(ctx, [temp], temp)
            bpy.ops.export_anim.bvh(filepath=str(out), frame_start=start, frame_end=end, root_transform_only=False)
    finally:
        if temp is not None:
            temp_data: Any = temp.data
            bpy.data.objects.remove(temp)
            bpy.data.armatures.remove(temp_data)
        scene.frame_start, scene.frame_end = saved_range
        if previous_active is not None:
            _select_only(ctx, previous, previous_active)
    return out
