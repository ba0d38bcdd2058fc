"""The extension is built and validated by Blender's own tool, then installed from the zip and
enabled the way a user does it, and its File > Import operator imports a bundle.

Runs in a separate Blender (bpy) process with its own user resources folder, so the install
neither touches the checkout's Blender settings nor meets the copy of the add-on these tests
import directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTALL_AND_USE = textwrap.dedent(
    """
    import sys, json
    import bpy

    zip_path, good, bad = sys.argv[1:4]
    out = {}
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    out["enabled"] = sorted(a.module for a in bpy.context.preferences.addons if a.module.endswith(".troupe"))
    out["menu_has_import"] = hasattr(bpy.ops.import_scene, "troupe_bundle")
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    out["import"] = sorted(bpy.ops.import_scene.troupe_bundle(filepath=good + "/bundle.json", splats=False))
    out["armatures"] = sorted(o.name for o in bpy.data.objects if o.type == "ARMATURE")
    out["person_ids"] = sorted(o.get("troupe_person_id", "") for o in bpy.data.objects if o.type == "ARMATURE")
    n_objects = len(bpy.data.objects)
    try:
        bpy.ops.import_scene.troupe_bundle(filepath=bad)
        out["bad"] = "no error"
    except RuntimeError as exc:  # background mode raises the operator's error reports
        out["bad"] = str(exc)
    out["objects_unchanged"] = len(bpy.data.objects) == n_objects
    print("RESULT " + json.dumps(out))
    """
)


def test_build_validate_install_enable_and_import(small_bundle, tmp_path):
    build = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    zip_path = Path(build.stdout.strip().splitlines()[-1])
    assert zip_path.is_file() and zip_path.name == "troupe-0.1.0.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "addon/importer.py" in names and "core/bundle.py" in names
    assert not [n for n in names if n.startswith(("tests/", ".venv/", "scripts/", ".cache/")) or "__pycache__" in n]

    bad = tmp_path / "bad"
    shutil.copytree(small_bundle, bad)
    meta = json.loads((bad / "bundle.json").read_text())
    meta["fps"] = -1
    (bad / "bundle.json").write_text(json.dumps(meta))
    script = tmp_path / "install.py"
    script.write_text(INSTALL_AND_USE)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(script), str(zip_path), str(small_bundle), str(bad)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["enabled"] == ["bl_ext.user_default.troupe"]
    assert out["menu_has_import"]
    assert out["import"] == ["FINISHED"]
    assert out["person_ids"] == ["p0", "p1"]
    assert "'fps' must be a positive number" in out["bad"]
    assert out["objects_unchanged"]
    # installed into the user repository, where Blender keeps extensions
    assert (tmp_path / "user" / "extensions" / "user_default" / "troupe" / "blender_manifest.toml").is_file()
