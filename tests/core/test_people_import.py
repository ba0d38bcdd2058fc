"""The import backend and the people folder format: ground truth goes through exactly."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from core.people.formats import PeopleFormatError, read_people, write_people
from core.people.importer import import_tracks
from core.people.ingest import Frames, ingest
from core.people.metrics import evaluate_against_synth
from core.people.toyscene import make_scene
from core.pipeline import STAGES, JobDir, JobError, RunConfig, run_pipeline


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), frames=36)


@pytest.fixture(scope="module")
def imported(scene, tmp_path_factory):
    job = JobDir(tmp_path_factory.mktemp("job"))
    cfg = RunConfig(video=str(scene / "video.mp4"), tracker="import", tracks=str(scene))
    run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
    return job


def _gt(scene):
    with np.load(scene / "gt" / "labels.npz") as z:
        labels = z["labels"]
    with np.load(scene / "gt" / "keypoints.npz") as z:
        return labels, z["keypoints"], z["boxes"], z["visibility"]


def test_synth_ground_truth_is_reproduced_exactly(scene, imported):
    res = read_people(imported.stage_dir("people"))
    labels, kp, boxes, vis = _gt(scene)
    assert res.ids == ["p0", "p1", "p2"] and res.num_frames == 36
    assert res.backends == {"tracker": "import", "keypoints": "import"}
    for t in range(36):
        np.testing.assert_array_equal(res.labels[t], labels[t])
    np.testing.assert_array_equal(res.visibility, vis > 0)
    np.testing.assert_allclose(res.boxes[res.visibility], boxes[vis > 0])
    on = res.visibility
    np.testing.assert_allclose(res.keypoints[on][..., :2], kp[on][..., :2])
    np.testing.assert_array_equal(res.keypoints[on][..., 2], kp[on][..., 2])
    # toyscene's visibility is the visible fraction of the body: occlusion is its complement
    np.testing.assert_allclose(res.occlusion[on], 1 - vis[on], atol=1e-6)
    assert np.isnan(res.occlusion[~on]).all() and np.isnan(res.boxes[~on]).all()
    scores = evaluate_against_synth(res, scene)
    assert scores.mask_iou == 1.0 and scores.pck == 1.0 and scores.recall == 1.0 and scores.id_switches == 0
    # the scene has a crossing (occlusion) and an exit / re-entry
    assert (res.occlusion[on] > 0.1).any()
    gaps = np.diff(np.flatnonzero(res.visibility[2]))
    assert gaps.max() > 1


def test_overlay_video_has_every_frame(imported):
    cap = cv2.VideoCapture(str(imported.stage_dir("people") / "overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 36
    cap.release()


def test_format_round_trip_and_errors(imported, tmp_path):
    res = read_people(imported.stage_dir("people"))
    write_people(tmp_path / "copy", res)
    back = read_people(tmp_path / "copy")
    assert back.ids == res.ids and back.fps == res.fps and back.image_size == res.image_size
    for name in ("boxes", "keypoints", "visibility", "occlusion", "scores", "source_frames"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    for t in (0, 17, 35):
        np.testing.assert_array_equal(back.labels[t], res.labels[t])
        assert back.mask(t, 1).sum() == (res.labels[t] == 2).sum()
    meta = json.loads((tmp_path / "copy" / "people.json").read_text())
    assert [p["id"] for p in meta["people"]] == res.ids and meta["keypoint_format"] == "coco17"
    with pytest.raises(PeopleFormatError, match="people.json is missing"):
        read_people(tmp_path / "nowhere")
    meta["version"] = "2.0"
    (tmp_path / "copy" / "people.json").write_text(json.dumps(meta))
    with pytest.raises(PeopleFormatError, match="version"):
        read_people(tmp_path / "copy")
    res.boxes = res.boxes[:, :5]
    with pytest.raises(PeopleFormatError, match="'boxes'"):
        write_people(tmp_path / "bad", res)


def test_max_people_drops_the_least_visible_with_a_reason(scene, tmp_path):
    job = JobDir(tmp_path)
    cfg = RunConfig(video=str(scene / "video.mp4"), tracker="import", tracks=str(scene), max_people=2,
                    extra={"people": {"overlay": False}})  # fmt: skip
    run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
    res = read_people(job.stage_dir("people"))
    assert res.ids == ["p0", "p1"]
    assert len(res.dropped) == 1 and "max_people" in res.dropped[0]["reason"] and res.dropped[0]["track"] == "2"
    assert set(np.unique(res.labels[0])) <= {0, 1, 2}


def _ingested(scene, tmp_path, **kw):
    ingest(scene / "video.mp4", tmp_path / "ingest", RunConfig(**kw))
    return Frames(tmp_path / "ingest").meta


def test_per_person_png_folders_with_step_and_downscale(scene, tmp_path):
    labels, *_ = _gt(scene)
    masks = tmp_path / "masks"
    for i, name in enumerate(["alice", "bob", "carol"]):
        (masks / name).mkdir(parents=True)
        for f in range(36):
            if (labels[f] == i + 1).any():
                cv2.imwrite(str(masks / name / f"{f:05d}.png"), (labels[f] == i + 1).astype(np.uint8) * 255)
    meta = _ingested(scene, tmp_path, frame_step=3, max_size=160)
    tr = import_tracks(masks, meta)
    assert tr.names == ["alice", "bob", "carol"] and tr.num_frames == 12
    for t, f in enumerate(meta.source_frames):
        want = cv2.resize(labels[f], (160, 120), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(tr.label_fn(t), want)
    assert tr.keypoints is None and tr.keep_all


def test_label_pngs_sam2_style(scene, tmp_path):
    labels, *_ = _gt(scene)
    out = tmp_path / "vos"
    out.mkdir()
    for f in range(36):
        lab = np.where(labels[f] > 0, labels[f] * 5, 0).astype(np.uint8)  # object ids 5, 10, 15
        lab[:2, :2] = 255  # "ignore" value
        im = Image.fromarray(lab, mode="P")
        im.putpalette([c for v in range(256) for c in (v, 255 - v, (3 * v) % 256)])
        im.save(out / f"{f:05d}.png")
    meta = _ingested(scene, tmp_path)
    tr = import_tracks(out, meta)
    assert tr.names == ["5", "10", "15"]
    for t in (0, 20):
        np.testing.assert_array_equal(tr.label_fn(t)[2:, 2:], labels[t][2:, 2:])


def test_import_errors_name_the_problem(scene, tmp_path):
    meta = _ingested(scene, tmp_path)
    with pytest.raises(JobError, match="needs --tracks"):
        import_tracks(None, meta)
    with pytest.raises(JobError, match="folder not found"):
        import_tracks(tmp_path / "none", meta)
    (tmp_path / "junk").mkdir()
    with pytest.raises(JobError, match="no known layout"):
        import_tracks(tmp_path / "junk", meta)
    (tmp_path / "broken" / "gt").mkdir(parents=True)
    (tmp_path / "broken" / "gt" / "tracks.json").write_text("{}")
    with pytest.raises(JobError, match="keypoints.npz"):
        import_tracks(tmp_path / "broken", meta)


def test_core_synth_output_imports_exactly(tmp_path):
    """The real `python -m core synth` layout (not only the toy scene's copy of it)."""
    import argparse

    from core.synth.cli import add_arguments
    from core.synth.cli import main as synth_main

    p = argparse.ArgumentParser()
    add_arguments(p)
    scene = tmp_path / "synth"
    assert synth_main(p.parse_args(["--out", str(scene), "--people", "2", "--frames", "8", "--size", "160x96"])) == 0
    job = JobDir(tmp_path / "job")
    cfg = RunConfig(video=str(scene / "video.mp4"), tracker="import", tracks=str(scene),
                    extra={"people": {"overlay": False}})  # fmt: skip
    run_pipeline(job, cfg, lambda *a: None, stages=STAGES[:2])
    res = read_people(job.stage_dir("people"))
    assert res.ids == ["p0", "p1"]
    scores = evaluate_against_synth(res, scene)
    assert scores.mask_iou == 1.0 and scores.pck == 1.0 and scores.id_switches == 0
