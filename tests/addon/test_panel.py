"""The Troupe panel, its sub-panels and the preferences draw without errors in every job state.

The bpy module has no window to draw into, so ``draw`` runs against a recording layout that
checks what Blender would check: every property exists on its data, every operator and its
properties exist, every icon is a real icon. Each state is then checked for what a user must
see (a progress bar and Cancel while running, the error and the log while failed, Import after
a run).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

bpy = pytest.importorskip("bpy")

from tests.addon.troupe_extension import disable_extension, enable_extension  # noqa: E402

ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class OpProps:
    """What ``layout.operator`` returns: assigning a property the operator lacks is an error."""

    def __init__(self, idname: str):
        module, name = idname.split(".")
        self.__dict__["_names"] = set(getattr(getattr(bpy.ops, module), name).get_rna_type().properties.keys())

    def __setattr__(self, key: str, value: Any) -> None:
        assert key in self._names, f"the operator has no property {key!r}"
        self.__dict__[key] = value


class Layout:
    """Records what a draw function puts on screen."""

    def __init__(self, log: list[tuple[str, Any]]):
        self.log = log
        self.enabled = True

    def _child(self, *args: Any, **kw: Any) -> Layout:
        return Layout(self.log)

    row = column = box = split = column_flow = grid_flow = _child

    def _icon(self, kw: dict[str, Any]) -> None:
        assert kw.get("icon", "NONE") in ICONS, f"no such icon {kw.get('icon')!r}"

    def prop(self, data: Any, name: str, **kw: Any) -> None:
        assert name in data.bl_rna.properties, f"{data.bl_rna.identifier} has no property {name!r}"
        self._icon(kw)
        getattr(data, name)
        self.log.append(("prop", name))

    def operator(self, idname: str, **kw: Any) -> OpProps:
        self._icon(kw)
        self.log.append(("operator", kw.get("text", idname)))
        return OpProps(idname)

    def label(self, text: str = "", **kw: Any) -> None:
        self._icon(kw)
        self.log.append(("label", text))

    def progress(self, factor: float = 0.0, type: str = "BAR", text: str = "") -> None:
        assert 0.0 <= factor <= 1.0 and type in ("BAR", "RING")
        self.log.append(("progress", (round(factor, 3), text)))

    def separator(self, **kw: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    ext = enable_extension(tmp_path_factory.mktemp("extensions"))
    yield ext
    disable_extension()


def draw(panel_cls: Any, scene: Any, width: int = 320) -> list[tuple[str, Any]]:
    log: list[tuple[str, Any]] = []
    ctx = SimpleNamespace(scene=scene, region=SimpleNamespace(width=width), preferences=bpy.context.preferences)
    panel_cls.draw(SimpleNamespace(layout=Layout(log)), ctx)
    return log


def texts(log: list[tuple[str, Any]], kind: str) -> list[Any]:
    return [v for k, v in log if k == kind]


STATES = ["NONE", "QUEUED", "RUNNING", "CANCELLING", "DONE", "FAILED", "CANCELLED", "INTERRUPTED"]


@pytest.fixture()
def scene(ext):
    scene = bpy.data.scenes.new("panel test")
    yield scene
    bpy.data.scenes.remove(scene)


def set_state(scene: Any, status: str) -> None:
    st = scene.troupe
    st.job_status = status
    st.job_dir = "/jobs/clip ü"
    st.job_log = "/jobs/clip ü/troupe.log"
    st.job_stage = "motion"
    st.job_fraction = 0.42
    st.job_message = "fitting frame 12 of 40"
    st.job_elapsed = 62.0
    st.job_eta = 100.0
    st.job_queued = 2 if status == "RUNNING" else 0
    st.job_bundle = "/jobs/clip ü/bundle" if status == "DONE" else ""
    st.job_error = ("SMPL-X body model not found: expected the file SMPLX_NEUTRAL.npz. Looked in:\n"
                    "  - /a/very/long/path/that/needs/wrapping/in/a/narrow/panel/SMPLX_NEUTRAL.npz\n"
                    "Download it from the authors.") if status in ("FAILED", "CANCELLED", "INTERRUPTED") else ""  # fmt: skip


@pytest.mark.parametrize("status", STATES)
@pytest.mark.parametrize("source", ["FILE", "CLIP"])
def test_every_panel_draws_in_every_state(ext, scene, status, source):
    scene.troupe.video_source = source
    set_state(scene, status)
    panels = ext.addon.panel
    for cls in (panels.TROUPE_PT_main, panels.TROUPE_PT_advanced, panels.TROUPE_PT_environment):
        for width in (160, 600):
            draw(cls, scene, width)


def test_advanced_asks_for_trust_only_for_a_pickled_start(ext, scene):
    advanced = ext.addon.panel.TROUPE_PT_advanced
    assert "motion_init" in texts(draw(advanced, scene), "prop")
    scene.troupe.motion_init = "//gvhmr/result.npz"
    assert "motion_init_pickle" not in texts(draw(advanced, scene), "prop")
    for pickled in ("//phalp/tracks.PKL", "//4dhumans/results.joblib"):  # what the worker reads as a pickle
        scene.troupe.motion_init = pickled
        assert "motion_init_pickle" in texts(draw(advanced, scene), "prop")


def test_running_shows_stage_progress_times_and_cancel(ext, scene):
    set_state(scene, "RUNNING")
    log = draw(ext.addon.panel.TROUPE_PT_main, scene)
    assert texts(log, "progress") == [(0.42, "42 %")]
    labels = texts(log, "label")
    assert "Motion" in labels and "fitting frame 12 of 40" in labels
    assert "Elapsed 1:02  ·  about 1:40 left" in labels
    assert "Cancel" in texts(log, "operator") and "Queue Another Run" in texts(log, "operator")
    assert "2 more queued" in labels


def test_failed_shows_the_whole_error_and_the_log(ext, scene):
    set_state(scene, "FAILED")
    log = draw(ext.addon.panel.TROUPE_PT_main, scene, width=200)
    labels = texts(log, "label")
    assert "Failed" in labels
    shown = " ".join(labels)
    assert "SMPLX_NEUTRAL.npz" in shown and "wrapping/in/a/narrow" in shown.replace(" ", "")
    assert max(len(t) for t in labels) <= 200 // 7, "long lines are wrapped to the panel"
    assert {"Open Log", "Job Folder", "Run (resumes)"} <= set(texts(log, "operator"))
    assert not texts(log, "progress")


def test_done_offers_import_and_idle_offers_only_run(ext, scene):
    set_state(scene, "DONE")
    assert "Import Result" in texts(draw(ext.addon.panel.TROUPE_PT_main, scene), "operator")
    set_state(scene, "NONE")
    assert texts(draw(ext.addon.panel.TROUPE_PT_main, scene), "operator") == ["Run"]


def test_clip_source_names_the_clip_or_says_there_is_none(ext, scene):
    scene.troupe.video_source = "CLIP"
    assert "No active movie clip in this scene" in texts(draw(ext.addon.panel.TROUPE_PT_main, scene), "label")


class Drawn:
    """``self`` for a draw method: the real datablock, with the recording layout."""

    def __init__(self, real: Any, layout: Layout):
        self.__dict__.update(_real=real, layout=layout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def draw_prefs(prefs: Any) -> list[tuple[str, Any]]:
    log: list[tuple[str, Any]] = []
    type(prefs).draw(Drawn(prefs, Layout(log)), SimpleNamespace(preferences=bpy.context.preferences))
    return log


def test_preferences_draw_idle_and_during_set_up(ext, tmp_path):
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    prefs.show_setup_options = True
    item = prefs.candidates.add()
    item.path, item.label, item.usable = "/usr/bin/python3", "Python 3.11.2 (PATH): /usr/bin/python3", True
    ops, runner = ext.addon.ops_run, ext.addon.runner
    try:
        log = draw_prefs(prefs)
        assert {"Find", "Use"} <= set(texts(log, "operator"))
        assert {"Set Up Environment", "Repair"} & set(texts(log, "operator"))
        # During a set-up: the stage, a bar, the log's last lines and Cancel.
        (tmp_path / "env-setup.log").write_text("Collecting torch==2.13.0\nDownloading torch (190 MB)\n")
        job = runner.Job(["python"], tmp_path / "env-setup.log", python="python")
        job.status, job.stage, job.fraction = runner.RUNNING, "install", 0.3
        job.process = SimpleNamespace(returncode=lambda: None)  # alive
        ops.SETUP.job, ops.SETUP.mode = job, "INSTALL"
        log = draw_prefs(prefs)
    finally:
        ops.SETUP.job = None
        prefs.candidates.clear()
        prefs.show_setup_options = False
    assert texts(log, "progress") == [(0.3, "30 %")]
    assert "Downloading torch (190 MB)" in texts(log, "label") and "Cancel" in texts(log, "operator")
