"""Troupe result bundle, version 1: write, read and validate.

This is the one module the Blender add-on and the reconstruction core share, so it uses
numpy and the standard library only (no torch, no bpy) and works with numpy 1.26 and 2.x.

Layout of a bundle directory (see docs/DESIGN.md of the project)::

    bundle.json                 schema version, fps, frames, image size, units, up axis,
                                body model, people, files
    camera.npz                  K (T,3,3), world_to_cam (T,4,4), image_size (2,) = (width, height)
    people/<id>/motion.npz      SMPL-X parameters per frame + AMASS-style aliases + visibility
    people/<id>/rig.npz         joints (55,3), parents (55,), vertices (V,3), faces (F,3),
                                weights (V,55), joint_names (55,)
    people/<id>/splats.ply      canonical 3D Gaussians (standard 3DGS layout) + skin weights
    people/<id>/mesh.ply        optional appearance mesh in the canonical pose, skinned

Conventions:
    - metres; world frame +Y up, ground plane y = 0, right-handed;
    - cameras are OpenCV (x right, y down, looking along +z), K in pixels, world_to_cam 4x4;
    - quaternions w, x, y, z; rotations in motion files are axis-angle;
    - 55 SMPL-X joints in ``JOINT_NAMES`` order, pose layout global(3) body(63) jaw(3)
      leye(3) reye(3) lhand(45) rhand(45) = 165, hand poses without PCA;
    - bundle frame i is source frame ``frame_start + i * frame_step``; time = frame / fps, where
      ``fps`` (bundle.json) is the source video's rate; motion rows come at fps / frame_step
      (``mocap_frame_rate`` in motion.npz, so AMASS readers play them at the right speed).

The rig and the motion agree exactly: the world position of joint j at frame t is
``forward_kinematics(rig.joints, rig.parents, motion.poses[t], motion.trans[t])``. Splats and
meshes are stored in the rig's rest pose and follow linear blend skinning (``skin_points``).

Nothing here ever unpickles: every npz is opened with ``allow_pickle=False``, and a file that
needs pickling is reported as a problem, so a bundle from someone else cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

SCHEMA_NAME = "troupe.bundle"
SCHEMA_VERSION = "1.0"
SUPPORTED_MAJOR = 1

NUM_JOINTS = 55
NUM_POSE = NUM_JOINTS * 3  # 165

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2",
    "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1",
    "right_ring2", "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)  # fmt: skip

# SMPL-X kinematic tree (parent of each joint, -1 for the root).
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip

# Slices of the 165-long pose vector, in order.
POSE_PARTS: tuple[tuple[str, int], ...] = (
    ("global_orient", 3),
    ("body_pose", 63),
    ("jaw_pose", 3),
    ("leye_pose", 3),
    ("reye_pose", 3),
    ("left_hand_pose", 45),
    ("right_hand_pose", 45),
)

GENDERS = ("neutral", "male", "female")
PERSON_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

SPLAT_SKIN_K = 4  # joints per Gaussian stored in splats.ply

_T = TypeVar("_T")


class BundleError(ValueError):
    """A bundle could not be read. ``problems`` lists every issue found, one line each."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("invalid Troupe bundle:\n  " + "\n  ".join(self.problems))


# --------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------


@dataclass
class BodyModelInfo:
    """Which body model the parameters belong to."""

    type: str = "smplx"
    gender: str = "neutral"  # default gender; each person's motion.npz names its own
    num_betas: int = 10
    num_expression: int = 10
    flat_hand_mean: bool = True  # hand pose zeros = flat hand (no mean added)
    use_pca: bool = False
    standin: bool = False  # True when made with Troupe's generated test stand-in, not SMPL-X

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "gender": self.gender,
            "num_betas": self.num_betas,
            "num_expression": self.num_expression,
            "flat_hand_mean": self.flat_hand_mean,
            "use_pca": self.use_pca,
            "standin": self.standin,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BodyModelInfo:
        return cls(
            type=str(d["type"]),
            gender=str(d["gender"]),
            num_betas=int(d["num_betas"]),
            num_expression=int(d["num_expression"]),
            flat_hand_mean=bool(d["flat_hand_mean"]),
            use_pca=bool(d.get("use_pca", False)),
            standin=bool(d.get("standin", False)),
        )


@dataclass
class Camera:
    """Per-frame pinhole camera, OpenCV convention.

    K: (T,3,3) intrinsics in pixels. world_to_cam: (T,4,4). image_size: (width, height).
    """

    K: np.ndarray
    world_to_cam: np.ndarray
    image_size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return int(self.K.shape[0])

    def project(self, points_world: np.ndarray, frame: int) -> np.ndarray:
        """(N,3) world points -> (N,2) pixel coordinates at ``frame`` (pixel centres at .5)."""
        pw = np.asarray(points_world, dtype=np.float64)
        m = self.world_to_cam[frame].astype(np.float64)
        pc = pw @ m[:3, :3].T + m[:3, 3]
        uvw = pc @ self.K[frame].astype(np.float64).T
        return uvw[:, :2] / uvw[:, 2:3]


@dataclass
class Motion:
    """SMPL-X parameters of one person over T frames (axis-angle rotations)."""

    betas: np.ndarray  # (B,)
    poses: np.ndarray  # (T,165) in POSE_PARTS order
    trans: np.ndarray  # (T,3)
    expression: np.ndarray  # (T,E)
    visibility: np.ndarray  # (T,) in [0,1]; 0 = not seen in that frame
    gender: str = "neutral"
    fps: float = 30.0  # rate of the rows (bundle fps / frame_step), written as mocap_frame_rate

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    def part(self, name: str) -> np.ndarray:
        """One named slice of ``poses`` (e.g. "body_pose" -> (T,63))."""
        start = 0
        for part, size in POSE_PARTS:
            if part == name:
                return self.poses[:, start : start + size]
            start += size
        raise KeyError(name)

    @property
    def rotvecs(self) -> np.ndarray:
        """(T,55,3) per-joint axis-angle rotations."""
        return self.poses.reshape(-1, NUM_JOINTS, 3)

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        d: dict[str, np.ndarray] = {
            "betas": np.asarray(self.betas, np.float32),
            "expression": np.asarray(self.expression, np.float32),
            "transl": np.asarray(self.trans, np.float32),
            "visibility": np.asarray(self.visibility, np.float32),
            # AMASS-style aliases, so other SMPL-X tools read the file as it is.
            "poses": np.asarray(self.poses, np.float32),
            "trans": np.asarray(self.trans, np.float32),
            "gender": np.array(self.gender),
            "mocap_frame_rate": np.array(float(self.fps)),
            "surface_model_type": np.array("smplx"),
        }
        for name, _ in POSE_PARTS:
            d[name] = np.asarray(self.part(name), np.float32)
        return d


@dataclass
class Rig:
    """What Blender needs of one person's body without the body model."""

    joints: np.ndarray  # (55,3) rest joint positions
    parents: np.ndarray  # (55,) parent index, -1 for the root
    vertices: np.ndarray  # (V,3) rest vertices (shaped, zero pose)
    faces: np.ndarray  # (F,3)
    weights: np.ndarray  # (V,55) skin weights, rows sum to 1
    joint_names: tuple[str, ...] = JOINT_NAMES

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        return {
            "joints": np.asarray(self.joints, np.float32),
            "parents": np.asarray(self.parents, np.int32),
            "vertices": np.asarray(self.vertices, np.float32),
            "faces": np.asarray(self.faces, np.int32),
            "weights": np.asarray(self.weights, np.float32),
            "joint_names": np.array(self.joint_names),
        }


@dataclass
class Splats:
    """Canonical 3D Gaussians of one person (rest pose of the rig), 3DGS parameterisation."""

    means: np.ndarray  # (N,3)
    sh: np.ndarray  # (N,K,3) spherical-harmonic coefficients, K = (degree+1)^2; sh[:,0] is DC
    opacity: np.ndarray  # (N,) logit
    log_scales: np.ndarray  # (N,3)
    quats: np.ndarray  # (N,4) w,x,y,z (not necessarily normalised)
    skin_joints: np.ndarray  # (N,k) int joint ids
    skin_weights: np.ndarray  # (N,k) weights, rows sum to 1

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1


@dataclass
class Mesh:
    """Optional appearance mesh in the canonical pose, skinned like the splats."""

    vertices: np.ndarray  # (V,3)
    faces: np.ndarray  # (F,3)
    skin_joints: np.ndarray  # (V,k)
    skin_weights: np.ndarray  # (V,k)
    colors: np.ndarray | None = None  # (V,3) uint8


@dataclass
class Person:
    id: str
    motion: Motion
    rig: Rig
    splats: Splats | None = None
    mesh: Mesh | None = None
    name: str = ""


@dataclass
class Bundle:
    fps: float
    image_size: tuple[int, int]  # (width, height)
    camera: Camera
    people: list[Person]
    body_model: BodyModelInfo = field(default_factory=BodyModelInfo)
    frame_start: int = 0  # source-video frame index of bundle frame 0
    frame_step: int = 1
    video: str | None = None  # source video path (relative to the bundle or absolute) or frames dir
    generator: str = "troupe"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata kept in bundle.json

    @property
    def frame_count(self) -> int:
        return self.camera.num_frames

    def person(self, pid: str) -> Person:
        for p in self.people:
            if p.id == pid:
                return p
        raise KeyError(pid)


# --------------------------------------------------------------------------------------
# Geometry shared by every consumer of the bundle
# --------------------------------------------------------------------------------------


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: (...,3) axis-angle -> (...,3,3) rotation matrices (float64)."""
    r = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    small = theta < 1e-12
    axis = r / np.where(small, 1.0, theta)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    kmat = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(r.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + s * kmat + (1.0 - c) * (kmat @ kmat)


def forward_kinematics(
    joints: np.ndarray, parents: np.ndarray, rotvecs: np.ndarray, trans: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World joint positions and skinning transforms.

    Args:
        joints: (J,3) rest joint positions.
        parents: (J,) parent index per joint, parents[j] < j, -1 for the root.
        rotvecs: (T,J,3) local axis-angle rotations (or (T,J*3)).
        trans: (T,3) root translation added after posing (SMPL-X ``transl``).

    Returns:
        world_joints (T,J,3) and skinning transforms (T,J,4,4) that map a rest-pose point
        bound to joint j to its posed world position (``skin_points``).
    """
    joints = np.asarray(joints, np.float64)
    parents = np.asarray(parents).astype(np.int64)
    num_j = joints.shape[0]
    rotvecs = np.asarray(rotvecs, np.float64).reshape(-1, num_j, 3)
    trans = np.asarray(trans, np.float64).reshape(-1, 3)
    num_t = rotvecs.shape[0]
    rot = axis_angle_to_matrix(rotvecs)  # (T,J,3,3)
    rel = joints.copy()
    rel[1:] -= joints[parents[1:]]
    world_r = np.empty((num_t, num_j, 3, 3))
    world_t = np.empty((num_t, num_j, 3))
    world_r[:, 0] = rot[:, 0]
    world_t[:, 0] = joints[0] + trans
    for j in range(1, num_j):
        p = parents[j]
        world_r[:, j] = world_r[:, p] @ rot[:, j]
        world_t[:, j] = np.einsum("tab,b->ta", world_r[:, p], rel[j]) + world_t[:, p]
    skin = np.zeros((num_t, num_j, 4, 4))
    skin[..., :3, :3] = world_r
    skin[..., :3, 3] = world_t - np.einsum("tjab,jb->tja", world_r, joints)
    skin[..., 3, 3] = 1.0
    return world_t, skin


def skin_points(
    points: np.ndarray, joint_ids: np.ndarray, weights: np.ndarray, transforms: np.ndarray
) -> np.ndarray:
    """Linear blend skinning of rest-pose points.

    Args:
        points: (N,3) rest-pose positions.
        joint_ids: (N,k) joint index per influence (ignored where the weight is 0), or None
            with ``weights`` (N,J) dense.
        weights: (N,k) or (N,J) weights.
        transforms: (J,4,4) or (T,J,4,4) from ``forward_kinematics``.

    Returns:
        (N,3) or (T,N,3) posed positions.
    """
    pts = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    tr = np.asarray(transforms, np.float64)
    single = tr.ndim == 3
    if single:
        tr = tr[None]
    if joint_ids is None:
        blended = np.einsum("nj,tjab->tnab", w, tr[:, :, :3, :])
    else:
        ids = np.asarray(joint_ids).astype(np.int64)
        blended = np.einsum("nk,tnkab->tnab", w, tr[:, ids, :3, :])
    out = np.einsum("tnab,nb->tna", blended[..., :3], pts) + blended[..., 3]
    return out[0] if single else out


def dense_to_topk(weights: np.ndarray, k: int = SPLAT_SKIN_K) -> tuple[np.ndarray, np.ndarray]:
    """(N,J) dense skin weights -> (N,k) joint ids and renormalised weights."""
    w = np.asarray(weights, np.float64)
    k = min(k, w.shape[1])
    ids = np.argsort(-w, axis=1)[:, :k]
    top = np.take_along_axis(w, ids, axis=1)
    top = top / np.maximum(top.sum(axis=1, keepdims=True), 1e-12)
    return ids.astype(np.int32), top.astype(np.float32)


def world_joints(person: Person) -> np.ndarray:
    """(T,55,3) world joint positions of a person (FK of rig + motion)."""
    return forward_kinematics(person.rig.joints, person.rig.parents, person.motion.rotvecs, person.motion.trans)[0]


# --------------------------------------------------------------------------------------
# PLY (binary little endian) without dependencies
# --------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
_NP_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
              "f4": "float", "f8": "double"}  # fmt: skip


@dataclass
class PlyElement:
    name: str
    data: np.ndarray | None  # structured array of scalar properties
    list_property: str | None = None  # e.g. "vertex_indices" for faces (triangles only)
    lists: np.ndarray | None = None  # (count, n) for the list property


def write_ply(path: Path | str, elements: list[PlyElement], comments: tuple[str, ...] = ()) -> None:
    """Write a binary little-endian PLY. Face lists must all have the same length."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    chunks: list[bytes] = []
    for el in elements:
        if el.list_property is not None:
            assert el.lists is not None
            lists = np.asarray(el.lists)
            count, n = lists.shape
            lines.append(f"element {el.name} {count}")
            lines.append(f"property list uchar int {el.list_property}")
            rec = np.empty(count, dtype=[("n", "u1"), ("idx", "<i4", (n,))])
            rec["n"] = n
            rec["idx"] = lists
            chunks.append(rec.tobytes())
        else:
            assert el.data is not None
            data = el.data
            lines.append(f"element {el.name} {len(data)}")
            names = data.dtype.names or ()
            for nm in names:
                kind = data.dtype[nm].str.lstrip("<>|=")
                lines.append(f"property {_NP_TO_PLY[kind]} {nm}")
            le = data.astype([(nm, data.dtype[nm].newbyteorder("<")) for nm in names])
            chunks.append(le.tobytes())
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    _atomic_write_bytes(Path(path), header + b"".join(chunks))


def read_ply(path: Path | str) -> dict[str, PlyElement]:
    """Read a binary little-endian PLY written by ``write_ply`` or a 3DGS trainer.

    Raises BundleError with a readable message on anything unexpected.
    """
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise BundleError(f"{path.name}: not a PLY file (no 'ply' magic or no end_header)")
    nl = raw.find(b"\n", end)
    header = raw[:end].decode("ascii", errors="replace").splitlines()
    body = memoryview(raw)[nl + 1 :]
    fmt = next((ln.split()[1] for ln in header if ln.startswith("format")), None)
    if fmt != "binary_little_endian":
        raise BundleError(f"{path.name}: PLY format '{fmt}' is not supported (expected binary_little_endian)")
    specs: list[tuple[str, int, list[tuple[str, str]], tuple[str, str, str] | None]] = []
    for ln in header:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "element":
            specs.append((parts[1], int(parts[2]), [], None))
        elif parts[0] == "property" and specs:
            name, count, props, lst = specs[-1]
            if parts[1] == "list":
                specs[-1] = (name, count, props, (parts[2], parts[3], parts[4]))
            else:
                if parts[1] not in _PLY_TYPES:
                    raise BundleError(f"{path.name}: unknown PLY property type '{parts[1]}'")
                props.append((parts[2], _PLY_TYPES[parts[1]]))
    out: dict[str, PlyElement] = {}
    offset = 0
    for name, count, props, lst in specs:
        if lst is None:
            dt = np.dtype(props)
            size = dt.itemsize * count
            if offset + size > len(body):
                raise BundleError(f"{path.name}: file ends inside element '{name}' (truncated)")
            arr = np.frombuffer(body, dtype=dt, count=count, offset=offset).copy()
            out[name] = PlyElement(name, arr)
            offset += size
        else:
            cnt_t, idx_t, prop_name = lst
            if props:
                raise BundleError(f"{path.name}: element '{name}' mixes list and scalar properties")
            if count == 0:
                out[name] = PlyElement(name, None, prop_name, np.zeros((0, 3), np.int64))
                continue
            cdt = np.dtype(_PLY_TYPES[cnt_t])
            if offset + cdt.itemsize > len(body):
                raise BundleError(f"{path.name}: file ends inside element '{name}' (truncated)")
            n = int(np.frombuffer(body, dtype=cdt, count=1, offset=offset)[0])
            rec = np.dtype([("n", cdt), ("idx", _PLY_TYPES[idx_t], (n,))])
            size = rec.itemsize * count
            if offset + size > len(body):
                raise BundleError(f"{path.name}: file ends inside element '{name}' (truncated)")
            arr = np.frombuffer(body, dtype=rec, count=count, offset=offset)
            if np.any(arr["n"] != n):
                raise BundleError(f"{path.name}: element '{name}' has lists of different lengths (triangles expected)")
            out[name] = PlyElement(name, None, prop_name, arr["idx"].astype(np.int64).reshape(count, n))
            offset += size
    return out


def _columns(rec: np.ndarray, names: list[str], dtype: Any = np.float32) -> np.ndarray:
    """(N, len(names)) array of the named fields of a structured array, without a Python loop."""
    from numpy.lib import recfunctions

    return recfunctions.structured_to_unstructured(rec[names], dtype=dtype)


def _splat_fields(sh_rest: int, k: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(sh_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_splats_ply(path: Path | str, splats: Splats) -> None:
    """Standard 3DGS PLY (f_rest_* channel-major as the reference trainer writes it) plus
    ``skin_joint_i`` (ushort) and ``skin_weight_i`` (float) for i < k."""
    n = splats.count
    sh = np.asarray(splats.sh, np.float32).reshape(n, -1, 3)
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # (N, 3*(K-1)), channel-major
    k = splats.skin_joints.shape[1]
    fields = _splat_fields(rest.shape[1], k)
    dt = [(f, "<f4") for f in fields]
    dt += [(f"skin_joint_{i}", "<u2") for i in range(k)]
    dt += [(f"skin_weight_{i}", "<f4") for i in range(k)]
    rec = np.zeros(n, dtype=dt)
    rec["x"], rec["y"], rec["z"] = np.asarray(splats.means, np.float32).T
    for c in range(3):
        rec[f"f_dc_{c}"] = sh[:, 0, c]
    for i in range(rest.shape[1]):
        rec[f"f_rest_{i}"] = rest[:, i]
    rec["opacity"] = np.asarray(splats.opacity, np.float32).reshape(n)
    for i in range(3):
        rec[f"scale_{i}"] = np.asarray(splats.log_scales, np.float32)[:, i]
    for i in range(4):
        rec[f"rot_{i}"] = np.asarray(splats.quats, np.float32)[:, i]
    for i in range(k):
        rec[f"skin_joint_{i}"] = np.asarray(splats.skin_joints)[:, i]
        rec[f"skin_weight_{i}"] = np.asarray(splats.skin_weights, np.float32)[:, i]
    write_ply(path, [PlyElement("vertex", rec)], comments=("troupe splats v1",))


def splats_from_ply(path: Path | str, *, require_skin: bool = True) -> Splats:
    """Read a 3DGS PLY (ours or another tool's). Without skin properties, ``require_skin=False``
    gives every Gaussian joint 0 with weight 1 (a static scene)."""
    path = Path(path)
    els = read_ply(path)
    if "vertex" not in els or els["vertex"].data is None:
        raise BundleError(f"{path.name}: no 'vertex' element")
    v = els["vertex"].data
    names = set(v.dtype.names or ())
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    missing = [f for f in need if f not in names]
    if missing:
        raise BundleError(f"{path.name}: missing 3DGS properties {missing}")
    n = len(v)
    rest_names = sorted((f for f in names if f.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
    n_rest = len(rest_names) // 3
    if len(rest_names) % 3 or int(round(math.sqrt(n_rest + 1))) ** 2 != n_rest + 1:
        raise BundleError(f"{path.name}: {len(rest_names)} f_rest properties is not 3*((d+1)^2-1) for any SH degree d")
    sh = np.zeros((n, n_rest + 1, 3), np.float32)
    sh[:, 0, :] = _columns(v, ["f_dc_0", "f_dc_1", "f_dc_2"])
    if n_rest:
        sh[:, 1:, :] = _columns(v, rest_names).reshape(n, 3, n_rest).transpose(0, 2, 1)
    skin_j = sorted((f for f in names if f.startswith("skin_joint_")), key=lambda s: int(s.split("_")[-1]))
    skin_w = sorted((f for f in names if f.startswith("skin_weight_")), key=lambda s: int(s.split("_")[-1]))
    if skin_j and len(skin_j) == len(skin_w):
        joints = _columns(v, skin_j, np.int32)
        weights = _columns(v, skin_w)
    elif require_skin:
        raise BundleError(f"{path.name}: no skin weights (skin_joint_i / skin_weight_i properties)")
    else:
        joints = np.zeros((n, 1), np.int32)
        weights = np.ones((n, 1), np.float32)
    return Splats(
        means=_columns(v, ["x", "y", "z"]),
        sh=sh,
        opacity=np.asarray(v["opacity"], np.float32),
        log_scales=_columns(v, ["scale_0", "scale_1", "scale_2"]),
        quats=_columns(v, ["rot_0", "rot_1", "rot_2", "rot_3"]),
        skin_joints=joints,
        skin_weights=weights,
    )


def write_mesh_ply(path: Path | str, mesh: Mesh) -> None:
    n = len(mesh.vertices)
    k = mesh.skin_joints.shape[1]
    dt: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.colors is not None:
        dt += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    dt += [(f"skin_joint_{i}", "<u2") for i in range(k)]
    dt += [(f"skin_weight_{i}", "<f4") for i in range(k)]
    rec = np.zeros(n, dtype=dt)
    rec["x"], rec["y"], rec["z"] = np.asarray(mesh.vertices, np.float32).T
    if mesh.colors is not None:
        rec["red"], rec["green"], rec["blue"] = np.asarray(mesh.colors, np.uint8).T
    for i in range(k):
        rec[f"skin_joint_{i}"] = mesh.skin_joints[:, i]
        rec[f"skin_weight_{i}"] = mesh.skin_weights[:, i]
    write_ply(
        path,
        [PlyElement("vertex", rec), PlyElement("face", None, "vertex_indices", np.asarray(mesh.faces))],
        comments=("troupe mesh v1",),
    )


def mesh_from_ply(path: Path | str) -> Mesh:
    path = Path(path)
    els = read_ply(path)
    v = els.get("vertex")
    f = els.get("face")
    if v is None or v.data is None or f is None or f.lists is None:
        raise BundleError(f"{path.name}: a mesh PLY needs 'vertex' and 'face' elements")
    names = set(v.data.dtype.names or ())
    skin_j = sorted((n for n in names if n.startswith("skin_joint_")), key=lambda s: int(s.split("_")[-1]))
    skin_w = sorted((n for n in names if n.startswith("skin_weight_")), key=lambda s: int(s.split("_")[-1]))
    if not skin_j or len(skin_j) != len(skin_w):
        raise BundleError(f"{path.name}: no skin weights (skin_joint_i / skin_weight_i properties)")
    colors = None
    if {"red", "green", "blue"} <= names:
        colors = np.stack([v.data[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return Mesh(
        vertices=np.stack([v.data[c] for c in "xyz"], axis=1).astype(np.float32),
        faces=f.lists.astype(np.int32),
        skin_joints=np.stack([v.data[n] for n in skin_j], axis=1).astype(np.int32),
        skin_weights=np.stack([v.data[n] for n in skin_w], axis=1).astype(np.float32),
        colors=colors,
    )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def person_files(pid: str, *, splats: bool, mesh: bool) -> dict[str, str]:
    files = {"motion": f"people/{pid}/motion.npz", "rig": f"people/{pid}/rig.npz"}
    if splats:
        files["splats"] = f"people/{pid}/splats.ply"
    if mesh:
        files["mesh"] = f"people/{pid}/mesh.ply"
    return files


def bundle_json(bundle: Bundle) -> dict[str, Any]:
    w, h = bundle.image_size
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "generator": bundle.generator,
        "fps": float(bundle.fps),
        "frame_count": bundle.frame_count,
        "frame_start": int(bundle.frame_start),
        "frame_step": int(bundle.frame_step),
        "image_size": [int(w), int(h)],
        "units": "meters",
        "up_axis": "+Y",
        "camera_convention": "opencv",
        "body_model": bundle.body_model.to_json(),
        "people": [
            {
                "id": p.id,
                "name": p.name or p.id,
                "gender": p.motion.gender,
                "files": person_files(p.id, splats=p.splats is not None, mesh=p.mesh is not None),
            }
            for p in bundle.people
        ],
        "files": {"camera": "camera.npz"},
        "video": bundle.video,
        "extra": bundle.extra,
    }


def write_person(root: Path | str, person: Person, *, fps: float | None = None) -> None:
    """Write one person's files (used by stages that add people one at a time)."""
    root = Path(root)
    if not PERSON_ID_RE.match(person.id):
        raise ValueError(f"person id {person.id!r} must match {PERSON_ID_RE.pattern}")
    pdir = root / "people" / person.id
    if fps is not None:
        person.motion.fps = fps
    _atomic_savez(pdir / "motion.npz", person.motion.to_npz_dict())
    _atomic_savez(pdir / "rig.npz", person.rig.to_npz_dict())
    if person.splats is not None:
        write_splats_ply(pdir / "splats.ply", person.splats)
    if person.mesh is not None:
        write_mesh_ply(pdir / "mesh.ply", person.mesh)


def write_bundle(root: Path | str, bundle: Bundle, *, check: bool = True) -> Path:
    """Write ``bundle`` into directory ``root`` (created; files replaced atomically).

    ``bundle.json`` is written last, so a reader never sees a half-written bundle as complete.
    With ``check`` the written directory is validated and a BundleError raised on problems.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cam = bundle.camera
    _atomic_savez(
        root / "camera.npz",
        {
            "K": np.asarray(cam.K, np.float64),
            "world_to_cam": np.asarray(cam.world_to_cam, np.float64),
            "image_size": np.asarray(cam.image_size, np.int32),
        },
    )
    for person in bundle.people:
        # motion.npz rows are every frame_step-th source frame: their rate, for AMASS readers.
        write_person(root, person, fps=bundle.fps / bundle.frame_step)
    _atomic_write_bytes(root / "bundle.json", (json.dumps(bundle_json(bundle), indent=2) + "\n").encode())
    if check:
        problems = validate(root)
        if problems:
            raise BundleError(problems)
    return root


# --------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def array(
        self,
        where: str,
        data: dict[str, np.ndarray],
        key: str,
        shape: tuple[int | None, ...],
        *,
        kind: str = "f",
        finite: bool = True,
    ) -> np.ndarray | None:
        """Check one array: present, shape (None = any), dtype kind ('f' float, 'i' integer,
        'U' string), finite. Returns it or None."""
        if key not in data:
            self.add(where, f"missing array '{key}' (expected shape {_fmt_shape(shape)})")
            return None
        a = data[key]
        ok_kind = {"f": "fiu", "i": "iu", "U": "U"}[kind]
        if a.dtype.kind not in ok_kind:
            self.add(where, f"'{key}' has dtype {a.dtype}, expected {'float' if kind == 'f' else 'integer' if kind == 'i' else 'string'}")
            return None
        if len(a.shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            self.add(where, f"'{key}' has shape {tuple(a.shape)}, expected {_fmt_shape(shape)}")
            return None
        if finite and kind == "f" and a.size and not np.all(np.isfinite(a)):
            bad = np.argwhere(~np.isfinite(a))[0]
            self.add(where, f"'{key}' contains NaN or infinite values (first at index {tuple(int(i) for i in bad)})")
            return None
        return a


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an npz without pickling. Raises BundleError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise BundleError(
                            f"{path.name}: array '{key}' is a pickled Python object; "
                            "Troupe never unpickles bundle files (they could run code)"
                        ) from None
                    raise
            return out
    except BundleError:
        raise
    except FileNotFoundError:
        raise BundleError(f"{path.name}: file is missing") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError on a corrupt archive
        raise BundleError(f"{path.name}: cannot be read as an .npz archive ({type(exc).__name__}: {exc})") from None


def _check_meta(meta: Any, ck: _Checker) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        ck.add("bundle.json", "top level must be a JSON object")
        return None
    version = meta.get("schema_version")
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+$", version):
        ck.add("bundle.json", f"'schema_version' must be a string like \"1.0\", found {version!r}")
        return None
    major = int(version.split(".")[0])
    if major != SUPPORTED_MAJOR:
        ck.add(
            "bundle.json",
            f"schema_version {version} is not supported: this Troupe reads version {SUPPORTED_MAJOR}.x bundles"
            + (" (the bundle is newer: update Troupe)" if major > SUPPORTED_MAJOR else ""),
        )
        return None
    required: dict[str, type | tuple[type, ...]] = {
        "fps": (int, float), "frame_count": int, "frame_start": int, "frame_step": int,
        "image_size": list, "units": str, "up_axis": str, "body_model": dict, "people": list,
    }  # fmt: skip
    ok = True
    for key, typ in required.items():
        if key not in meta:
            ck.add("bundle.json", f"missing field '{key}'")
            ok = False
        elif not isinstance(meta[key], typ) or isinstance(meta[key], bool):
            ck.add("bundle.json", f"field '{key}' has type {type(meta[key]).__name__}, expected {getattr(typ, '__name__', 'number')}")
            ok = False
    if not ok:
        return None
    if not (meta["fps"] > 0 and math.isfinite(meta["fps"])):
        ck.add("bundle.json", f"'fps' must be a positive number, found {meta['fps']}")
    if meta["frame_count"] < 1:
        ck.add("bundle.json", f"'frame_count' must be at least 1, found {meta['frame_count']}")
    if meta["frame_step"] < 1:
        ck.add("bundle.json", f"'frame_step' must be at least 1, found {meta['frame_step']}")
    size = meta["image_size"]
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        ck.add("bundle.json", f"'image_size' must be [width, height] in pixels, found {size}")
    if meta["units"] != "meters":
        ck.add("bundle.json", f"'units' must be \"meters\", found {meta['units']!r}")
    if meta["up_axis"] != "+Y":
        ck.add("bundle.json", f"'up_axis' must be \"+Y\", found {meta['up_axis']!r}")
    bm = meta["body_model"]
    for key in ("type", "gender", "num_betas", "num_expression", "flat_hand_mean"):
        if key not in bm:
            ck.add("bundle.json", f"body_model is missing '{key}'")
    if bm.get("type") not in (None, "smplx"):
        ck.add("bundle.json", f"body_model.type {bm.get('type')!r} is not supported (expected \"smplx\")")
    if bm.get("use_pca"):
        ck.add("bundle.json", "body_model.use_pca must be false (hand poses are stored as full axis-angle)")
    seen: set[str] = set()
    for i, p in enumerate(meta["people"]):
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            ck.add("bundle.json", f"people[{i}] must be an object with a string 'id'")
            continue
        if not PERSON_ID_RE.match(p["id"]):
            ck.add("bundle.json", f"people[{i}].id {p['id']!r} must match {PERSON_ID_RE.pattern}")
        if p["id"] in seen:
            ck.add("bundle.json", f"person id {p['id']!r} appears twice")
        seen.add(p["id"])
    return meta


def _check_camera(root: Path, meta: dict[str, Any], ck: _Checker) -> Camera | None:
    path = root / "camera.npz"
    try:
        d = load_npz(path)
    except BundleError as exc:
        ck.problems.extend(exc.problems)
        return None
    t = meta["frame_count"]
    where = "camera.npz"
    K = ck.array(where, d, "K", (t, 3, 3))
    w2c = ck.array(where, d, "world_to_cam", (t, 4, 4))
    size = ck.array(where, d, "image_size", (2,), kind="i")
    if K is None or w2c is None or size is None:
        return None
    if not np.allclose(w2c[:, 3], [0, 0, 0, 1], atol=1e-6):
        ck.add(where, "'world_to_cam' last rows must be [0, 0, 0, 1]")
    r = w2c[:, :3, :3].astype(np.float64)
    err = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max()
    if err > 1e-4 or np.any(np.linalg.det(r) < 0):
        ck.add(where, f"'world_to_cam' rotations are not proper rotations (orthonormality error {err:.2g})")
    if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
        ck.add(where, "'K' focal lengths must be positive")
    if list(size) != list(meta["image_size"]):
        ck.add(where, f"'image_size' {list(size)} differs from bundle.json image_size {meta['image_size']}")
    return Camera(K=K.astype(np.float64), world_to_cam=w2c.astype(np.float64), image_size=(int(size[0]), int(size[1])))


def _load_person_file(root: Path, pid: str, name: str, loader: Callable[[Path], _T], ck: _Checker) -> _T | None:
    """``loader(people/<pid>/<name>)``, or None with the problem recorded (missing or unreadable)."""
    try:
        return loader(root / "people" / pid / name)
    except BundleError as exc:
        ck.problems.extend(f"people/{pid}/{p}" for p in exc.problems)
    except FileNotFoundError:
        ck.add(f"people/{pid}/{name}", "file is missing")
    return None


def _check_motion(root: Path, pid: str, meta: dict[str, Any], ck: _Checker) -> Motion | None:
    where = f"people/{pid}/motion.npz"
    d = _load_person_file(root, pid, "motion.npz", load_npz, ck)
    if d is None:
        return None
    t = meta["frame_count"]
    bm = meta["body_model"]
    nb = bm.get("num_betas")
    ne = bm.get("num_expression")
    betas = ck.array(where, d, "betas", (nb,))
    poses = ck.array(where, d, "poses", (t, NUM_POSE))
    trans = ck.array(where, d, "trans", (t, 3))
    transl = ck.array(where, d, "transl", (t, 3))
    expr = ck.array(where, d, "expression", (t, ne))
    vis = ck.array(where, d, "visibility", (t,))
    parts = [ck.array(where, d, name, (t, size)) for name, size in POSE_PARTS]
    gender = ck.array(where, d, "gender", (), kind="U", finite=False)
    fps = ck.array(where, d, "mocap_frame_rate", ())
    if poses is not None and all(p is not None for p in parts):
        joined = np.concatenate([p for p in parts if p is not None], axis=1)
        if not np.allclose(joined, poses, atol=1e-6):
            ck.add(where, "'poses' disagrees with global_orient/body_pose/.../right_hand_pose (same rotations expected)")
    if trans is not None and transl is not None and not np.allclose(trans, transl, atol=1e-6):
        ck.add(where, "'trans' and 'transl' differ (they are aliases)")
    if vis is not None and (np.any(vis < 0) or np.any(vis > 1)):
        ck.add(where, "'visibility' must lie in [0, 1]")
    if gender is not None and str(gender) not in GENDERS:
        ck.add(where, f"'gender' is {str(gender)!r}, expected one of {GENDERS}")
    rows_fps = float(meta["fps"]) / meta["frame_step"]
    if fps is not None and abs(float(fps) - rows_fps) > 1e-3:
        ck.add(where, f"'mocap_frame_rate' {float(fps)} is not bundle.json fps / frame_step = {rows_fps:g}")
    if any(x is None for x in (betas, poses, trans, expr, vis, gender)):
        return None
    assert betas is not None and poses is not None and trans is not None and expr is not None and vis is not None
    return Motion(
        betas=betas.astype(np.float32),
        poses=poses.astype(np.float32),
        trans=trans.astype(np.float32),
        expression=expr.astype(np.float32),
        visibility=vis.astype(np.float32),
        gender=str(gender),
        fps=rows_fps,
    )


def _check_rig(root: Path, pid: str, ck: _Checker) -> Rig | None:
    where = f"people/{pid}/rig.npz"
    d = _load_person_file(root, pid, "rig.npz", load_npz, ck)
    if d is None:
        return None
    joints = ck.array(where, d, "joints", (NUM_JOINTS, 3))
    parents = ck.array(where, d, "parents", (NUM_JOINTS,), kind="i")
    verts = ck.array(where, d, "vertices", (None, 3))
    faces = ck.array(where, d, "faces", (None, 3), kind="i")
    weights = None
    if verts is not None:
        weights = ck.array(where, d, "weights", (verts.shape[0], NUM_JOINTS))
    if parents is not None:
        if parents[0] != -1 or any(not (0 <= parents[j] < j) for j in range(1, NUM_JOINTS)):
            ck.add(where, "'parents' must have -1 for the root and parents[j] < j for every other joint")
    if faces is not None and verts is not None and faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        ck.add(where, f"'faces' index vertices outside 0..{len(verts) - 1}")
    if weights is not None:
        if np.any(weights < -1e-6):
            ck.add(where, "'weights' has negative values")
        s = weights.sum(axis=1)
        if np.abs(s - 1).max() > 1e-3:
            ck.add(where, f"'weights' rows must sum to 1 (worst row sums to {s[np.argmax(np.abs(s - 1))]:.4f})")
    names: tuple[str, ...] = JOINT_NAMES
    if "joint_names" in d:
        jn = ck.array(where, d, "joint_names", (NUM_JOINTS,), kind="U", finite=False)
        if jn is not None:
            names = tuple(str(x) for x in jn)
    if any(x is None for x in (joints, parents, verts, faces, weights)):
        return None
    assert joints is not None and parents is not None and verts is not None and faces is not None and weights is not None
    return Rig(
        joints=joints.astype(np.float32),
        parents=parents.astype(np.int32),
        vertices=verts.astype(np.float32),
        faces=faces.astype(np.int32),
        weights=weights.astype(np.float32),
        joint_names=names,
    )


def _check_skin(where: str, joints: np.ndarray, weights: np.ndarray, ck: _Checker) -> None:
    if joints.size and (joints.min() < 0 or joints.max() >= NUM_JOINTS):
        ck.add(where, f"skin joint ids must lie in 0..{NUM_JOINTS - 1}")
    if not np.all(np.isfinite(weights)) or np.any(weights < -1e-6):
        ck.add(where, "skin weights must be finite and non-negative")
    elif weights.size and np.abs(weights.sum(axis=1) - 1).max() > 1e-3:
        ck.add(where, "skin weights of each point must sum to 1")


def _check_splats(root: Path, pid: str, ck: _Checker) -> Splats | None:
    where = f"people/{pid}/splats.ply"
    s = _load_person_file(root, pid, "splats.ply", splats_from_ply, ck)
    if s is None:
        return None
    if s.count == 0:
        ck.add(where, "has no Gaussians")
    for name, arr in (("position", s.means), ("SH colour", s.sh), ("opacity", s.opacity),
                      ("scale", s.log_scales), ("rotation", s.quats)):  # fmt: skip
        if not np.all(np.isfinite(arr)):
            ck.add(where, f"{name} values contain NaN or infinite values")
    if s.count and np.any(np.linalg.norm(s.quats, axis=1) < 1e-8):
        ck.add(where, "some rotations are zero quaternions")
    _check_skin(where, s.skin_joints, s.skin_weights, ck)
    return s


def _check_mesh(root: Path, pid: str, ck: _Checker) -> Mesh | None:
    where = f"people/{pid}/mesh.ply"
    m = _load_person_file(root, pid, "mesh.ply", mesh_from_ply, ck)
    if m is None:
        return None
    if not np.all(np.isfinite(m.vertices)):
        ck.add(where, "vertex positions contain NaN or infinite values")
    if m.faces.size and (m.faces.min() < 0 or m.faces.max() >= len(m.vertices)):
        ck.add(where, "faces index missing vertices")
    _check_skin(where, m.skin_joints, m.skin_weights, ck)
    return m


def _read(root: Path) -> tuple[Bundle | None, list[str]]:
    ck = _Checker()
    root = Path(root)
    if not root.is_dir():
        return None, [f"{root}: not a directory"]
    meta_path = root / "bundle.json"
    if not meta_path.is_file():
        return None, ["bundle.json: file is missing (is this a Troupe bundle directory?)"]
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"bundle.json: not valid JSON ({exc})"]
    meta = _check_meta(raw, ck)
    if meta is None:
        return None, ck.problems
    camera = _check_camera(root, meta, ck)
    people: list[Person] = []
    for entry in meta["people"]:
        pid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(pid, str) or not PERSON_ID_RE.match(pid):
            continue
        files = entry.get("files", {}) if isinstance(entry.get("files"), dict) else {}
        motion = _check_motion(root, pid, meta, ck)
        rig = _check_rig(root, pid, ck)
        splats = _check_splats(root, pid, ck) if "splats" in files else None
        mesh = _check_mesh(root, pid, ck) if "mesh" in files else None
        if motion is not None and rig is not None:
            people.append(Person(id=pid, motion=motion, rig=rig, splats=splats, mesh=mesh,
                                 name=str(entry.get("name", pid))))  # fmt: skip
    people_dir = root / "people"
    if people_dir.is_dir():
        listed = {e.get("id") for e in meta["people"] if isinstance(e, dict)}
        for extra in sorted(p.name for p in people_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if extra not in listed:
                ck.add(f"people/{extra}", "folder is not listed in bundle.json people")
    if ck.problems or camera is None:
        return None, ck.problems
    bm = BodyModelInfo.from_json(meta["body_model"])
    bundle = Bundle(
        fps=float(meta["fps"]),
        image_size=(int(meta["image_size"][0]), int(meta["image_size"][1])),
        camera=camera,
        people=people,
        body_model=bm,
        frame_start=int(meta["frame_start"]),
        frame_step=int(meta["frame_step"]),
        video=meta.get("video"),
        generator=str(meta.get("generator", "")),
        extra=dict(meta.get("extra") or {}),
    )
    return bundle, []


def validate(root: Path | str) -> list[str]:
    """Every problem of the bundle at ``root``, one readable line each ("file: what"). Empty = valid."""
    return _read(Path(root))[1]


def read_bundle(root: Path | str) -> Bundle:
    """Read and validate a bundle; raises BundleError listing every problem."""
    bundle, problems = _read(Path(root))
    if bundle is None:
        raise BundleError(problems)
    return bundle


def video_path(root: Path | str, bundle: Bundle) -> Path | None:
    """The bundle's source video (or frames folder), resolved against the bundle directory."""
    if not bundle.video:
        return None
    p = Path(bundle.video)
    return p if p.is_absolute() else (Path(root) / p).resolve()


def copy_bundle(src: Path | str, dst: Path | str) -> Path:
    """Copy a bundle directory (for tests and for keeping a result next to a .blend)."""
    return Path(shutil.copytree(src, dst, dirs_exist_ok=True))
