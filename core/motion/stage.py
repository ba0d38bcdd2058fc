"""The ``motion`` stage: people stage outputs -> ``<job>/motion/`` (a result bundle without splats).

Reads ``<job>/people/`` (tracks, 2D keypoints, label maps) and ``<job>/ingest/`` (frames and
meta), finds the intrinsics (metadata, else a field-of-view search scored by the fit), decides
whether the camera moves (background motion with the people masked out) and if so solves its
path (``core.motion.camera``), fits everyone (``core.motion.solve.fit_motion``), and writes a
bundle (``core.bundle.write_bundle``) the Blender importer can show as it is.

Settings beyond ``RunConfig``: ``RunConfig.extra["motion"]`` may hold any ``FitConfig`` field
(e.g. ``{"iters_world": 0}``) and ``camera`` ("auto" | "static" | "moving"), ``focal_px`` or
``hfov_deg`` (known intrinsics, working pixels / degrees).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bundle
from ..pipeline import JobError, RunConfig, StageContext
from .fit import FitConfig, Observations
from .inputs import MotionInputs, focal_from_hfov, intrinsics, read_people_stage

if TYPE_CHECKING:
    from .solve import WorldGuard

log = logging.getLogger("troupe.motion")

QUALITY_ITERS = {"preview": 0.4, "standard": 1.0, "high": 2.0}  # multiplies FitConfig's iterations
STAGE_KEYS = ("camera", "focal_px", "hfov_deg")  # extra["motion"] keys that are not FitConfig fields


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise JobError(f"device '{device}' was asked for, but this environment has no CUDA (use --device cpu or auto)")
    return device


def fit_config(config: RunConfig) -> tuple[FitConfig, dict[str, Any]]:
    """FitConfig for a run (quality preset, device, ``extra["motion"]`` overrides) and the
    stage-level settings (``STAGE_KEYS``)."""
    mult = QUALITY_ITERS.get(config.quality, 1.0)
    base = FitConfig(device=resolve_device(config.device))
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    over = dict(config.extra.get("motion") or {})
    stage = {k: over.pop(k) for k in STAGE_KEYS if k in over}
    unknown = sorted(set(over) - fields)
    if unknown:
        raise JobError(
            f"config extra['motion'] has unknown settings {unknown}; expected FitConfig fields "
            f"({', '.join(sorted(fields))}) or {', '.join(STAGE_KEYS)}"
        )
    iters = {k: max(1, round(getattr(base, k) * mult)) for k in ("iters_rigid", "iters_limbs", "iters_heading", "iters_pose", "iters_world")}
    prior = {"pose_prior": config.pose_prior} if config.pose_prior else {}
    cfg = dataclasses.replace(base, **{**iters, **prior, **over})
    return cfg, stage


def load_model(config: RunConfig, device: str):  # type: ignore[no-untyped-def]
    from ..body.model import BodyModel, BodyModelNotFound

    try:
        return BodyModel(config.body_model, gender=config.gender, device=device)
    except BodyModelNotFound as exc:
        raise JobError(str(exc)) from None


def ingest_meta(ingest_dir: Path) -> dict[str, Any]:
    path = ingest_dir / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path} is missing: run the ingest stage first") from None
    except ValueError as exc:
        raise JobError(f"{path}: not valid JSON ({exc})") from None


def make_bundle(
    inputs: MotionInputs,
    state,  # type: ignore[no-untyped-def]
    K: np.ndarray,
    model,  # type: ignore[no-untyped-def]
    *,
    video: str | None,
    extra: dict[str, Any],
) -> bundle.Bundle:
    """The motion bundle of a fit (``state`` in the world frame)."""
    from .solve import state_to_motions

    motions = state_to_motions(state, inputs.visibility, inputs.fps, model.gender, model.num_expression)
    people = [bundle.Person(id=pid, motion=m, rig=model.rig(m.betas)) for pid, m in zip(inputs.ids, motions)]
    frames = np.asarray(inputs.source_frames)
    step = int(np.median(np.diff(frames))) if len(frames) > 1 else 1
    return bundle.Bundle(
        fps=inputs.fps,
        image_size=inputs.image_size,
        camera=bundle.Camera(K=K, world_to_cam=state.world_to_cam, image_size=inputs.image_size),
        people=people,
        body_model=model.info,
        frame_start=int(frames[0]) if len(frames) else 0,
        frame_step=max(step, 1),
        video=video,
        generator="troupe motion",
        extra={"motion": extra},
    )


def run_stage(ctx: StageContext) -> None:
    from .camera import choose_focal, solve_camera
    from .solve import fit_motion

    config = ctx.config
    ingest_dir = ctx.input_dir("ingest")
    meta = ingest_meta(ingest_dir)
    inputs = read_people_stage(ctx.input_dir("people"), ingest_dir)
    cfg, stage = fit_config(config)
    model = load_model(config, cfg.device)
    num_t = inputs.num_frames
    ctx.progress(0.02, f"{len(inputs.ids)} people, {num_t} frames")

    init = None
    if config.motion_init:
        from .init import load_init

        init = load_init(config.motion_init, inputs, model, allow_pickle=config.allow_pickle)
        ctx.progress(0.04, f"starting from {init.source}")

    focal, focal_source = inputs.focal_px, "metadata"
    if stage.get("focal_px"):
        focal, focal_source = float(stage["focal_px"]), "config"
    elif stage.get("hfov_deg"):
        focal, focal_source = focal_from_hfov(inputs.image_size[0], float(stage["hfov_deg"])), "config"
    if init is not None and init.focal_px and focal is None:
        focal, focal_source = init.focal_px, "init"
    if init is not None and init.K is not None:
        focal, focal_source = float(init.K[0, 0, 0]), "init"
    if focal is None:
        ctx.progress(0.05, "searching the field of view")
        found = choose_focal(inputs, cfg)
        focal, focal_source = found.focal_px, "search" if found.source == "people" else f"search {found.source}"
    K = intrinsics(inputs.image_size, focal, num_t) if init is None or init.K is None else init.K

    from ..people.ingest import Frames

    mode = "static" if init is not None and init.world is not None else stage.get("camera", "auto")
    cam = solve_camera(Frames(ingest_dir), inputs, K, mode=mode, progress=ctx.progress)
    ctx.progress(0.15, f"camera: {cam.kind}")
    obs = Observations(
        keypoints=inputs.keypoints,
        K=K,
        world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)),
        image_size=inputs.image_size,
        labels=inputs.labels,
        label_scale=inputs.label_scale,
        fps=inputs.fps,
        foot_keypoints=inputs.foot_keypoints,
    )
    result = fit_motion(
        model,
        obs,
        cfg,
        init=None if init is None else init.state,
        init_world=None if init is None else init.world,
        init_root=True if init is None else init.has_root,
        cam_path=cam.cam_to_scene,
        cam_points=cam.points,
        progress=lambda f, msg: ctx.progress(0.15 + 0.8 * f, msg),
    )
    reproj = {pid: _mean(result.reprojection_px[i]) for i, pid in enumerate(inputs.ids)}
    extra = {
        "camera": cam.kind,
        "camera_scale": cam.scale_note,
        "focal_px": float(focal),
        "focal_source": focal_source,
        "reprojection_px": reproj,
        "reprojection_px_mean": _mean(result.reprojection_px),
        "floor_spread_m": result.ground.residual,
        "levels": result.ground.off_floor(inputs.ids),
        "world_guard": None if result.guard is None else _guard_json(result.guard, inputs.ids),
        "init": None if init is None else init.source,
        "pose_prior": cfg.pose_prior or None,
        "quality": config.quality,
        "device": cfg.device,
        # heels and big toes: whether the detector gave them and the fit used them, and how far off they are
        "foot_keypoints": inputs.foot_keypoints is not None and cfg.foot_keypoints,
        "foot_reprojection_px_mean": None if result.foot_reprojection_px is None else _mean(result.foot_reprojection_px),
    }
    b = make_bundle(inputs, result.state, K, model, video=meta.get("source"), extra=extra)
    bundle.write_bundle(ctx.out_dir, b)
    log.info("motion: mean reprojection %.1f px, floor spread %.3f m", extra["reprojection_px_mean"], result.ground.residual)
    ctx.progress(1.0, f"mean reprojection error {extra['reprojection_px_mean']:.1f} px")


def _guard_json(guard: WorldGuard, ids: list[str]) -> dict[str, Any]:
    """People the world stage carried off their keypoints: errors as shares of their size."""
    return {
        "people": [ids[p] for p in guard.people],
        "camera_frame": [round(float(x), 4) for x in guard.camera_frame],
        "world": [round(float(x), 4) for x in guard.world],
        "retry": [round(float(x), 4) for x in guard.retry],
        "kept": guard.kept,
    }


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")
