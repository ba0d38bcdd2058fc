# SPDX-License-Identifier: GPL-3.0-or-later
"""Import a Troupe result bundle: the logic behind File > Import > Troupe bundle.

The operator only turns its settings into an ``ImportSettings`` and calls ``import_bundle``;
scripts and tests call the same function. An invalid bundle raises ``bundle.BundleError``
(every problem, one line each) before anything is created; any failure after that removes
everything the import had made, so no orphan datablocks stay behind.

Layout made in the scene::

    Troupe <bundle>            collection; custom properties troupe_bundle (folder), troupe_import (id)
      <camera>                 camera (and its video plate)
      <person id>              collection per person
        <id>                   armature, custom property troupe_person_id, animated troupe_visibility
                               (it, the body, the splats and the mesh are hidden where it is 0, by keyed
                               hide_viewport / hide_render, unless hide_unseen is off)
        <id> body              skinned body mesh (vertex groups = bone names, Armature modifier)
        <id> splats            Gaussian splats (Geometry Nodes skinning + display)
        <id> joint frames      helper mesh the splat skinning reads the bones through
        <id> mesh              appearance mesh (when the bundle has mesh.ply)

Bundle frame i is scene frame ``frame_offset + i * frame_step`` (the source video's timing).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..core import bundle
from . import anim, armature, axes, camera, compat, gsplat, rig
from .blender_mesh import assign_vertex_groups, dense_weights, new_mesh
from .camera_math import intrinsics_to_blender
from .datablocks import BUNDLE_KEY, TAG, Created, all_or_nothing, imports_of_bundle, remove_tagged
from .splat_math import splat_points

PERSON_KEY = "troupe_person_id"


@dataclass
class ImportSettings:
    """What to import and how (the operator's options)."""

    people: list[str] | None = None  # person ids to import; None = everyone
    armature: bool = True  # armatures with keyframes (off: meshes and splats stay in the rest pose)
    mesh: bool = True  # skinned SMPL-X body meshes
    appearance_mesh: bool = True  # the optional people/<id>/mesh.ply, where present
    splats: bool = True  # Gaussian splats bound to the armature
    camera: bool = True  # the solved camera
    background: bool = True  # the source video as the camera's viewport background
    image_plane: bool = False  # the source video on a plate behind the people (shows in renders)
    frame_offset: int = 1  # scene frame of bundle frame 0
    replace: bool = True  # remove earlier imports of the same bundle first (off: add beside them)
    scene_settings: bool = True  # frame range, frame rate, resolution, active camera, Standard view
    splat_points_threshold: int = 500_000  # clouds with more Gaussians start in point display
    hide_unseen: bool = True  # hide each person (viewport and renders) on frames where its visibility is 0


@dataclass
class PersonObjects:
    armature: bpy.types.Object | None = None
    body: bpy.types.Object | None = None
    splats: bpy.types.Object | None = None
    joint_frames: bpy.types.Object | None = None
    mesh: bpy.types.Object | None = None


@dataclass
class ImportResult:
    collection: bpy.types.Collection
    people: dict[str, PersonObjects] = field(default_factory=dict)
    camera: bpy.types.Object | None = None
    plate: bpy.types.Object | None = None
    warnings: list[str] = field(default_factory=list)
    import_id: str = ""


def bundle_dir(path: str | Path) -> Path:
    """The bundle folder, given the folder or its bundle.json."""
    p = Path(path).expanduser()
    if p.name == "bundle.json" or p.is_file():
        p = p.parent
    return p.resolve()


def person_color(index: int) -> tuple[float, float, float, float]:
    """A distinct, muted colour per person (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((0.08 + index * 0.618034) % 1.0, 0.55, 0.8)
    return (r, g, b, 1.0)


class BundleImporter:
    """Reads and validates a bundle (``read``), then creates it in Blender (``create``)."""

    conv = axes.Y_UP  # bundles are +Y up: the one conversion every part below goes through

    def __init__(self, path: str | Path, settings: ImportSettings | None = None):
        self.path = bundle_dir(path)
        self.settings = settings or ImportSettings()
        self.bundle: bundle.Bundle | None = None

    def read(self) -> bundle.Bundle:
        """Validate and load; raises ``bundle.BundleError`` listing every problem."""
        b = bundle.read_bundle(self.path)
        wanted = self.settings.people
        if wanted is not None:
            known = [p.id for p in b.people]
            missing = [pid for pid in wanted if pid not in known]
            if missing:
                raise bundle.BundleError([f"bundle.json: no person {pid!r} (the bundle has {known})" for pid in missing])
        self.bundle = b
        return b

    def create(self, context: Any | None = None) -> ImportResult:
        context = context or bpy.context
        b = self.bundle or self.read()
        s = self.settings
        if s.replace:
            for coll in imports_of_bundle(str(self.path)):
                remove_tagged(coll[TAG])
        with all_or_nothing() as created:
            result = self._create(b, context, created)
        result.import_id = created.import_id
        return result

    # ----------------------------------------------------------------------------------

    def _create(self, b: bundle.Bundle, context: Any, created: Created) -> ImportResult:
        s = self.settings
        scene = context.scene
        top = bpy.data.collections.new(f"Troupe {self.path.name if self.path.name != 'bundle' else self.path.parent.name}")
        top[BUNDLE_KEY] = str(self.path)
        top[TAG] = created.import_id
        scene.collection.children.link(top)
        result = ImportResult(collection=top)
        # Bundle frame i is source frame frame_start + i * frame_step: keys land on the matching scene
        # frame, so with a step > 1 the timing and the background video stay in sync.
        frames = s.frame_offset + b.frame_step * np.arange(b.frame_count, dtype=np.float64)
        people = [p for p in b.people if s.people is None or p.id in s.people]
        splat_setup: gsplat.SplatSetup | None = None
        if s.splats and any(p.splats is not None for p in people):
            splat_setup = gsplat.SplatSetup(created)
        rigs = [create_rig(person, top, context, s, self.conv) for person in people]
        for index, (person, rigged) in enumerate(zip(people, rigs)):
            result.people[person.id] = create_person(person, index, frames, top, context, s, splat_setup, self.conv,
                                                     rigged=rigged)  # fmt: skip
        if s.camera:
            self._camera(b, frames, top, result)
        if s.scene_settings:
            self._scene_settings(b, scene, frames, result, with_splats=splat_setup is not None)
        return result

    def _camera(self, b: bundle.Bundle, frames: np.ndarray, top: bpy.types.Collection, result: ImportResult) -> None:
        s = self.settings
        cam = camera.create_camera("Troupe camera", b.camera, self.conv, frames, top)
        result.camera = cam
        intr_err = intrinsics_to_blender(b.camera.K, *b.image_size).aspect_error
        if intr_err > 5e-3:
            result.warnings.append(
                f"the camera's fx and fy differ by {intr_err:.1%}: Blender uses square pixels, so the "
                "vertical field of view is approximate"
            )
        video = bundle.video_path(self.path, b)
        if video is None or not (s.background or s.image_plane):
            return
        if not video.exists():
            result.warnings.append(f"the source video {video} is missing: no camera background")
            return
        image = camera.load_video(video)
        if s.background:
            span = int(frames[-1] - frames[0]) + 1
            camera.add_background(cam, image, video, int(frames[0]), b.frame_start, span)
        if s.image_plane:
            result.plate = camera.add_image_plane(cam, b.camera, image, video, frames, b.frame_start,
                                                  self._plate_depth(b), top)  # fmt: skip

    def _plate_depth(self, b: bundle.Bundle) -> float:
        """Far enough behind every person in every frame (at least 10 m)."""
        depth = 0.0
        w2c = b.camera.world_to_cam
        for p in b.people:
            joints = bundle.world_joints(p)  # (T,J,3)
            z = np.einsum("tab,tjb->tja", w2c[:, :3, :3], joints)[..., 2] + w2c[:, None, 2, 3]
            depth = max(depth, float(z.max()))
        return max(10.0, 2.0 * depth)

    def _scene_settings(self, b: bundle.Bundle, scene: Any, frames: np.ndarray, result: ImportResult,
                        with_splats: bool) -> None:  # fmt: skip
        render = scene.render
        fps = max(1, int(round(b.fps)))
        render.fps = fps
        render.fps_base = fps / b.fps
        scene.frame_start = int(frames[0])
        scene.frame_end = int(frames[-1])
        render.resolution_x, render.resolution_y = (int(v) for v in b.image_size)
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        if result.camera is not None:
            scene.camera = result.camera
        scene.view_settings.view_transform = "Standard"
        if with_splats and hasattr(scene, "cycles"):
            # Rays cross many semi-transparent ellipsoids; too few bounces turn them black.
            scene.cycles.transparent_max_bounces = max(scene.cycles.transparent_max_bounces, 64)


def create_rig(
    person: bundle.Person, parent: bpy.types.Collection, context: Any, settings: ImportSettings,
    conv: axes.AxisConversion,
) -> tuple[bpy.types.Collection, bpy.types.Object | None, np.ndarray | None]:
    """A person's collection and (unless switched off) armature with its rest rotations.

    Importers make every person's armature before any mesh or splat: building bones needs edit
    mode, and each switch re-evaluates the scene, heavy once splats are in it.
    """
    coll = bpy.data.collections.new(person.id)
    coll[PERSON_KEY] = person.id
    parent.children.link(coll)
    if not settings.armature:
        return coll, None, None
    heads = conv.points(person.rig.joints)
    arm_obj, rest_rot = armature.create_armature(person.id, heads, person.rig.parents, list(person.rig.joint_names),
                                                 coll, context)  # fmt: skip
    arm_obj[PERSON_KEY] = person.id
    return coll, arm_obj, rest_rot


def create_person(
    person: bundle.Person,
    index: int,
    frames: np.ndarray,
    parent: bpy.types.Collection,
    context: Any,
    settings: ImportSettings,
    splat_setup: gsplat.SplatSetup | None,
    conv: axes.AxisConversion,
    world_conv: axes.AxisConversion | None = None,
    rigged: tuple[bpy.types.Collection, bpy.types.Object | None, np.ndarray | None] | None = None,
) -> PersonObjects:
    """One person's collection, armature (keyed at scene ``frames``), meshes and splats.

    conv converts the rest body (and, unless ``world_conv`` is given, the world motion);
    ``rigged`` is what ``create_rig`` made for this person already, if it was called first.
    """
    s = settings
    coll, arm_obj, rest_rot = rigged or create_rig(person, parent, context, settings, conv)
    out = PersonObjects(armature=arm_obj)
    names = list(person.rig.joint_names)
    heads = conv.points(person.rig.joints)
    if arm_obj is not None and rest_rot is not None:
        quats, root_loc = rig.pose_basis(rest_rot, person.rig.joints, person.motion.rotvecs, person.motion.trans,
                                         conv, world_conv)  # fmt: skip
        armature.key_pose(arm_obj, names, frames, quats, root_loc, person.motion.visibility, s.hide_unseen)
    color = person_color(index)
    if s.mesh:
        out.body = _skinned_mesh(f"{person.id} body", conv.points(person.rig.vertices), person.rig.faces, names,
                                 person.rig.weights, arm_obj, coll, color)  # fmt: skip
    if s.appearance_mesh and person.mesh is not None:
        m = person.mesh
        weights = dense_weights(m.skin_joints, m.skin_weights, len(names))
        out.mesh = _skinned_mesh(f"{person.id} mesh", conv.points(m.vertices), m.faces, names, weights, arm_obj,
                                 coll, color, m.colors)  # fmt: skip
    if splat_setup is not None and person.splats is not None:
        points = splat_points(person.splats, conv)
        frames_obj = None
        if arm_obj is not None:
            frames_obj = gsplat.create_joint_frames(f"{person.id} joint frames", heads, names, arm_obj, coll)
            out.joint_frames = frames_obj
        out.splats = gsplat.create_splat_object(
            f"{person.id} splats", points, coll, splat_setup, frames_obj,
            display_points=points.count > s.splat_points_threshold,
        )  # fmt: skip
    for obj in (out.body, out.splats, out.mesh, out.joint_frames):
        if obj is not None:
            obj[PERSON_KEY] = person.id
    if s.hide_unseen:
        for obj in (out.body, out.splats, out.mesh):
            if obj is not None:
                anim.hide_where_unseen(obj, frames, person.motion.visibility)
    return out


def _skinned_mesh(
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    names: list[str],
    weights: np.ndarray,
    arm_obj: bpy.types.Object | None,
    coll: bpy.types.Collection,
    color: tuple[float, float, float, float],
    vertex_colors: np.ndarray | None = None,
) -> bpy.types.Object:
    """A smooth-shaded mesh with a per-person material, skinned to ``arm_obj`` when given."""
    mesh = new_mesh(name, vertices, faces)
    mesh.shade_smooth()
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = color
    mesh.materials.append(mat)
    compat.use_nodes(mat)
    tree: Any = mat.node_tree
    bsdf = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = color
        bsdf.inputs["Roughness"].default_value = 0.6
    if vertex_colors is not None:
        attr: Any = mesh.color_attributes.new("Color", "BYTE_COLOR", "POINT")
        rgba = np.concatenate([np.asarray(vertex_colors, np.float32) / 255.0, np.ones((len(vertex_colors), 1), np.float32)], 1)
        attr.data.foreach_set("color_srgb", rgba.ravel())
        if bsdf is not None:
            node = tree.nodes.new("ShaderNodeVertexColor")
            node.layer_name = "Color"
            tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    obj = bpy.data.objects.new(name, mesh)
    coll.objects.link(obj)
    if arm_obj is not None:
        assign_vertex_groups(obj, names, weights)
        mod: Any = obj.modifiers.new("Armature", "ARMATURE")
        mod.object = arm_obj
        obj.parent = arm_obj
    return obj


def import_bundle(path: str | Path, settings: ImportSettings | None = None, context: Any | None = None) -> ImportResult:
    """Validate and import the bundle at ``path`` (folder or bundle.json)."""
    return BundleImporter(path, settings).create(context)
