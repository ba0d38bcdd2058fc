"""A pose prior from real motion capture: the DeepMimic clips that PyPI's pybullet wheel carries.

    python -m pip download --no-deps pybullet==3.2.7 -d DIR && unzip DIR/pybullet-*.whl 'pybullet_data/*' -d DIR
    .venv/core/bin/python benchmarks/pose_prior_deepmimic.py DIR/pybullet_data OUT.npz [--clips walk run ...]
    .venv/core/bin/python benchmarks/motion_synth.py ... --set pose_prior=OUT.npz

No motion capture ships with Troupe, and no large collection is reachable from this machine.
pybullet's wheel holds 15 clips of DeepMimic's humanoid (``data/motions/humanoid3d_*.txt``: walk,
run, jumps, kicks, dances, flips, crawling, getting up; 1,620 frames in all), retargeted by
DeepMimic's authors from motion-capture databases. This turns them into SMPL-X body poses and
builds a prior (``core.motion.pose_prior``), to measure what real capture is worth against
``pose_prior_oracle.py``'s upper bound. The clips are read from where the wheel was unpacked;
neither they nor the prior are part of Troupe (their terms are the databases', for whoever uses
them to check).

The retargeting, one frame of 44 numbers: duration, root position and rotation, then local
rotations (quaternions w, x, y, z) of chest, neck, right hip, right knee (an angle), right ankle,
right shoulder, right elbow (an angle), and the same for the left side. The humanoid stands with
y up, facing +x, its right side +z, arms hanging down; SMPL-X faces +z with its left side +x, arms
out to the sides. A rotation moves into SMPL-X's axes by ``AXES`` (conjugation); a shoulder also
turns the SMPL-X arm from out to down first (``ARM_DOWN``) and its elbow's hinge turns with it;
knees and elbows are hinges about the humanoid's z (sideways) axis; the chest's rotation is
shared equally by SMPL-X's three spine joints; collars, wrists, toes and head stay at rest. The
result lies within Troupe's joint limits (``core.motion.priors``) on every frame of walk and run,
where the other signs of knee or elbow put them outside on nine frames in ten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.motion.pose_prior import build_pose_prior, write_pose_prior  # noqa: E402

AXES = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # humanoid (x forward, y up, z right) -> SMPL-X (x left, y up, z forward)
ARM_DOWN = {"left": Rotation.from_rotvec([0, 0, -np.pi / 2]).as_matrix(),  # SMPL-X's arm from out (+x) to down
            "right": Rotation.from_rotvec([0, 0, np.pi / 2]).as_matrix()}  # fmt: skip
UPRIGHT = ("dance_a", "dance_b", "jump", "kick", "punch", "run", "spin", "spinkick", "walk")
# body_pose index (SMPL-X joint - 1) of each joint set from the humanoid
HIP, KNEE, ANKLE, SHOULDER, ELBOW = {"left": 0, "right": 1}, {"left": 3, "right": 4}, {"left": 6, "right": 7}, \
    {"left": 15, "right": 16}, {"left": 17, "right": 18}  # fmt: skip
SPINE, NECK = (2, 5, 8), 11
# column of each humanoid joint in a frame
COLUMNS = {"chest": 8, "neck": 12, "right": {"hip": 16, "knee": 20, "ankle": 21, "shoulder": 25, "elbow": 29},
           "left": {"hip": 30, "knee": 34, "ankle": 35, "shoulder": 39, "elbow": 43}}  # fmt: skip


def local(frames: np.ndarray, col: int) -> np.ndarray:
    """The humanoid's local rotation starting at ``col`` (quaternion w, x, y, z) in SMPL-X's axes [T, 3, 3]."""
    q = frames[:, col : col + 4]
    return AXES @ Rotation.from_quat(np.c_[q[:, 1:], q[:, :1]]).as_matrix() @ AXES.T


def body_poses(frames: np.ndarray) -> np.ndarray:
    """SMPL-X body poses [T, 63] of humanoid frames [T, 44]."""
    pose = np.zeros((len(frames), 21, 3))
    chest = Rotation.from_matrix(local(frames, COLUMNS["chest"])).as_rotvec()
    for j in SPINE:
        pose[:, j] = chest / len(SPINE)
    pose[:, NECK] = Rotation.from_matrix(local(frames, COLUMNS["neck"])).as_rotvec()
    for side, sign in (("left", -1.0), ("right", 1.0)):
        c = COLUMNS[side]
        pose[:, HIP[side]] = Rotation.from_matrix(local(frames, c["hip"])).as_rotvec()
        pose[:, ANKLE[side]] = Rotation.from_matrix(local(frames, c["ankle"])).as_rotvec()
        pose[:, KNEE[side], 0] = -frames[:, c["knee"]]  # hinge about the humanoid's z: SMPL-X's -x; x > 0 bends
        pose[:, SHOULDER[side]] = Rotation.from_matrix(local(frames, c["shoulder"]) @ ARM_DOWN[side]).as_rotvec()
        pose[:, ELBOW[side], 1] = sign * frames[:, c["elbow"]]  # the hinge turned with the arm: -y bends the left
    return pose.reshape(len(frames), 63)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pybullet_data", type=Path, help="the pybullet_data folder of an unpacked pybullet wheel")
    p.add_argument("out", type=Path)
    p.add_argument("--clips", nargs="+", default=list(UPRIGHT), help="humanoid3d_<clip>.txt names (default: the upright ones)")
    p.add_argument("--components", type=int, default=4)
    args = p.parse_args()
    folder = args.pybullet_data / "data" / "motions"
    poses = []
    for clip in args.clips:
        path = folder / f"humanoid3d_{clip}.txt"
        if not path.is_file():
            raise SystemExit(f"{path}: not found (unpack pybullet_data from the pybullet wheel)")
        poses.append(body_poses(np.asarray(json.loads(path.read_text())["Frames"], np.float64)))
    prior = build_pose_prior(np.concatenate(poses), args.components)
    write_pose_prior(args.out, prior, f"pybullet DeepMimic clips: {' '.join(args.clips)}")
    print(f"{sum(len(x) for x in poses)} poses from {len(poses)} clips -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
