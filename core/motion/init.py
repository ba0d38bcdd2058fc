"""Starting points from other tools (``--motion-init PATH``), fitted further by Troupe.

Accepted (``load_init`` picks by what PATH is):

1. **A Troupe result bundle** (a folder with ``bundle.json``, e.g. a ``core synth`` ground truth
   or another run's ``<job>/motion``): the most exact form. Its world frame, cameras and every
   person's parameters are taken as they are; only the joint refinement runs (with
   ``extra["motion"] = {"iters_world": 0}`` the motion is kept verbatim).
2. **The simple npz** (``format = "troupe.motion_init"``), which any tool can write::

       format        "troupe.motion_init"
       ids           (N,) str      person ids; matched to the people stage's tracks by id, else
                                   by where the bodies project (when a camera-frame root is given),
                                   else in order
       body_pose     (N,T,63)      SMPL-X body pose, axis-angle (SMPL's first 21 body joints are
                                   the same joints)
       global_orient (N,T,3)       optional: root rotation in the OpenCV camera frame of the video
       transl        (N,T,3)       optional: SMPL-X transl in that camera frame (metres)
       betas         (N,B)         optional: SMPL-X betas (B <= the model's)
       focal_px      ()            optional: the focal length the tool assumed (working pixels)

   Frame t of the file is job frame t (write the frames the job uses: ``people.json`` lists
   them). Without ``global_orient``/``transl`` Troupe places the bodies itself.
3. **AMASS / SMPL-X npz** (``poses`` (T,165) or (T,156), ``trans``, ``betas``): one person per
   file, or a folder of them (sorted by name, matched to tracks in order). AMASS's world frame
   has no relation to the video camera, so only the body pose and shape are used.
4. **4D-Humans / PHALP pickle** (``.pkl``, the tracker's per-frame dict of ``tracked_ids``,
   ``smpl`` (global_orient, body_pose as rotation matrices, betas) and ``camera``
   translations): **only with** ``allow_pickle`` (``--allow-pickle``), because unpickling can run
   code. SMPL's body joints 1-21 map to SMPL-X's; SMPL betas are not SMPL-X betas and are
   dropped; the camera translation assumes the tool's focal length (``focal_px`` argument,
   default 5000 px for a 256 px crop, i.e. ``5000 / 256 * max(W, H)``).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from .. import bundle
from ..pipeline import PICKLE_SUFFIXES, JobError
from .fit import FitState, relaxed_pose
from .inputs import MotionInputs

log = logging.getLogger("troupe.motion")

INIT_FORMAT = "troupe.motion_init"


@dataclass
class MotionInit:
    source: str  # what was read, for the log and bundle.json
    state: FitState | None = None  # camera-frame start (rotations as matrices)
    world: FitState | None = None  # complete world-frame start with cameras (Troupe bundle)
    K: np.ndarray | None = None  # [T, 3, 3] intrinsics of a Troupe bundle
    focal_px: float | None = None
    has_root: bool = True  # False: only pose/shape known, Troupe places the bodies


def load_init(path: str | Path, inputs: MotionInputs, model, *, allow_pickle: bool = False) -> MotionInit:  # type: ignore[no-untyped-def]
    path = Path(path)
    if not path.exists():
        raise JobError(f"motion init {path} does not exist")
    if path.is_dir() and (path / "bundle.json").is_file():
        return from_bundle(path, inputs, model)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise JobError(f"motion init folder {path} has no bundle.json and no .npz files")
        return from_amass(files, inputs, model)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise JobError(
                f"motion init {path} is a pickle, which can run code when read; pass --allow-pickle "
                "(or allow_pickle in the config) only for files you trust"
            )
        warnings.warn(f"reading pickled motion init {path} (allow_pickle is on)", stacklevel=2)
        log.warning("reading pickled motion init %s (allow_pickle is on)", path)
        return from_phalp(path, inputs, model)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except ValueError as exc:
            raise JobError(f"motion init {path}: unreadable without pickling ({exc})") from None
        if str(data.get("format", "")) == INIT_FORMAT:
            return from_simple(data, path, inputs, model)
        if "poses" in data:
            return from_amass([path], inputs, model)
        raise JobError(
            f"motion init {path}: neither format '{INIT_FORMAT}' (see docs/motion.md) nor an "
            "AMASS/SMPL-X npz with 'poses'"
        )
    raise JobError(f"motion init {path}: expected a bundle folder, an .npz or (with --allow-pickle) a .pkl")


def _blank(inputs: MotionInputs, num_betas: int) -> FitState:
    num_p, num_t = len(inputs.ids), inputs.num_frames
    return FitState(
        betas=np.zeros((num_p, num_betas)),
        global_rot=np.tile(np.eye(3), (num_p, num_t, 1, 1)),
        body_pose=np.broadcast_to(relaxed_pose(), (num_p, num_t, 63)).copy(),
        transl=np.zeros((num_p, num_t, 3)),
        world_to_cam=np.tile(np.eye(4), (num_t, 1, 1)),
    )


def _fit_frames(a: np.ndarray, num_t: int, what: str) -> np.ndarray:
    """First axis to ``num_t`` frames: cut, or hold the last frame."""
    if len(a) == 0:
        raise JobError(f"motion init: {what} has no frames")
    if len(a) >= num_t:
        return a[:num_t]
    return np.concatenate([a, np.repeat(a[-1:], num_t - len(a), 0)])


def from_bundle(path: Path, inputs: MotionInputs, model) -> MotionInit:  # type: ignore[no-untyped-def]
    try:
        b = bundle.read_bundle(path)
    except bundle.BundleError as exc:
        raise JobError(f"motion init {path}: {exc}") from None
    src = b.frame_start + b.frame_step * np.arange(b.frame_count)
    pos = {int(f): i for i, f in enumerate(src)}
    missing = [int(f) for f in inputs.source_frames if int(f) not in pos]
    if missing:
        raise JobError(f"motion init {path}: the bundle lacks source frames {missing[:5]}... of this job")
    rows = np.array([pos[int(f)] for f in inputs.source_frames])
    state = _blank(inputs, model.num_betas)
    state.world_to_cam = b.camera.world_to_cam[rows].astype(np.float64)
    ids = [p.id for p in b.people]
    for i, pid in enumerate(inputs.ids):
        if pid not in ids:
            raise JobError(f"motion init {path}: no person '{pid}' (it has {ids}); ids must match the tracks")
        m = b.person(pid).motion
        nb = min(model.num_betas, len(m.betas))
        state.betas[i, :nb] = m.betas[:nb]
        state.global_rot[i] = Rotation.from_rotvec(m.poses[rows, :3]).as_matrix()
        state.body_pose[i] = m.poses[rows, 3:66]
        state.transl[i] = m.trans[rows]
    return MotionInit(source=f"bundle {path}", world=state, K=b.camera.K[rows].astype(np.float64))


def match_people(uv_init: np.ndarray, inputs: MotionInputs) -> np.ndarray:
    """Index of the init person for each track, by mean 2D distance of projected pelvis-ish
    points to the tracks' hip midpoints. uv_init: [N, T, 2]. Returns [P] (-1 = no match)."""
    kps = inputs.keypoints
    seen = (kps[:, :, 11, 2] > 0) & (kps[:, :, 12, 2] > 0)
    hips = kps[:, :, 11:13, :2].mean(2)
    cost = np.full((len(inputs.ids), len(uv_init)), 1e9)
    for p in range(len(inputs.ids)):
        for n in range(len(uv_init)):
            ok = seen[p] & np.isfinite(uv_init[n]).all(-1)
            if ok.any():
                cost[p, n] = np.linalg.norm(hips[p, ok] - uv_init[n, ok], axis=-1).mean()
    rows, cols = linear_sum_assignment(cost)
    out = np.full(len(inputs.ids), -1)
    for r, c in zip(rows, cols):
        if cost[r, c] < 1e8:
            out[r] = c
    return out


def from_simple(data: dict[str, np.ndarray], path: Path, inputs: MotionInputs, model) -> MotionInit:  # type: ignore[no-untyped-def]
    num_t = inputs.num_frames
    for key, shape in (("ids", 1), ("body_pose", 3)):
        if key not in data or data[key].ndim != shape:
            raise JobError(f"motion init {path}: '{key}' missing or not {shape}-D (see docs/motion.md)")
    ids = [str(i) for i in data["ids"]]
    n = len(ids)
    body_pose = data["body_pose"]
    if body_pose.shape[0] != n or body_pose.shape[2] != 63:
        raise JobError(f"motion init {path}: 'body_pose' has shape {body_pose.shape}, expected ({n}, T, 63)")
    has_root = "global_orient" in data and "transl" in data
    focal = float(data["focal_px"]) if "focal_px" in data else None
    state = _blank(inputs, model.num_betas)
    if all(pid in ids for pid in inputs.ids):
        order = np.array([ids.index(pid) for pid in inputs.ids])
    elif has_root and focal:
        tr = np.stack([_fit_frames(x, num_t, "transl") for x in data["transl"].astype(np.float64)])
        uv = focal * tr[..., :2] / np.maximum(tr[..., 2:3], 1e-3) + np.array(inputs.image_size) / 2
        order = match_people(uv, inputs)
    else:
        order = np.arange(len(inputs.ids))
        order[order >= n] = -1
    for i, j in enumerate(order):
        if j < 0:
            continue
        state.body_pose[i] = _fit_frames(body_pose[j], num_t, "body_pose")
        if "betas" in data:
            nb = min(model.num_betas, data["betas"].shape[1])
            state.betas[i, :nb] = data["betas"][j, :nb]
        if has_root:
            state.global_rot[i] = Rotation.from_rotvec(_fit_frames(data["global_orient"][j], num_t, "global_orient")).as_matrix()
            state.transl[i] = _fit_frames(data["transl"][j], num_t, "transl")
    return MotionInit(source=f"npz {path}", state=state, focal_px=focal, has_root=has_root)


def from_amass(files: list[Path], inputs: MotionInputs, model) -> MotionInit:  # type: ignore[no-untyped-def]
    state = _blank(inputs, model.num_betas)
    num_t = inputs.num_frames
    for i, f in enumerate(files[: len(inputs.ids)]):
        try:
            with np.load(f, allow_pickle=False) as z:
                poses = z["poses"].astype(np.float64)
                betas = z["betas"].astype(np.float64) if "betas" in z.files else np.zeros(0)
        except (KeyError, ValueError) as exc:
            raise JobError(f"motion init {f}: not an AMASS/SMPL-X npz with 'poses' ({exc})") from None
        if poses.ndim != 2 or poses.shape[1] < 66:
            raise JobError(f"motion init {f}: 'poses' has shape {poses.shape}, expected (T, 165) or (T, 156)")
        state.body_pose[i] = _fit_frames(poses[:, 3:66], num_t, f"{f.name} poses")
        nb = min(model.num_betas, betas.reshape(-1).shape[0])
        state.betas[i, :nb] = betas.reshape(-1)[:nb]
    return MotionInit(source=f"AMASS npz {', '.join(f.name for f in files)}", state=state, has_root=False)


def from_phalp(path: Path, inputs: MotionInputs, model, focal_px: float | None = None) -> MotionInit:  # type: ignore[no-untyped-def]
    """4D-Humans / PHALP tracker output (``allow_pickle`` checked by the caller)."""
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)  # explicit opt-in only (load_init checks allow_pickle)
    except Exception:
        try:
            import joblib  # PHALP writes with joblib (possibly compressed)

            data = joblib.load(path)
        except Exception as exc:
            raise JobError(f"motion init {path}: not a readable PHALP/4D-Humans pickle ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise JobError(f"motion init {path}: expected a dict of frames (PHALP output)")
    w, h = inputs.image_size
    tool_focal = focal_px or 5000.0 / 256.0 * max(w, h)
    frames = sorted(data.keys())[: inputs.num_frames]
    per_id: dict[int, dict[str, list]] = {}
    for t, key in enumerate(frames):
        fr = data[key]
        try:
            tids, smpls, cams = fr["tracked_ids"], fr["smpl"], fr["camera"]
        except (KeyError, TypeError):
            raise JobError(f"motion init {path}: frame {key!r} lacks tracked_ids / smpl / camera") from None
        for tid, sm, cam in zip(tids, smpls, cams):
            go = np.asarray(sm["global_orient"], np.float64).reshape(-1, 3, 3)[0]
            bp = np.asarray(sm["body_pose"], np.float64).reshape(-1, 3, 3)[:21]
            rec = per_id.setdefault(int(tid), {"t": [], "go": [], "bp": [], "tr": []})
            rec["t"].append(t)
            rec["go"].append(go)
            rec["bp"].append(Rotation.from_matrix(bp).as_rotvec().reshape(63))
            rec["tr"].append(np.asarray(cam, np.float64).reshape(3))
    num_t = inputs.num_frames
    tids = sorted(per_id)
    uv = np.full((len(tids), num_t, 2), np.nan)
    full: dict[int, dict[str, np.ndarray]] = {}
    for n, tid in enumerate(tids):
        rec = per_id[tid]
        ts = np.asarray(rec["t"])
        tr = np.asarray(rec["tr"])
        uv[n, ts] = tool_focal * tr[:, :2] / np.maximum(tr[:, 2:3], 1e-3) + np.array([w, h]) / 2
        full[n] = {"t": ts, "go": np.asarray(rec["go"]), "bp": np.asarray(rec["bp"]), "tr": tr}
    order = match_people(uv, inputs)
    state = _blank(inputs, model.num_betas)
    idx = np.arange(num_t)
    for i, j in enumerate(order):
        if j < 0:
            continue
        rec = full[j]
        near = rec["t"][np.abs(idx[:, None] - rec["t"][None]).argmin(1)]  # nearest frame the tool has
        pos = np.searchsorted(rec["t"], near)
        state.global_rot[i] = rec["go"][pos]
        state.body_pose[i] = rec["bp"][pos]
        state.transl[i] = rec["tr"][pos]  # the depth the tool found with its focal length
    return MotionInit(source=f"PHALP pickle {path}", state=state, focal_px=tool_focal)
