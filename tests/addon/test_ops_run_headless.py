"""scripts/reconstruct.py under the bpy module: worker, import and save in one command.

(Under ``blender -b --python-exit-code 1 -P scripts/reconstruct.py -- ...`` the same script runs;
no Blender executable is installed here.) The worker runs the small test stages of
``fake_env_python``, whose last stage writes a ``bundle_factory`` bundle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from tests.addon.troupe_extension import CORE_PYTHON, ROOT, fake_env_python, load_troupe_module  # noqa: E402

pytestmark = pytest.mark.skipif(not CORE_PYTHON.exists(), reason="needs .venv/core (scripts/setup.sh core)")
SCRIPT = ROOT / "scripts" / "reconstruct.py"


@pytest.fixture(scope="module")
def bundle_src(tmp_path_factory) -> Path:
    load_troupe_module("core.bundle")
    from tests.addon.bundle_factory import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "bundle", people=2, frames=6)


def reconstruct(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))  # fmt: skip


def test_one_command_runs_the_worker_imports_and_saves(tmp_path, bundle_src):
    folder = tmp_path / "Projekt ü 舞蹈"
    folder.mkdir()
    video = folder / "take 1.mp4"
    video.write_bytes(b"read by the test stages only")
    out = folder / "scène.blend"
    python = fake_env_python(tmp_path)
    proc = reconstruct(str(video), "--out", str(out), "--env", python, "--max-people", "3",
                       env={"TEST_BUNDLE_SRC": str(bundle_src), "TEST_STAGE_DELAY": "0.5"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Troupe: second" in proc.stdout and f"saved {out}" in proc.stdout, "progress is printed"
    with bpy.data.libraries.load(str(out)) as (data_from, _):
        objects = list(data_from.objects)
    assert {"p0", "p1"} <= set(objects), objects
    job = folder / "troupe" / "take 1"
    config = (job / "config.json").read_text(encoding="utf-8")
    assert '"max_people": 3' in config and (job / "troupe.log").is_file()

    # Again: the job folder is resumed (no stage runs twice) and the scene saved again.
    proc = reconstruct(str(video), "--out", str(out), "--env", python, "--max-people", "3",
                       env={"TEST_BUNDLE_SRC": str(bundle_src)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (job / "calls.txt").read_text().split() == ["first", "second"]


def test_failure_exits_1_with_the_reason(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    proc = reconstruct(str(video), "--out", str(tmp_path / "out.blend"), "--env", str(tmp_path / "none" / "python"))
    assert proc.returncode == 1
    assert "was not found" in proc.stderr and str(tmp_path / "none" / "python") in proc.stderr
    assert not (tmp_path / "out.blend").exists()
