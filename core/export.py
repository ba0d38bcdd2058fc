"""The export stage: the motion stage's bundle plus the avatars' splats -> ``<job>/bundle/``.

Inputs (job directory):
    motion/      a bundle without splats (camera, people/<id>/motion.npz + rig.npz)
    avatars/     (when avatars are on) a bundle with each person's splats.ply (and mesh.ply) and the
                 motion the splats were fitted to: the refined poses when pose refinement is on,
                 so the export takes each person's motion from here when it has one

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


def _read(path: Path, stage: str) -> bundle.Bundle:
    try:
        return bundle.read_bundle(path)
    except bundle.BundleError as exc:
        raise JobError(f"the {stage} stage's output in {path} is not a valid bundle:\n{exc}") from None


def assemble(motion_dir: Path, avatars_dir: Path | None, video: str | None) -> bundle.Bundle:
    """The motion bundle, with each person's avatar (splats, mesh and the motion they were fitted
    to) taken from the avatars stage's bundle where it has that person."""
    result = _read(motion_dir, "motion")
    if avatars_dir is not None and (avatars_dir / "bundle.json").is_file():
        fitted = {p.id: p for p in _read(avatars_dir, "avatars").people}
        for i, person in enumerate(result.people):
            avatar = fitted.get(person.id)
            if avatar is not None:
                result.people[i] = bundle.Person(
                    id=person.id, motion=avatar.motion, rig=person.rig, splats=avatar.splats,
                    mesh=avatar.mesh, name=person.name,
                )  # fmt: skip
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
