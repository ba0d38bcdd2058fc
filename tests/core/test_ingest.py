"""The ingest stage: frames cached with the right source indices, size and fps; clear errors; resume."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from core.people.ingest import Frames, ingest
from core.pipeline import STAGES, Cancelled, JobDir, JobError, RunConfig, run_pipeline


def _level(i: int) -> int:
    return 12 * i + 8  # grey level that identifies source frame i (survives mp4v compression)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 120))
    for i in range(20):
        w.write(np.full((120, 160, 3), _level(i), np.uint8))
    w.release()
    return path


def _levels(frames: Frames) -> list[int]:
    return [round((float(f.mean()) - 8) / 12) for f in frames]


def test_whole_video(video, tmp_path):
    meta = ingest(video, tmp_path, RunConfig(max_size=1280))
    assert meta.fps == pytest.approx(25.0)
    assert meta.source_frames == list(range(20))
    assert meta.size == (160, 120) and meta.scale == 1.0 and meta.source_frame_count == 20
    frames = Frames(tmp_path)
    assert len(frames) == 20 and frames[0].shape == (120, 160, 3)
    assert _levels(frames) == list(range(20))
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk["source"] == str(video) and on_disk["source_frames"] == list(range(20))


def test_range_step_and_max_size(video, tmp_path):
    meta = ingest(video, tmp_path, RunConfig(frame_start=3, frame_end=15, frame_step=4, max_size=80))
    assert meta.source_frames == [3, 7, 11]
    assert meta.size == (80, 60) and meta.scale == pytest.approx(0.5)
    frames = Frames(tmp_path)
    assert frames[0].shape == (60, 80, 3)
    assert _levels(frames) == [3, 7, 11]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["000000.jpg", "000001.jpg", "000002.jpg"]


def test_image_folder_natural_order(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in (1, 2, 10):  # "10" must come after "2"
        cv2.imwrite(str(src / f"f{i}.png"), np.full((30, 40, 3), _level(i), np.uint8))
    meta = ingest(src, tmp_path / "out", RunConfig())
    assert meta.kind == "images" and meta.source_frames == [0, 1, 2]
    assert _levels(Frames(tmp_path / "out")) == [1, 2, 10]


def test_missing_and_corrupt_inputs_name_the_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(JobError, match="nope.mp4"):
        ingest(missing, tmp_path / "a", RunConfig())
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(JobError, match="bad.mp4"):
        ingest(bad, tmp_path / "b", RunConfig())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobError, match="without images"):
        ingest(empty, tmp_path / "c", RunConfig())


def test_range_past_the_end_is_a_clear_error(video, tmp_path):
    with pytest.raises(JobError, match="no frames selected"):
        ingest(video, tmp_path, RunConfig(frame_start=50))


def test_cancel_then_resume_keeps_finished_frames(video, tmp_path):
    calls = {"n": 0}

    def cancel_on_second_report(frac, msg=""):
        calls["n"] += 1
        if calls["n"] == 2:  # reports come every 10 frames: 11 frames are written by now
            raise Cancelled()

    with pytest.raises(Cancelled):
        ingest(video, tmp_path, RunConfig(), cancel_on_second_report)
    assert not (tmp_path / "meta.json").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "frames").iterdir()}
    assert len(first) == 11
    meta = ingest(video, tmp_path, RunConfig())
    assert meta.source_frames == list(range(20))
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "frames").iterdir()}
    assert all(again[k] == v for k, v in first.items())  # not rewritten
    assert _levels(Frames(tmp_path)) == list(range(20))
    # Other settings: the old frames are not reused.
    meta = ingest(video, tmp_path, RunConfig(frame_step=5))
    assert meta.source_frames == [0, 5, 10, 15] and _levels(Frames(tmp_path)) == [0, 5, 10, 15]


def test_ingest_stage_in_the_pipeline(video, tmp_path):
    job = JobDir(tmp_path / "job")
    run_pipeline(job, RunConfig(video=str(video), frame_step=2), lambda *a: None, stages=STAGES[:1])
    assert Frames(job.stage_dir("ingest")).meta.source_frames == list(range(0, 20, 2))
    with pytest.raises(JobError, match="missing.mp4"):
        run_pipeline(JobDir(tmp_path / "job2"), RunConfig(video=str(tmp_path / "missing.mp4")), lambda *a: None,
                     stages=STAGES[:1])  # fmt: skip


def _set_rotation_90(path):
    """Write a 90-degree display matrix into the MP4's track header (as phones do)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert i > 0 and data[i + 4] == 0  # version 0 header: matrix after 36 bytes of fields
    off = i + 4 + 4 + 4 * 5 + 8 + 2 * 4
    assert struct.unpack(">9i", data[off : off + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[off : off + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "phone.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 80))
    for _ in range(3):
        img = np.zeros((80, 160, 3), np.uint8)
        img[:, :40] = 255  # a white band on the left of the stored frame
        w.write(img)
    w.release()
    _set_rotation_90(path)
    meta = ingest(path, tmp_path / "out", RunConfig())
    assert meta.rotation == 90 and meta.source_size == (80, 160) and meta.size == (80, 160)
    frame = Frames(tmp_path / "out")[0]
    assert frame.shape == (160, 80, 3)
    assert frame[:35].mean() > 200 and frame[45:].mean() < 50  # shown upright: the band is now on top
