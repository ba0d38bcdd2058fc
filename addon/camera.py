# SPDX-License-Identifier: GPL-3.0-or-later
"""The solved camera: animated extrinsics and intrinsics, the source video behind it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..core import bundle
from . import anim, compat, rig
from .axes import AxisConversion
from .blender_mesh import new_mesh
from .camera_math import image_plane_placement, intrinsics_to_blender

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp")


def _animated(values: np.ndarray) -> bool:
    return bool(len(values) > 1 and np.ptp(np.asarray(values), axis=0).max() > 1e-7)


def create_camera(
    name: str,
    cam: bundle.Camera,
    conv: AxisConversion,
    frames: np.ndarray,
    collection: bpy.types.Collection,
) -> bpy.types.Object:
    """A camera object reproducing ``cam`` at scene ``frames`` (one per bundle frame).

    Extrinsics are keyed on the object (location + quaternion) and intrinsics on the camera
    data (lens, shift_x, shift_y), each only where they change over time.
    """
    width, height = cam.image_size
    intr = intrinsics_to_blender(cam.K, width, height)
    data: Any = bpy.data.cameras.new(name)
    data.sensor_fit = intr.sensor_fit
    data.sensor_width = intr.sensor_mm
    data.sensor_height = intr.sensor_mm
    data.lens = float(intr.lens[0])
    data.shift_x = float(intr.shift_x[0])
    data.shift_y = float(intr.shift_y[0])
    data.clip_start = 0.01
    data.clip_end = 1000.0
    obj = bpy.data.objects.new(name, data)
    obj.rotation_mode = "QUATERNION"
    world = conv.camera_matrix_world(cam.world_to_cam)  # (T,4,4)
    location = world[:, :3, 3]
    quats = rig.make_continuous(rig.matrix_to_quaternion(world[:, :3, :3]))
    obj.location = location[0].tolist()
    obj.rotation_quaternion = quats[0].tolist()
    if _animated(location) or _animated(quats):
        factory = compat.new_action(obj, f"{name} motion")
        anim.key_vector(factory, "location", frames, location, "Object Transforms")
        anim.key_vector(factory, "rotation_quaternion", frames, quats, "Object Transforms")
    if intr.animated:
        factory = compat.new_action(data, f"{name} lens")
        for path, values in (("lens", intr.lens), ("shift_x", intr.shift_x), ("shift_y", intr.shift_y)):
            anim.key_vector(factory, path, frames, values[:, None])
    collection.objects.link(obj)
    return obj


def load_video(path: Path) -> bpy.types.Image:
    """The source video (a movie file, or a folder of frames) as a Blender image."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise FileNotFoundError(f"{path}: the video folder holds no image files ({', '.join(IMAGE_EXTS)})")
        image = bpy.data.images.load(str(files[0]), check_existing=False)
        image.source = "SEQUENCE"
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the bundle's video is missing")
        image = bpy.data.images.load(str(path), check_existing=False)
        if image.source != "MOVIE":
            image.source = "MOVIE"
    return image


def first_file_number(path: Path) -> int:
    """Frame number Blender reads from the first file of an image sequence (0 for a movie)."""
    if not path.is_dir():
        return 0
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    digits = "".join(ch if ch.isdigit() else " " for ch in files[0].stem).split()
    return int(digits[-1]) if digits else 0


def setup_image_user(user: Any, path: Path, first_scene_frame: int, source_frame: int, frame_count: int) -> None:
    """Show source frame ``source_frame + i`` at scene frame ``first_scene_frame + i``.

    Blender's image user reads frame ``scene_frame - frame_start + 1 + frame_offset`` (movie
    frames count from 1, sequences use the number in the file name)."""
    base = first_file_number(path) if path.is_dir() else 1
    user.frame_start = int(first_scene_frame)
    user.frame_offset = int(source_frame + base - 1)
    user.frame_duration = int(frame_count)
    user.use_auto_refresh = True
    user.use_cyclic = False


def add_background(camera: bpy.types.Object, image: bpy.types.Image, path: Path, first_frame: int,
                   source_frame: int, frame_count: int) -> None:  # fmt: skip
    """The video as the camera's viewport background (seen looking through the camera)."""
    data: Any = camera.data
    bg = data.background_images.new()
    bg.source = "IMAGE"
    bg.image = image
    setup_image_user(bg.image_user, path, first_frame, source_frame, frame_count)
    bg.alpha = 1.0
    bg.display_depth = "BACK"
    bg.frame_method = "STRETCH"
    data.show_background_images = True


def add_image_plane(
    camera: bpy.types.Object,
    cam: bundle.Camera,
    image: bpy.types.Image,
    path: Path,
    frames: np.ndarray,
    source_frame: int,
    depth: float,
    collection: bpy.types.Collection,
) -> bpy.types.Object:
    """A quad filling the camera's view at ``depth`` metres, textured with the video.

    Parented to the camera and keyed with the intrinsics, so it stays exactly behind the image
    frame; seen by camera rays only (casts no shadows, shows in no reflections), so it renders
    the footage behind the people in Cycles and EEVEE.
    """
    width, height = cam.image_size
    mesh = new_mesh(f"{camera.name} plate", np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float),
                    np.array([[0, 1, 2], [0, 2, 3]]))  # fmt: skip
    uv: Any = mesh.uv_layers.new(name="UVMap")
    loops = np.array([0, 1, 2, 0, 2, 3])
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    uv.data.foreach_set("uv", corners[loops].ravel())
    mat = bpy.data.materials.new(f"{camera.name} plate")
    compat.use_nodes(mat)
    tree: Any = mat.node_tree
    tree.nodes.clear()
    tex = tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.extension = "CLIP"
    setup_image_user(tex.image_user, path, int(frames[0]), source_frame, int(frames[-1] - frames[0]) + 1)
    emit = tree.nodes.new("ShaderNodeEmission")
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(tex.outputs["Color"], emit.inputs["Color"])
    tree.links.new(emit.outputs[0], out.inputs["Surface"])
    mesh.materials.append(mat)
    obj = bpy.data.objects.new(f"{camera.name} plate", mesh)
    obj.parent = camera
    location, scale = image_plane_placement(cam.K, width, height, depth)
    obj.location = location[0].tolist()
    obj.scale = scale[0].tolist()
    if _animated(location) or _animated(scale):
        factory = compat.new_action(obj, f"{obj.name} placement")
        anim.key_vector(factory, "location", frames, location)
        anim.key_vector(factory, "scale", frames, scale)
    for attr in ("visible_diffuse", "visible_glossy", "visible_transmission", "visible_volume_scatter", "visible_shadow"):
        setattr(obj, attr, False)
    obj.hide_select = True
    cam_data: Any = camera.data
    cam_data.clip_end = max(cam_data.clip_end, depth * 1.5)
    collection.objects.link(obj)
    return obj
