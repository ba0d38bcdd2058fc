"""The ``avatars`` stage: every person's Gaussians, driven by their SMPL-X motion, fitted to the video.

Reads (job directory):
    ingest/                  working frames + meta.json (``core.people.ingest.Frames``)
    people/                  label maps (``core.people.formats.read_people``)
    motion/                  a bundle without splats (camera, people/<id>/motion.npz + rig.npz)
Writes ``avatars/`` (see ``core.avatars.outputs``): a bundle with splats and refined motion,
config.json, metrics.json and renders.

Settings: ``AvatarConfig.preset(RunConfig.quality)``, seed from ``RunConfig.seed``, any field
overridden by ``RunConfig.extra["avatars"]`` (e.g. ``{"iterations": 500}``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .. import bundle
from ..pipeline import JobError, RunConfig, StageContext
from .config import AvatarConfig

log = logging.getLogger("troupe.avatars")


def resolve_config(run: RunConfig) -> AvatarConfig:
    overrides = dict(run.extra.get("avatars") or {})
    try:
        return AvatarConfig.preset(run.quality).replace(seed=run.seed, **overrides)
    except ValueError as exc:
        raise JobError(f"config.extra['avatars']: {exc}") from None


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JobError(f"device {name!r} was asked for but CUDA is not available in this environment")
    return name


def load_inputs(job_root: Path, motion: bundle.Bundle) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames (T,H,W,3) and labels (T,H,W) with label i+1 = ``motion.people[i]``."""
    from ..people.formats import PeopleFormatError, read_people
    from ..people.ingest import Frames

    frames_src = Frames(job_root / "ingest")
    try:
        people = read_people(job_root / "people")
    except PeopleFormatError as exc:
        raise JobError(str(exc)) from None
    t = motion.frame_count
    w, h = motion.image_size
    if len(frames_src) != t or len(people.labels) != t:
        raise JobError(f"frame counts differ: ingest has {len(frames_src)}, people masks {len(people.labels)}, "
                       f"the motion bundle {t} (re-run the stages after ingest)")  # fmt: skip
    # Label value of person i in the people stage -> its position in the motion bundle (+1).
    lut = np.zeros(256, np.uint8)
    order = {p.id: i for i, p in enumerate(motion.people)}
    for i, pid in enumerate(people.ids):
        if pid in order:
            lut[i + 1] = order[pid] + 1
    missing = [p.id for p in motion.people if p.id not in people.ids]
    if missing:
        raise JobError(f"people/tracks.npz has no masks for motion people {missing}")
    frames = np.empty((t, h, w, 3), np.uint8)
    labels = np.empty((t, h, w), np.uint8)
    for i in range(t):
        img = frames_src[i]
        if img.shape[:2] != (h, w):
            raise JobError(
                f"{frames_src.path(i)}: {img.shape[1]}x{img.shape[0]}, expected {w}x{h} (motion image_size)"
            )
        frames[i] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        labels[i] = lut[np.asarray(people.labels[i])]
    return frames, labels


def run_stage(ctx: StageContext) -> None:
    from .fit import AvatarInputError, fit_avatars
    from .outputs import write_outputs

    cfg = resolve_config(ctx.config)
    device = resolve_device(ctx.config.device)
    motion_dir = ctx.input_dir("motion")
    try:
        motion = bundle.read_bundle(motion_dir)
    except bundle.BundleError as exc:
        raise JobError(f"the motion stage's output in {motion_dir} is not a valid bundle:\n{exc}") from None
    ctx.progress(0.0, "reading frames and masks")
    frames, labels = load_inputs(ctx.job.root, motion)
    log.info("avatars: %d people, %d frames, %s, preset %s on %s", len(motion.people), len(frames),
             motion.image_size, ctx.config.quality, device)  # fmt: skip
    try:
        result = fit_avatars(frames, labels, motion, cfg, device=device,
                             progress=lambda f, m: ctx.progress(0.02 + 0.9 * f, m))  # fmt: skip
    except AvatarInputError as exc:
        raise JobError(f"avatars: {exc}") from None
    ctx.progress(0.93, "writing splats and renders")
    write_outputs(result, ctx.out_dir)
    held = result.metrics.get("heldout") or {}
    if held:
        log.info("avatars: held-out PSNR %.2f dB, SSIM %.3f inside masks (init %.2f dB)", held["psnr"],
                 held["ssim"], result.metrics["init"].get("psnr", float("nan")))  # fmt: skip
