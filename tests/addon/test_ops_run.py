"""The Run operator and its polling functions in Blender (bpy module), with the extension enabled.

The worker is the real ``python -m core run`` with small test stages (``fake_env_python``), whose
last stage writes a bundle made by ``bundle_factory``; the import is the real importer. The
modal operator's timer calls ``ops_run.tick``; these tests call the same function, and
``bpy.ops.troupe.run()`` itself runs the blocking loop (background mode).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from tests.addon.troupe_extension import (  # noqa: E402
    CORE_PYTHON,
    assert_reaped,
    cpu_path_options,
    disable_extension,
    enable_extension,
    fake_env_python,
    load_troupe_module,
    needs_cpu_path,
    small_synth,
)

pytestmark = pytest.mark.skipif(not CORE_PYTHON.exists(), reason="needs .venv/core (scripts/setup.sh core)")
TAG = "troupe_import"  # addon/datablocks.py: every datablock an import creates carries it


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    ext = enable_extension(tmp_path_factory.mktemp("extensions"))
    yield ext
    disable_extension()


@pytest.fixture(scope="module")
def prefs(ext, tmp_path_factory):
    p = bpy.context.preferences.addons[ext.__name__].preferences
    p.python_path = fake_env_python(tmp_path_factory.mktemp("fakeenv"))
    p.body_model_dir = ""
    yield p
    p.python_path = ""


@pytest.fixture(scope="module")
def bundle_src(tmp_path_factory) -> Path:
    load_troupe_module("core.bundle")  # bundle_factory writes with the checkout's bundle module
    from tests.addon.bundle_factory import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "bundle", people=2, frames=6)


@pytest.fixture()
def scene(ext, prefs, tmp_path):
    """A fresh scene, shown in the window, set to a video in a folder with spaces and non-ASCII letters."""
    scene = bpy.data.scenes.new("troupe test")
    window = bpy.context.window_manager.windows[0]
    previous = window.scene
    window.scene = scene
    folder = tmp_path / "Aufnahmen ü 舞蹈"
    folder.mkdir()
    (folder / "clip é.mp4").write_bytes(b"read by the test stages only")
    st = scene.troupe
    st.video_path = str(folder / "clip é.mp4")
    st.output_dir = str(folder / "jobs")
    yield scene
    ext.addon.ops_run.QUEUE.shutdown()
    try:
        window.scene = previous
        bpy.data.scenes.remove(scene)
    except ReferenceError:  # another file was opened: the scene went with the old one
        pass
    for coll in (bpy.data.objects, bpy.data.collections):
        for d in [d for d in coll if d.get(TAG)]:
            coll.remove(d)


def tagged_objects(scene) -> list:
    return [o for o in scene.objects if o.get(TAG)]


def skinned_meshes(scene, armature) -> list:
    """Meshes the armature deforms (an Armature modifier pointing at it)."""
    return [o for o in tagged_objects(scene) if o.type == "MESH"
            and any(m.type == "ARMATURE" and m.object == armature for m in o.modifiers)]  # fmt: skip


def tick_until(ops, scene, predicate, timeout: float = 30.0) -> None:
    key = ops.scene_key(scene)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {scene.troupe.job_status} {scene.troupe.job_message}"
        ops.tick(key, 0.1)


def test_run_operator_runs_the_worker_and_imports_the_people(ext, scene, bundle_src, monkeypatch):
    monkeypatch.setenv("TEST_BUNDLE_SRC", str(bundle_src))
    assert bpy.ops.troupe.run() == {"FINISHED"}
    st = scene.troupe
    assert st.job_status == "DONE" and st.job_imported and st.job_fraction == pytest.approx(1.0)
    assert Path(st.job_dir) == Path(st.output_dir) / "clip é" and Path(st.job_log).is_file()
    assert st.job_bundle == str(Path(st.job_dir) / "bundle")
    armatures = [o for o in tagged_objects(scene) if o.type == "ARMATURE"]
    assert sorted(o.get("troupe_person_id") for o in armatures) == ["p0", "p1"]
    assert all(skinned_meshes(scene, a) for a in armatures)
    assert ext.addon.ops_run.QUEUE.active(ext.addon.ops_run.scene_key(scene)) is None


@needs_cpu_path
def test_run_operator_reconstructs_a_synthetic_clip_into_the_scene(ext, prefs, scene, tmp_path_factory, standin_dir):
    """The real CPU job: the synthetic clip's people end up in the scene as armatures with meshes."""
    synth_dir = small_synth(tmp_path_factory.getbasetemp())
    st = scene.troupe
    st.video_path = str(synth_dir / "video.mp4")
    st.output_dir = str(tmp_path_factory.mktemp("real") / "jobs")
    st.extra_args = ext.addon.envsetup.join_args(list(cpu_path_options(synth_dir)))
    saved = prefs.python_path, prefs.body_model_dir
    prefs.python_path, prefs.body_model_dir = str(CORE_PYTHON), str(standin_dir)
    try:
        assert bpy.ops.troupe.run() == {"FINISHED"}
    finally:
        prefs.python_path, prefs.body_model_dir = saved
    assert st.job_status == "DONE" and st.job_imported, st.job_error
    truth = [p.id for p in load_troupe_module("core.bundle").read_bundle(synth_dir / "bundle").people]
    armatures = [o for o in tagged_objects(scene) if o.type == "ARMATURE"]
    assert sorted(o.get("troupe_person_id") for o in armatures) == sorted(truth)
    assert all(skinned_meshes(scene, a) for a in armatures)


def test_cancel_leaves_nothing_imported_and_no_process(ext, scene, bundle_src, monkeypatch):
    ops = ext.addon.ops_run
    monkeypatch.setenv("TEST_BUNDLE_SRC", str(bundle_src))
    monkeypatch.setenv("TEST_STAGE_DELAY", "4")
    job = ops.submit(bpy.context, scene)
    tick_until(ops, scene, lambda: scene.troupe.job_stage == "second")
    assert scene.troupe.job_status == "RUNNING" and 0.4 < scene.troupe.job_fraction < 1.0
    t0 = time.monotonic()
    ops.cancel(scene)
    assert scene.troupe.job_status == "CANCELLING"
    tick_until(ops, scene, lambda: not ops.QUEUE.busy(ops.scene_key(scene)), timeout=10)
    assert time.monotonic() - t0 < 5.0
    assert scene.troupe.job_status == "CANCELLED" and "resume" in scene.troupe.job_error, (
        scene.troupe.job_error, Path(scene.troupe.job_log).read_text(encoding="utf-8"))
    assert tagged_objects(scene) == [] and not scene.troupe.job_imported
    assert_reaped(job.pid)


def test_a_killed_worker_fails_with_its_log(ext, scene, monkeypatch):
    ops = ext.addon.ops_run
    monkeypatch.setenv("TEST_STAGE_DELAY", "4")
    job = ops.submit(bpy.context, scene)
    tick_until(ops, scene, lambda: scene.troupe.job_stage == "second")
    os.kill(job.pid, signal.SIGKILL)
    tick_until(ops, scene, lambda: not ops.QUEUE.busy(ops.scene_key(scene)), timeout=10)
    st = scene.troupe
    assert st.job_status == "FAILED" and "SIGKILL" in st.job_error and st.job_log in st.job_error
    assert Path(st.job_log).is_file() and tagged_objects(scene) == []
    assert_reaped(job.pid)


def test_a_second_run_waits_for_the_first(ext, scene, bundle_src, monkeypatch):
    ops = ext.addon.ops_run
    monkeypatch.setenv("TEST_STAGE_DELAY", "0.5")
    first = ops.submit(bpy.context, scene)
    other = Path(scene.troupe.video_path).with_name("second clip.mp4")
    other.write_bytes(b"x")
    scene.troupe.video_path = str(other)
    assert ops.submit(bpy.context, scene) is None, "queued"
    assert scene.troupe.job_queued == 1 and scene.troupe.job_status == "RUNNING"
    with pytest.raises(ValueError, match="already used"):
        ops.submit(bpy.context, scene)  # the same video again: its job folder is taken
    tick_until(ops, scene, lambda: not ops.QUEUE.busy(ops.scene_key(scene)))
    assert first.status == "done"
    assert scene.troupe.job_status == "DONE" and Path(scene.troupe.job_dir).name == "second clip"
    assert scene.troupe.job_queued == 0


def test_job_folder_is_per_video_and_beside_it_while_the_file_is_unsaved(ext, scene):
    ops = ext.addon.ops_run
    video = Path(scene.troupe.video_path)
    assert Path(ops.job_spec(bpy.context, scene).job_dir) == Path(scene.troupe.output_dir) / "clip é"
    scene.troupe.output_dir = "//troupe/"
    assert bpy.data.filepath == ""
    assert Path(ops.job_spec(bpy.context, scene).job_dir) == video.parent / "troupe" / "clip é"


def test_the_pose_prior_preference_reaches_the_worker(ext, prefs, scene):
    """The preferences' pose prior file goes to the worker as --pose-prior, absolute; empty, no flag."""
    ops = ext.addon.ops_run
    assert "--pose-prior" not in ops.job_spec(bpy.context, scene).argv()
    prefs.pose_prior_file = str(Path(scene.troupe.output_dir) / "priors" / "amass.npz")
    try:
        argv = ops.job_spec(bpy.context, scene).argv()
    finally:
        prefs.pose_prior_file = ""
    assert argv[argv.index("--pose-prior") + 1] == str(Path(scene.troupe.output_dir) / "priors" / "amass.npz")


def test_a_start_from_another_tool_reaches_the_worker(ext, scene):
    """The Advanced panel's start file goes to the worker as --motion-init, absolute; a pickled one
    is read only where its trust box is ticked, and that trust does not carry over to another file."""
    ops, st = ext.addon.ops_run, scene.troupe
    st.motion_init = str(Path(st.output_dir) / "gvhmr" / "result.npz")
    try:
        argv = ops.job_spec(bpy.context, scene).argv()
        assert argv[argv.index("--motion-init") + 1] == st.motion_init and "--allow-pickle" not in argv
        st.motion_init = str(Path(st.output_dir) / "phalp" / "tracks.pkl")
        assert "--allow-pickle" not in ops.job_spec(bpy.context, scene).argv()
        st.motion_init_pickle = True
        assert "--allow-pickle" in ops.job_spec(bpy.context, scene).argv()
        st.motion_init = str(Path(st.output_dir) / "gvhmr" / "result.npz")
        assert "--allow-pickle" not in ops.job_spec(bpy.context, scene).argv()
    finally:
        st.motion_init, st.motion_init_pickle = "", False


def test_missing_environment_is_reported_without_starting(ext, prefs, scene):
    saved = prefs.python_path
    prefs.python_path = str(Path(scene.troupe.output_dir) / "no env" / "python")
    try:
        with pytest.raises(RuntimeError, match="Set up environment"):
            bpy.ops.troupe.run()
    finally:
        prefs.python_path = saved
    assert scene.troupe.job_status == "FAILED" and "was not found" in scene.troupe.job_error


def test_no_video_is_a_clear_error(ext, scene):
    scene.troupe.video_path = ""
    with pytest.raises(RuntimeError, match="choose a video"):
        bpy.ops.troupe.run()
    scene.troupe.video_source = "CLIP"
    with pytest.raises(RuntimeError, match="choose a video file \\(or a movie clip\\)"):
        bpy.ops.troupe.run()
    assert scene.troupe.job_status == "NONE"


def test_job_state_survives_saving_and_reopening(ext, scene, tmp_path, monkeypatch):
    ops = ext.addon.ops_run
    monkeypatch.setenv("TEST_STAGE_DELAY", "4")
    ops.submit(bpy.context, scene)
    tick_until(ops, scene, lambda: scene.troupe.job_stage == "first")
    job_dir = scene.troupe.job_dir
    saved = tmp_path / "während des Laufs.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved), copy=True)
    name = scene.name
    bpy.ops.wm.open_mainfile(filepath=str(saved))  # stops this file's jobs, like quitting Blender
    st = bpy.data.scenes[name].troupe
    assert st.job_status == "INTERRUPTED" and st.job_dir == job_dir
    assert "Run again to resume" in st.job_error
    assert not ops.QUEUE.busy(ops.scene_key(bpy.data.scenes[name]))
