"""A learned pose prior: a Gaussian mixture over the body pose, built from motion capture.

The fit's own priors (``priors.py``) know each joint's range and nothing of how joints move
together. Where the image cannot tell a limb's depth along the viewing ray (a forearm bent toward
the camera or away from it), those priors leave it to chance, and the world path inherits it
(docs/motion.md, "A learned pose prior"). A mixture of Gaussians over the 63 numbers of the body
pose (21 joints' axis-angle in SMPL-X order, ``bundle.JOINT_NAMES[1:22]``) knows which poses
people take; it is what SMPLify used, and any SMPL-family motion capture builds one.

    python -m core pose-prior OUT.npz MOCAP.npz ... [--components 8] [--fps 30] [--max-poses 100000]

reads AMASS / SMPL-X npz files (``poses`` [T, >= 66]: root, then the 21 body joints) or Troupe
bundles' ``motion.npz`` and writes the prior; ``python -m core run --pose-prior OUT.npz`` (or
``FitConfig.pose_prior``) fits with it. No prior ships with Troupe: the motion capture it would
be built from is not ours to redistribute.

File (npz): ``weights`` [K], ``means`` [K, 63], ``covariances`` [K, 63, 63] (symmetric positive
definite); ``source`` (text) is optional.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch

from ..pipeline import JobError

POSE_DIM = 63  # 21 body joints x axis-angle
REG_COVAR = 1e-3  # rad^2 added to every variance: a joint the capture never moves stays movable


class PosePriorError(JobError):
    """A pose prior file that cannot be used (missing, malformed, not a mixture over 63 numbers):
    a run stops with this message wherever it finds out, before the first stage or in the motion
    stage."""


class PosePrior(torch.nn.Module):
    """Cost of body poses under a Gaussian mixture: the Mahalanobis distance to the nearest
    component, halved, plus that component's -log weight and half log-determinant (the
    max-mixture approximation of the negative log-likelihood, as SMPLify scores its prior), less
    the smallest such constant: a pose at the likeliest component's mean costs 0."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, device: str | torch.device = "cpu") -> None:
        super().__init__()
        chol = np.linalg.cholesky(np.linalg.inv(covariances))  # precision = L L^T
        const = -np.log(weights) + 0.5 * np.linalg.slogdet(covariances)[1]
        f32 = dict(dtype=torch.float32, device=device)
        self.register_buffer("means", torch.as_tensor(means, **f32))
        self.register_buffer("chol", torch.as_tensor(chol, **f32))
        self.register_buffer("const", torch.as_tensor(const - const.min(), **f32))

    @property
    def components(self) -> int:
        return int(self.means.shape[0])

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """[..., 63] -> [...] cost of each pose."""
        d = body_pose[..., None, :] - self.means  # [..., K, 63]
        m = torch.einsum("...ki,kij->...kj", d, self.chol).square().sum(-1)  # [..., K] Mahalanobis^2
        return (0.5 * m + self.const).min(-1).values


def read_pose_prior(path: str | Path) -> dict[str, np.ndarray]:
    """The mixture in ``path`` (weights, means, covariances), checked; ``PosePriorError`` says what
    is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise PosePriorError(f"pose prior {path}: no such file (build one with `python -m core pose-prior`)")
    names = ("weights", "means", "covariances")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in names if k not in z.files]
            g = {k: np.asarray(z[k], np.float64) for k in names if k in z.files}
    except Exception as exc:  # a truncated or foreign file: zipfile, pickle and format errors alike
        raise PosePriorError(f"pose prior {path}: not a readable npz ({exc})") from None
    if missing:
        raise PosePriorError(f"pose prior {path}: missing array {', '.join(map(repr, missing))}; expected {', '.join(names)}")
    w, mu, cov = g["weights"], g["means"], g["covariances"]
    k = len(w)
    if w.ndim != 1 or k == 0 or mu.shape != (k, POSE_DIM) or cov.shape != (k, POSE_DIM, POSE_DIM):
        raise PosePriorError(
            f"pose prior {path}: shapes weights {w.shape}, means {mu.shape}, covariances {cov.shape}; "
            f"expected (K,), (K, {POSE_DIM}), (K, {POSE_DIM}, {POSE_DIM}) over the 21 body joints' axis-angle"
        )
    if not (np.all(np.isfinite(w)) and np.all(w > 0) and np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise PosePriorError(f"pose prior {path}: weights must be positive and every number finite")
    if not np.allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-8) or np.any(np.linalg.eigvalsh(cov)[:, 0] <= 0):
        raise PosePriorError(f"pose prior {path}: a covariance is not symmetric positive definite")
    g["weights"] = w / w.sum()
    return g


@functools.lru_cache(maxsize=4)
def load_pose_prior(path: str, device: str) -> PosePrior:
    """``path``'s prior on ``device``, read once per process."""
    return PosePrior(**read_pose_prior(path), device=device)


def build_pose_prior(poses: np.ndarray, components: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Fit a ``components``-Gaussian mixture (full covariances) to body poses [N, 63]."""
    from sklearn.mixture import GaussianMixture

    poses = np.asarray(poses, np.float64)
    if poses.ndim != 2 or poses.shape[1] != POSE_DIM:
        raise PosePriorError(f"poses have shape {poses.shape}; expected (N, {POSE_DIM})")
    if len(poses) < 10 * components:
        raise PosePriorError(f"{len(poses)} poses are too few for {components} components (at least {10 * components})")
    gm = GaussianMixture(components, covariance_type="full", reg_covar=REG_COVAR, random_state=seed).fit(poses)
    return {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_}


def write_pose_prior(path: Path, prior: dict[str, np.ndarray], source: str) -> None:
    """Write a mixture (``build_pose_prior``'s weights, means, covariances) as a prior file, with
    ``source`` saying what it was built from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **prior, source=np.array(source))


def read_body_poses(path: Path, fps: float = 30.0, *, required: bool = True) -> np.ndarray | None:
    """Body poses [T, 63] of an AMASS / SMPL-X npz (``poses`` [T, >= 66]) or a bundle's
    ``motion.npz``, resampled to about ``fps`` where the file gives its frame rate
    (AMASS: ``mocap_framerate`` or ``mocap_frame_rate``, 60-250 fps by dataset), so no capture
    counts more for having been recorded faster. Not ``required``: None for a file that is no
    npz or has no poses (a folder's AMASS ``shape.npz``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            poses = np.asarray(z["poses"], np.float64) if "poses" in z.files else None
            rate = next((float(z[k]) for k in ("mocap_framerate", "mocap_frame_rate") if k in z.files), None)
    except Exception as exc:
        if not required:
            return None
        raise PosePriorError(f"{path}: not a readable npz ({exc})") from None
    if poses is None:
        if not required:
            return None
        raise PosePriorError(f"{path}: no 'poses' array (an AMASS / SMPL-X npz has poses [T, 156 or 165])")
    if poses.ndim != 2 or poses.shape[1] < 3 + POSE_DIM:
        raise PosePriorError(f"{path}: 'poses' has shape {poses.shape}; expected (T, >= {3 + POSE_DIM})")
    every = max(1, round(rate / fps)) if rate and fps > 0 else 1
    body = poses[::every, 3 : 3 + POSE_DIM].astype(np.float32)  # float32: all of AMASS is millions of frames
    return body[np.all(np.isfinite(body), axis=1)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the prior to write (.npz)")
    p.add_argument("inputs", type=Path, nargs="+", help="AMASS / SMPL-X npz files or bundles' motion.npz (folders: every *.npz below)")
    p.add_argument("--components", type=int, default=8, help="Gaussians in the mixture")
    p.add_argument("--fps", type=float, default=30.0,
                   help="resample captures that give their frame rate to about this many frames a second (0: every frame)")
    p.add_argument("--max-poses", type=int, default=100_000,
                   help="fit the mixture to at most this many poses, drawn at random (the fit's time grows with them)")
    p.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    read: list[np.ndarray] = []
    skipped = 0
    try:
        for f in args.inputs:
            # a named file must hold poses; a folder's may not (AMASS keeps a shape.npz beside each subject's takes)
            for g, required in [(f, True)] if not f.is_dir() else [(g, False) for g in sorted(f.rglob("*.npz"))]:
                body = read_body_poses(g, args.fps, required=required)
                if body is None:
                    skipped += 1
                else:
                    read.append(body)
        if not read:
            raise SystemExit(f"pose-prior: no npz files with poses among the inputs ({skipped} without)")
        if skipped:
            print(f"pose-prior: skipped {skipped} npz files without a 'poses' array found in the folders")
        poses = np.concatenate(read)
        if len(poses) > args.max_poses > 0:
            poses = poses[np.random.default_rng(args.seed).choice(len(poses), args.max_poses, replace=False)]
        prior = build_pose_prior(poses, args.components, args.seed)
    except PosePriorError as exc:
        raise SystemExit(f"pose-prior: {exc}") from None
    write_pose_prior(args.out, prior, f"{len(read)} files, {len(poses)} poses")
    print(f"pose-prior: {len(poses)} poses from {len(read)} files -> {args.out} ({args.components} components)")
    return 0
