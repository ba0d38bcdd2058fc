"""The export stage: the motion stage's bundle plus the avatars' splats -> ``<job>/bundle/``.

Inputs (job directory):
    motion/                      a bundle without splats (camera, people/<id>/motion.npz + rig.npz)
    avatars/people/<id>/splats.ply, mesh.ply   (optional; absent when avatars are off)

The bundle is written into a temporary folder beside the final one and swapped in at the end,
so ``<job>/bundle`` is always either the previous complete result or the new complete one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import bundle
from .pipeline import JobError, StageContext

log = logging.getLogger("troupe.export")


def assemble(motion_dir: Path, avatars_dir: Path | None, video: str | None) -> bundle.Bundle:
    """Read the motion bundle and attach each person's splats / mesh where the avatars have them."""
    try:
        result = bundle.read_bundle(motion_dir)
    except bundle.BundleError as exc:
        raise JobError(f"the motion stage's output in {motion_dir} is not a valid bundle:\n{exc}") from None
    for person in result.people:
        pdir = avatars_dir / "people" / person.id if avatars_dir else None
        if pdir and (pdir / "splats.ply").is_file():
            person.splats = bundle.splats_from_ply(pdir / "splats.ply")
        if pdir and (pdir / "mesh.ply").is_file():
            person.mesh = bundle.mesh_from_ply(pdir / "mesh.ply")
    if video:
        result.video = video
    result.generator = "troupe run"
    return result


def write_swapped(result: bundle.Bundle, dest: Path) -> Path:
    """Write ``result`` to ``dest`` through a temporary sibling folder, then swap it in."""
    tmp = dest.with_name(dest.name + ".partial")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    bundle.write_bundle(tmp, result)
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def run_stage(ctx: StageContext) -> None:
    motion_dir = ctx.input_dir("motion")
    avatars_dir = ctx.input_dir("avatars") if ctx.config.avatars else None
    ctx.progress(0.1, "reading motion and avatars")
    result = assemble(motion_dir, avatars_dir, ctx.config.video or None)
    missing = [p.id for p in result.people if ctx.config.avatars and p.splats is None]
    if missing:
        log.warning("no splats for %s: exported with motion and body only", ", ".join(missing))
    ctx.progress(0.5, f"writing {len(result.people)} people")
    write_swapped(result, ctx.job.bundle_dir)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
