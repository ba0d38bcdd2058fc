"""The sam2 tracker and ViTPose keypoints run end to end on tiny random checkpoints (plumbing:
the real loading, prompting, propagation and post-processing code; the numbers mean nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sam2")
pytest.importorskip("transformers")

from core.people.formats import read_people
from core.people.sam2_backend import find_sam2
from core.people.stage import StageSettings
from core.people.testmodels import make_all
from core.people.toyscene import make_scene
from core.pipeline import STAGES, JobDir, JobError, RunConfig, run_pipeline


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), frames=6, size=(160, 120))


def _run(tmp_path, scene, weights, device="cpu", max_people=1, **kw):
    # a random detector scores everything about alike: take its best boxes, keep every track
    extra = {"min_human": 0.0, "detect_threshold": 0.0, "min_frames": 1, "detect_every": 3}
    cfg = RunConfig(video=str(scene / "video.mp4"), weights_dir=str(weights), device=device, max_people=max_people,
                    extra={"people": extra}, **kw)  # fmt: skip
    job = JobDir(tmp_path)
    run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
    return read_people(job.stage_dir("people"))


def _check(res, t_frames=6):
    assert res.num_frames == t_frames and res.num_people >= 1
    for i in range(res.num_people):
        for t in np.flatnonzero(res.visibility[i]):
            m = res.mask(t, i)
            assert m.any()
            ys, xs = np.nonzero(m)
            np.testing.assert_array_equal(res.boxes[i, t], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    on = res.visibility
    assert np.isfinite(res.keypoints[on][..., :2]).all()
    assert ((res.keypoints[on][..., 2] >= 0) & (res.keypoints[on][..., 2] <= 1)).all()
    assert np.isnan(res.keypoints[~on][..., 0]).all()


def test_sam2_tracker_with_vitpose_keypoints(tmp_path, scene, weights):
    res = _run(tmp_path, scene, weights, tracker="sam2", keypoints="vitpose")
    assert res.backends == {"tracker": "sam2", "keypoints": "vitpose"}
    _check(res)


def test_vitpose_on_imported_masks(tmp_path, scene, weights):
    res = _run(tmp_path, scene, weights, max_people=2, tracker="import", tracks=str(scene), keypoints="vitpose")
    assert res.backends["keypoints"] == "vitpose" and res.num_people == 2  # max_people=2 of the 3
    _check(res)


def test_missing_checkpoint_names_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig(weights_dir=str(tmp_path), quality="standard")
    with pytest.raises(JobError) as err:
        find_sam2(cfg, StageSettings())
    msg = str(err.value)
    assert "sam2.1_hiera_base_plus.pt" in msg and str(tmp_path / "sam2") in msg


def test_checkpoint_sidecar_gives_config_and_overrides(weights):
    cfg_name, ckpt, overrides = find_sam2(
        RunConfig(weights_dir=str(weights), quality="preview"), StageSettings()
    )
    side = json.loads(ckpt.with_suffix(".json").read_text())
    assert (
        cfg_name == side["config"]
        and overrides == side["overrides"]
        and "++model.image_size=256" in overrides
    )


@pytest.mark.gpu
def test_sam2_and_vitpose_on_cuda(tmp_path, scene, weights):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    res = _run(tmp_path, scene, weights, device="cuda", tracker="sam2", keypoints="vitpose")
    _check(res)
