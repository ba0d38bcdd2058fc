"""The learned pose prior (``core.motion.pose_prior``): its cost is the mixture's, its files are
checked with messages that say what is wrong, and ``python -m core pose-prior`` builds one from
AMASS-style npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from core.__main__ import main as core_main
from core.motion.pose_prior import POSE_DIM, PosePrior, PosePriorError, read_pose_prior


def random_mixture(k: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.1, (k, POSE_DIM, POSE_DIM))
    cov = a @ np.swapaxes(a, 1, 2) + 0.01 * np.eye(POSE_DIM)
    return {"weights": rng.dirichlet(np.ones(k)), "means": rng.normal(0, 0.5, (k, POSE_DIM)), "covariances": cov}


def test_pose_prior_cost_is_the_mixtures_negative_log_likelihood():
    """Up to one constant, the cost is -log of the best component's weighted density (the
    max-mixture approximation); the likeliest component's mean costs 0."""
    g = random_mixture()
    prior = PosePrior(**g)
    rng = np.random.default_rng(1)
    poses = np.concatenate([g["means"] + rng.normal(0, 0.05, g["means"].shape), rng.normal(0, 0.5, (5, POSE_DIM))])
    got = prior(torch.as_tensor(poses, dtype=torch.float32)).double().numpy()
    nll = np.min([-np.log(w) - multivariate_normal(m, c).logpdf(poses)
                  for w, m, c in zip(g["weights"], g["means"], g["covariances"])], axis=0)  # fmt: skip
    assert got - got[0] == pytest.approx(nll - nll[0], rel=1e-3, abs=1e-2)
    best = np.argmin(-np.log(g["weights"]) + 0.5 * np.linalg.slogdet(g["covariances"])[1])
    assert prior(torch.as_tensor(g["means"][best], dtype=torch.float32)).item() == pytest.approx(0.0, abs=1e-3)
    # batched over people and frames, as the fit calls it
    assert prior(torch.zeros(2, 7, POSE_DIM)).shape == (2, 7)


def test_bad_pose_prior_files_say_what_is_wrong(tmp_path):
    g = random_mixture()
    cases = {
        "missing.npz": None,
        "truncated.npz": b"PK\x03\x04 not really a zip",
        "no_means.npz": {"weights": g["weights"], "covariances": g["covariances"]},
        "smpl_69.npz": {**g, "means": np.zeros((3, 69))},
        "not_pd.npz": {**g, "covariances": -g["covariances"]},
        "negative_weight.npz": {**g, "weights": -g["weights"]},
    }
    want = {"missing.npz": "no such file", "truncated.npz": "not a readable npz", "no_means.npz": "missing array 'means'",
            "smpl_69.npz": r"means \(3, 69\).*expected \(K,\), \(K, 63\)", "not_pd.npz": "positive definite",
            "negative_weight.npz": "weights must be positive"}  # fmt: skip
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            np.savez(path, **content)
        with pytest.raises(PosePriorError, match=want[name]) as err:
            read_pose_prior(path)
        assert name in str(err.value)


def test_a_run_with_a_bad_pose_prior_stops_before_any_stage(tmp_path, standin_model_dir):
    from core.pipeline import JobError, RunConfig
    from core.worker import preflight

    bad = tmp_path / "prior.npz"
    np.savez(bad, weights=np.ones(2))
    with pytest.raises(JobError, match="missing array"):
        preflight(RunConfig(video="clip.mp4", body_model=str(standin_model_dir), pose_prior=str(bad)))


def amass_file(path: Path, body_pose: np.ndarray, fps: float = 30.0) -> Path:
    poses = np.zeros((len(body_pose), 165))
    poses[:, 3 : 3 + POSE_DIM] = body_pose
    np.savez(path, poses=poses, trans=np.zeros((len(body_pose), 3)), betas=np.zeros(16), mocap_framerate=fps)
    return path


def test_cli_builds_a_prior_from_amass_files(tmp_path, capsys):
    """Two clusters of poses in two AMASS-style files (one in a folder) give a two-component prior
    whose means are the clusters'; a file without poses is named."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 0.4, (2, POSE_DIM))
    (tmp_path / "mocap").mkdir()
    amass_file(tmp_path / "a.npz", centres[0] + rng.normal(0, 0.02, (200, POSE_DIM)))
    amass_file(tmp_path / "mocap" / "b.npz", centres[1] + rng.normal(0, 0.02, (1200, POSE_DIM)), fps=120)  # 300 at 30 fps
    np.savez(tmp_path / "mocap" / "shape.npz", betas=np.zeros(16), gender=np.array("neutral"))  # as AMASS has
    out = tmp_path / "prior.npz"
    assert core_main(["pose-prior", str(out), str(tmp_path / "a.npz"), str(tmp_path / "mocap"), "--components", "2"]) == 0
    printed = capsys.readouterr().out
    assert "500 poses from 2 files" in printed and "skipped 1 npz files without a 'poses' array" in printed
    g = read_pose_prior(out)
    order = np.argsort(g["weights"])
    assert g["weights"][order] == pytest.approx([0.4, 0.6], abs=1e-6)
    assert np.abs(g["means"][order] - centres).max() < 0.02
    # a large collection is drawn from at random, both clusters alike
    assert core_main(["pose-prior", str(out), str(tmp_path / "a.npz"), str(tmp_path / "mocap"), "--components", "2",
                      "--max-poses", "250"]) == 0  # fmt: skip
    assert "250 poses from 2 files" in capsys.readouterr().out
    assert np.sort(read_pose_prior(out)["weights"]) == pytest.approx([0.4, 0.6], abs=0.08)
    np.savez(tmp_path / "bad.npz", trans=np.zeros((5, 3)))
    with pytest.raises(SystemExit, match="bad.npz: no 'poses' array"):
        core_main(["pose-prior", str(tmp_path / "p2.npz"), str(tmp_path / "bad.npz")])
