"""Avatar optimisation on a tiny two-person scene (CPU, torch rasteriser), its outputs and the stage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core import bundle
from core.avatars import fit as F
from core.avatars.config import PRESETS, AvatarConfig
from core.avatars.outputs import write_outputs
from core.avatars.synthetic import make_scene

# Small enough for CI (about 10 s on 2 cores), large enough to learn something.
TINY = dict(iterations=70, gaussians_per_person=250, max_gaussians_per_person=500, sh_degree=1,
            sh_degree_interval=40, resolution_scale=1.0, holdout_every=4, init_color_frames=4,
            lr_sh0=1e-2, lr_means=1e-3, densify_start=20, densify_stop=60, densify_every=20,
            refine_poses=True, pose_start=30, log_every=10, backend="torch", orbit_views=4,
            max_saved_heldout=2)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny tensors: one intra-op thread is several times faster than two (and than a busy pool)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    return make_scene(people=2, frames=8, width=64, height=48, seed=0)


@pytest.fixture(scope="module")
def fitted(scene):  # type: ignore[no-untyped-def]
    cfg = AvatarConfig.preset("preview").replace(**TINY)
    return F.fit_avatars(scene.frames, scene.labels, scene.motion, cfg, device="cpu")


def test_optimisation_lowers_the_loss_and_beats_the_initialisation(fitted) -> None:  # type: ignore[no-untyped-def]
    hist = fitted.history
    first, last = hist[0], hist[-1]
    assert last["l1"] < 0.6 * first["l1"]
    assert last["mask"] < first["mask"]
    init, held = fitted.metrics["init"], fitted.metrics["heldout"]
    assert held["frames"] == len(fitted.heldout_frames) == 2
    # Held-out frames (never trained on) are clearly better than the surface-coloured start.
    assert held["psnr"] > init["psnr"] + 3.5, (init, held)
    assert held["psnr"] > 22.0 and held["ssim"] > init["ssim"] + 0.2
    assert fitted.metrics["lpips"] is None  # no network weights offline: not faked


def test_held_out_frames_are_never_trained_on(scene) -> None:  # type: ignore[no-untyped-def]
    train, held = F.split_frames(20, 5)
    assert held == [2, 7, 12, 17] and not set(train) & set(held) and len(train) + len(held) == 20
    seen = np.zeros((20, 2), bool)
    seen[:, 0] = True
    seen[15:, 1] = True  # person 1 only in a few frames
    w = F._sampler_weights(train, seen)
    assert w.shape == (len(train),) and np.isclose(w.sum(), 1)
    # Each person gets half of the sampling mass, however few frames show them.
    assert np.isclose(w[np.asarray(train) >= 15].sum(), 0.5 + 0.5 * 4 / 16)


def test_outputs_are_a_valid_bundle_with_splats_and_renders(fitted, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = write_outputs(fitted, tmp_path / "avatars")
    assert bundle.validate(out) == []
    back = bundle.read_bundle(out)
    for i, person in enumerate(back.people):
        s = person.splats
        assert s is not None and s.count == fitted.metrics["gaussians"][person.id]
        assert s.sh_degree == 1 and s.skin_joints.shape[1] == bundle.SPLAT_SKIN_K
        assert np.allclose(s.skin_weights.sum(1), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(s.quats, axis=1), 1, atol=1e-5)
        # Canonical (rest pose): the splats sit on the rig's rest body, not where it is in the world.
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(scene.motion.people[i].rig.vertices).query(s.means)
        assert np.median(dist) < 0.05
        # Pose refinement stayed small and the rig is unchanged.
        d = np.abs(person.motion.poses - scene.motion.people[i].motion.poses).max()
        assert 0 < d < 0.3
        assert np.array_equal(person.rig.vertices, scene.motion.people[i].rig.vertices)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg == fitted.config.to_json()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout"]["psnr"] == pytest.approx(fitted.metrics["heldout"]["psnr"])
    held = sorted((out / "renders" / "heldout").glob("*.png"))
    assert len(held) == 2
    assert cv2.imread(str(held[0])).shape == (48, 128, 3)  # ground truth | render
    for person in back.people:
        sheet = cv2.imread(str(out / "renders" / f"orbit_{person.id}.png"))
        assert sheet.shape == (48, 4 * 64, 3)
        assert (sheet < 250).any(axis=-1).mean() > 0.02  # the person is in the views


def test_splats_follow_the_motion_through_bundle_skinning(fitted, scene) -> None:  # type: ignore[no-untyped-def]
    """The exported canonical splats, posed with core.bundle (as Blender does), land on the person."""
    person = fitted.bundle.people[0]
    s = person.splats
    t = fitted.heldout_frames[0]
    _, skin = bundle.forward_kinematics(person.rig.joints, person.rig.parents, person.motion.rotvecs[t : t + 1],
                                        person.motion.trans[t : t + 1])  # fmt: skip
    posed = bundle.skin_points(s.means, s.skin_joints, s.skin_weights, skin[0])
    uv = scene.motion.camera.project(posed, t)
    opaque = 1 / (1 + np.exp(-s.opacity)) > 0.5
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 64) & (uv[:, 1] >= 0) & (uv[:, 1] < 48) & opaque
    px = uv[inside].astype(int)
    on_mask = scene.labels[t][px[:, 1], px[:, 0]] == 1
    assert inside.mean() > 0.5 and on_mask.mean() > 0.8


def test_densify_and_prune_keep_buffers_and_optimizer_state_aligned(scene) -> None:  # type: ignore[no-untyped-def]
    cfg = AvatarConfig().replace(gaussians_per_person=50, max_gaussians_per_person=60, split_scale=0.05)
    av = F.Avatars(scene.motion, cfg, torch.device("cpu"))
    data = F._prepare(scene.frames, scene.labels, scene.motion, cfg, torch.device("cpu"))
    av.set_gaussians(F.initial_gaussians(scene.motion, data, [0, 1, 2], cfg, np.random.default_rng(0)))
    n = av.count
    opt = torch.optim.Adam([{"params": [av.params[k]], "lr": 1e-3, "name": k} for k in av.params])
    sum(p.sum() for p in av.params.values()).backward()
    opt.step()
    with torch.no_grad():
        av.params["scales"][:] = np.log(0.02)
        av.params["scales"][:5] = np.log(0.08)  # 0..4: large -> split
        av.params["opacities"][10:13] = -10.0  # 10..12: transparent -> pruned
    state = F.DensifyState.zeros(n, torch.device("cpu"))
    state.count[:] = 1
    state.grad2d[:8] = 1.0  # 0..7 high gradient: 0..4 split, 5..7 clone
    state.grad2d[55:70] = 1.0  # person 1: 15 wanted but only 10 fit its budget of 60
    person_before = av.buffers["person"].clone()
    anchors_before = av.buffers["anchors"].clone()
    info = F.densify_and_prune(av, opt, state, cfg, torch.Generator().manual_seed(0))
    assert info == {"cloned": 3 + 10, "split": 5, "pruned": 3, "total": n - 5 - 3 + 3 + 10 + 2 * 5}
    assert av.counts() == [50 - 3 + 3 + 5, 60]
    assert av.count == info["total"] == len(av.buffers["person"]) == len(av.buffers["anchors"])
    for k, p in av.params.items():
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape, k
        assert any(g["params"][0] is p for g in opt.param_groups)
    # Clones copy their source row; splits are 1.6x smaller and keep the source's person and anchor.
    split_rows = slice(av.count - 10, av.count)
    assert torch.allclose(av.params["scales"][split_rows], torch.full((10, 3), np.log(0.08 / 1.6)), atol=1e-6)
    assert torch.equal(av.buffers["person"][split_rows], person_before[[0, 1, 2, 3, 4] * 2])
    assert torch.equal(av.buffers["anchors"][split_rows], anchors_before[[0, 1, 2, 3, 4] * 2])
    assert av.neighbours is not None and av.neighbours.shape == (av.count, cfg.skin_neighbours)


def test_config_presets_and_overrides() -> None:
    assert set(PRESETS) == {"preview", "standard", "high"}
    preview, high = AvatarConfig.preset("preview"), AvatarConfig.preset("high")
    assert preview.iterations < AvatarConfig().iterations < high.iterations
    assert high.sh_degree == 3 and preview.sh_degree == 0
    with pytest.raises(ValueError, match="preset must be one of"):
        AvatarConfig.preset("ultra")
    with pytest.raises(ValueError, match=r"unknown avatar setting\(s\) \['iters'\]"):
        AvatarConfig().replace(iters=5)
    assert AvatarConfig().replace(iterations=5).to_json()["iterations"] == 5


def test_bad_inputs_name_what_is_wrong(scene) -> None:  # type: ignore[no-untyped-def]
    cfg = AvatarConfig.preset("preview")
    with pytest.raises(F.AvatarInputError, match=r"frames must be uint8 \(T=8"):
        F.fit_avatars(scene.frames[:5], scene.labels, scene.motion, cfg)
    with pytest.raises(F.AvatarInputError, match="labels must be uint8"):
        F.fit_avatars(scene.frames, scene.labels[..., :10], scene.motion, cfg)
    bad = scene.labels.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(F.AvatarInputError, match="only 2 people"):
        F.fit_avatars(scene.frames, bad, scene.motion, cfg)


def test_stage_reads_the_job_folders_and_writes_avatars(scene, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from core.avatars.stage import run_stage
    from core.people.formats import PeopleResult, write_people
    from core.pipeline import JobDir, RunConfig, StageContext

    job = JobDir(tmp_path / "job")
    t, h, w = scene.labels.shape
    ingest = job.stage_dir("ingest")
    (ingest / "frames").mkdir(parents=True)
    for i, f in enumerate(scene.frames):
        cv2.imwrite(str(ingest / "frames" / f"{i:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    meta = dict(source="synthetic", kind="images", fps=10.0, source_frame_count=t, source_size=[w, h],
                rotation=0, size=[w, h], scale=1.0, source_frames=list(range(t)),
                frame_pattern="frames/{:06d}.png")  # fmt: skip
    (ingest / "meta.json").write_text(json.dumps(meta))
    # The people stage lists person p1 first: its label 1 is the motion's second person.
    swapped = np.choose(scene.labels, [0, 2, 1]).astype(np.uint8)
    nan = np.full((2, t), np.nan, np.float32)
    write_people(job.stage_dir("people"), PeopleResult(
        ids=["p1", "p0"], fps=10.0, image_size=(w, h), source_frames=np.arange(t),
        boxes=np.full((2, t, 4), np.nan, np.float32), keypoints=np.full((2, t, 17, 3), np.nan, np.float32),
        visibility=np.ones((2, t), bool), occlusion=nan, labels=list(swapped)))  # fmt: skip
    bundle.write_bundle(job.stage_dir("motion"), scene.motion)
    config = RunConfig(
        quality="preview", device="cpu", extra={"avatars": {**TINY, "iterations": 3, "densify": False}}
    )
    reports: list[tuple[float, str]] = []
    monkeypatch.setattr("core.pipeline.REPORT_INTERVAL", 0.0)  # every report, however fast the steps
    ctx = StageContext(job=job, config=config, name="avatars", _progress=lambda f, m: reports.append((f, m)),
                       _cancelled=lambda: False)  # fmt: skip
    run_stage(ctx)
    out = job.stage_dir("avatars")
    back = bundle.read_bundle(out)
    assert [p.id for p in back.people] == ["p0", "p1"] and all(p.splats is not None for p in back.people)
    assert json.loads((out / "config.json").read_text())["iterations"] == 3
    assert reports and reports[-1][0] > 0.9
    # The labels were remapped to the motion's order: p0's splats were coloured from p0's pixels.
    init0 = json.loads((out / "metrics.json").read_text())["init"]
    assert init0["psnr"] > 12
    # A typo in the overrides is a clear job error.
    from core.pipeline import JobError

    ctx.config = RunConfig(quality="preview", extra={"avatars": {"iteratons": 3}})
    with pytest.raises(JobError, match="iteratons"):
        run_stage(ctx)


def test_cpu_fit_runs_on_its_own_thread_count_and_restores_it() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = AvatarConfig().replace(cpu_threads=1)
        with F.cpu_threads(cfg, "cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with F.cpu_threads(cfg.replace(cpu_threads=0), "cpu"):  # 0: torch's own setting
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
