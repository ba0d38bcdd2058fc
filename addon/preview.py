# SPDX-License-Identifier: GPL-3.0-or-later
"""A quick, good-looking still of an imported bundle: camera view, people over the footage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from . import compat

PREVIEW_LIGHT = "Troupe preview sun"


def ensure_lighting(scene: Any) -> None:
    """A soft sun and a grey world where the scene has no light of its own (kept in the file)."""
    if not any(o.type == "LIGHT" for o in scene.objects):
        light: Any = bpy.data.lights.new(PREVIEW_LIGHT, "SUN")
        light.energy = 3.0
        light.angle = 0.35  # soft shadows
        obj = bpy.data.objects.new(PREVIEW_LIGHT, light)
        obj.rotation_euler = (0.75, 0.2, 0.6)
        scene.collection.objects.link(obj)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Troupe world")
    world: Any = scene.world
    world.color = (0.35, 0.35, 0.38)
    if world.node_tree is not None:
        bg = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
        if bg is not None:
            bg.inputs["Color"].default_value = (0.35, 0.35, 0.38, 1.0)
            bg.inputs["Strength"].default_value = 1.0


def render_preview(
    path: str | Path,
    frame: int | None = None,
    scene: Any | None = None,
    max_width: int = 640,
    samples: int = 16,
    threads: int = 0,
    time_limit: float = 40.0,
    engine: str = "CYCLES",
) -> Path:
    """Render the scene camera's view at ``frame`` into a PNG (Cycles on the CPU by default).

    Scales the scene resolution down to at most ``max_width`` pixels wide (keeping its aspect),
    few samples with denoising where this Blender has it, and stops Cycles after ``time_limit``
    seconds (large splat clouds; 0 = no limit); ``threads`` 0 = all cores. ``engine`` "EEVEE"
    renders with EEVEE instead (needs a GPU / OpenGL context).
    """
    context: Any = bpy.context
    scene = scene or context.scene
    if scene.camera is None:
        raise RuntimeError("render_preview: the scene has no camera (import the bundle with its camera)")
    if frame is not None:
        scene.frame_set(int(frame))
    ensure_lighting(scene)
    render = scene.render
    render.engine = compat.eevee_engine() if engine == "EEVEE" else "CYCLES"
    cycles: Any = scene.cycles
    cycles.device = "CPU"
    cycles.samples = samples
    cycles.use_adaptive_sampling = True
    cycles.max_bounces = 4
    cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, 64)
    cycles.use_denoising = bool(getattr(bpy.app.build_options, "openimagedenoise", False))
    if hasattr(cycles, "time_limit"):
        cycles.time_limit = time_limit
    eevee: Any = scene.eevee
    if hasattr(eevee, "taa_render_samples"):
        eevee.taa_render_samples = samples
    render.threads_mode = "FIXED" if threads else "AUTO"
    if threads:
        render.threads = threads
    render.resolution_percentage = max(1, min(100, int(100 * max_width / max(render.resolution_x, 1))))
    render.film_transparent = False
    render.image_settings.file_format = "PNG"
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    render.filepath = str(out)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return out
