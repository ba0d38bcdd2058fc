"""scripts/import_bundle.py, the headless entry point, run as a user runs it (bpy module)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_bundle.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_import_render_export_and_save(small_bundle, tmp_path):
    proc = run(str(small_bundle / "bundle.json"), "--out", str(tmp_path / "scene.blend"), "--render",
               str(tmp_path / "preview.png"), "--frame", "10", "--width", "160", "--samples", "2",
               "--export-fbx", str(tmp_path / "fbx"), "--export-bvh", str(tmp_path / "bvh"))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "imported 2 people, frames 1-32" in proc.stdout
    assert (tmp_path / "scene.blend").stat().st_size > 100_000
    png = (tmp_path / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert width == 160
    assert sorted(p.name for p in (tmp_path / "fbx").iterdir()) == ["p0.fbx", "p1.fbx"]
    assert sorted(p.name for p in (tmp_path / "bvh").iterdir()) == ["p0.bvh", "p1.bvh"]


def test_invalid_bundle_exits_with_the_problems(small_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(small_bundle, bad)
    meta = json.loads((bad / "bundle.json").read_text())
    del meta["frame_count"]
    (bad / "bundle.json").write_text(json.dumps(meta))
    proc = run(str(bad), "--out", str(tmp_path / "scene.blend"))
    assert proc.returncode == 1
    assert "is not a valid Troupe bundle" in proc.stderr
    assert "bundle.json: missing field 'frame_count'" in proc.stderr
    assert not (tmp_path / "scene.blend").exists()
