"""The preferences' environment set-up, for real: a new virtual environment made from this
machine's Python 3.11 in a temporary folder, PyTorch installed into it, verified, broken and
repaired.

To stay cheap the test installs a small requirements file (``torch==2.13.0`` - the CPU build on
this machine's disk - and numpy) through the set-up's "requirements file" option instead of the
whole GPU group; the group's contents are checked in test_envsetup.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from tests.addon.troupe_extension import disable_extension, enable_extension  # noqa: E402

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the CPU torch wheel on this disk is cp311")


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    ext = enable_extension(tmp_path_factory.mktemp("extensions"))
    yield ext
    disable_extension()


def report_of(prefs) -> dict:
    return json.loads(prefs.env_report)


def test_set_up_creates_a_working_environment_and_repair_mends_it(ext, tmp_path):
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    env_dir = tmp_path / "GPU Umgebung ü"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.13.0\nnumpy\n")
    prefs.base_python = sys.executable  # this machine's Python 3.11 (itself a venv: its base is used)
    prefs.env_dir = str(env_dir)
    prefs.requirements_file = str(requirements)
    prefs.python_path = ""
    try:
        if not bpy.app.online_access:  # as in the bpy module: a package source must be set explicitly
            with pytest.raises(RuntimeError, match="online access is off"):
                bpy.ops.troupe.env_setup(mode="INSTALL")
            assert not env_dir.exists()
        # pip options: this machine's folder of wheels (pip's own configuration adds its indexes), and no
        # byte-compiling of PyTorch's thousands of files (half of the install's CPU time).
        prefs.package_source = "--no-compile" + (" --find-links /opt/wheels" if Path("/opt/wheels").is_dir() else "")
        assert bpy.ops.troupe.env_setup(mode="INSTALL") == {"FINISHED"}
        python = env_dir / "bin" / "python"
        assert prefs.python_path == str(python)
        report = report_of(prefs)
        assert report["problems"] == [], report
        assert report["torch"].startswith("2.13.0") and report["cuda"] is False and report["isolated"] is True
        assert report["core"], "the core imports from the extension folder"
        ok, lines = ext.addon.prefs.environment_summary(bpy.context)
        assert ok and any("PyTorch 2.13.0" in ln and "no GPU" in ln for ln in lines)
        # Its own environment: no system site packages, torch importable by itself.
        assert "include-system-site-packages = false" in (env_dir / "pyvenv.cfg").read_text()
        out = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.stdout.strip().startswith("2.13.0"), out.stderr
        assert (env_dir.parent / f"{env_dir.name}-setup.log").read_text().count("Successfully installed") >= 1

        # Break it, Check finds the problem, Repair mends it.
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "numpy"], check=True, timeout=120)
        assert bpy.ops.troupe.env_setup(mode="CHECK") == {"FINISHED"}
        assert report_of(prefs)["problems"] == ["numpy is not installed"]
        assert ext.addon.prefs.environment_summary(bpy.context)[0] is False
        assert bpy.ops.troupe.env_setup(mode="INSTALL") == {"FINISHED"}
        assert report_of(prefs)["problems"] == []
    finally:
        prefs.base_python = prefs.env_dir = prefs.requirements_file = prefs.python_path = prefs.env_report = ""
        prefs.package_source = ""


def test_set_up_with_an_unusable_python_says_so(ext, tmp_path):
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    prefs.base_python = str(tmp_path / "no python here")
    prefs.env_dir = str(tmp_path / "env")
    prefs.package_source = "--prefer-binary"
    try:
        with pytest.raises(RuntimeError, match="the Python to create the environment with was not found.*Choose a Python 3.11"):
            bpy.ops.troupe.env_setup(mode="INSTALL")
    finally:
        prefs.base_python = prefs.env_dir = prefs.package_source = ""
    assert not (tmp_path / "env").exists()


def test_find_python_lists_this_machines_interpreters(ext):
    prefs = bpy.context.preferences.addons[ext.__name__].preferences
    try:
        assert bpy.ops.troupe.find_python() == {"FINISHED"}
        usable = [c for c in prefs.candidates if c.usable]
        assert usable and prefs.base_python == usable[0].path
        assert all(Path(c.path).name.startswith("python") for c in usable)
    finally:
        prefs.candidates.clear()
        prefs.base_python = ""
