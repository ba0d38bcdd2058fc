"""What a learned pose prior is worth: a prior built from the synthetic walkers themselves.

    .venv/core/bin/python benchmarks/pose_prior_oracle.py OUT.npz [--scenes 150] [--spread 1]
    .venv/core/bin/python benchmarks/motion_synth.py ... --set pose_prior=OUT.npz

No motion capture ships with Troupe, so no real pose prior can be measured here. This builds one
(``core.motion.pose_prior``) from the poses ``core synth``'s gait generator gives the people of
other scenes (seeds 1000 on, two people each; the benchmark's scenes use seeds 1-9), so it knows
the benchmark's motion exactly: an upper bound on what a prior from real motion capture (AMASS,
CMU) would give, which knows people in general and these walkers only as well as they are like
people. ``--spread`` widens every component (covariances times its square) to see how the gain
falls as the prior knows the motion less well. docs/motion.md ("A learned pose prior") has the
figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from motion_synth import body_model  # noqa: E402

from core.motion.pose_prior import build_pose_prior, write_pose_prior  # noqa: E402
from core.synth.generate import sample_poses  # noqa: E402

FIRST_SEED = 1000  # far from the benchmark's scene seeds (seed + people, seeds 0-5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--scenes", type=int, default=150)
    p.add_argument("--components", type=int, default=8)
    p.add_argument("--spread", type=float, default=1.0, help="scale every component's standard deviations")
    args = p.parse_args()
    poses = sample_poses(body_model("cpu"), range(FIRST_SEED, FIRST_SEED + args.scenes))
    prior = build_pose_prior(poses, args.components)
    prior["covariances"] = prior["covariances"] * args.spread**2
    write_pose_prior(args.out, prior, f"core synth gait, seeds {FIRST_SEED}+{args.scenes}, spread {args.spread}")
    print(f"{len(poses)} poses -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
