"""The GPU environment set-up helpers (addon/envsetup.py), without Blender.

The set-up itself (a real environment with PyTorch, made by the preferences' operator) is
tested in test_envsetup_blender.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.addon.troupe_extension import ROOT, load_troupe_module

envsetup = load_troupe_module("addon.envsetup")


def test_gpu_group_is_the_core_group_plus_the_cuda_parts():
    core = envsetup.group_requirements("core")
    gpu = envsetup.group_requirements("gpu")
    assert "torch==2.13.0" in core and "smplx==0.1.28" in core
    assert gpu[: len(core)] == core and "gsplat==1.5.3" in gpu
    assert not any(isinstance(r, dict) for r in gpu), "include-group entries are resolved"


def test_unknown_group_and_include_loops_are_named(tmp_path):
    with pytest.raises(ValueError, match="no dependency group 'nope'"):
        envsetup.group_requirements("nope")
    p = tmp_path / "pyproject.toml"
    p.write_text('[dependency-groups]\na = [{include-group = "b"}]\nb = [{include-group = "a"}]\n')
    with pytest.raises(ValueError, match="includes itself"):
        envsetup.group_requirements("a", p)


@pytest.mark.parametrize(
    ("req", "name", "pin"),
    [("torch==2.13.0", "torch", "2.13.0"), ("numpy>=1.26,<3", "numpy", None),
     ("opencv-python-headless==5.0.0.93", "opencv-python-headless", "5.0.0.93"),
     ("gsplat == 1.5.3 ; platform_system != 'Darwin'", "gsplat", "1.5.3"), ("trimesh", "trimesh", None)],
)  # fmt: skip
def test_requirement_names_and_pins(req, name, pin):
    assert envsetup.requirement_name(req) == name
    assert envsetup.pinned_version(req) == pin


def test_probe_python_reads_version_and_rejects_old_ones(tmp_path):
    info = envsetup.probe_python(sys.executable)
    assert info.usable and info.version[:2] == sys.version_info[:2]
    old = tmp_path / "python2"
    old.write_text('#!/bin/sh\necho \'{"version": [3, 8, 10], "missing": []}\'\n')
    old.chmod(0o755)
    assert "too old" in envsetup.probe_python(str(old)).problem
    novenv = tmp_path / "python3"
    novenv.write_text('#!/bin/sh\necho \'{"version": [3, 12, 3], "missing": ["ensurepip"]}\'\n')
    novenv.chmod(0o755)
    assert "python3.12-venv" in envsetup.probe_python(str(novenv)).problem
    assert "cannot be run" in envsetup.probe_python(str(tmp_path / "missing")).problem


def test_find_pythons_lists_usable_ones_first(tmp_path):
    found = envsetup.find_pythons(extra=[str(tmp_path / "missing")])
    assert found and found[0].usable
    usable = [i.usable for i in found]
    assert usable == sorted(usable, reverse=True), "usable ones first"
    (missing,) = [i for i in found if i.path == str(tmp_path / "missing")]
    assert not missing.usable and "missing" in missing.label()
    assert len({Path(i.path).resolve() for i in found}) == len(found), "no interpreter twice"


def test_check_of_a_folder_without_environment_is_one_error(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "addon" / "envsetup.py"), "--env", str(tmp_path / "env"), "--check"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert [m["type"] for m in lines] == ["start", "error"] and out.returncode == 2
    assert "no environment in" in lines[-1]["message"] and "run the set-up" in lines[-1]["message"]


def test_recreate_never_deletes_a_folder_that_is_not_an_environment(tmp_path):
    folder = tmp_path / "my files"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (tmp_path / "none.txt").write_text("")
    out = subprocess.run([sys.executable, str(ROOT / "addon" / "envsetup.py"), "--env", str(folder), "--recreate",
                          "--requirements", str(tmp_path / "none.txt")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    last = json.loads(out.stdout.splitlines()[-1])
    assert last["type"] == "error" and "not a Python environment" in last["message"]
    assert (folder / "precious.txt").read_text() == "keep me"


def test_summary_names_gpu_or_its_absence_and_each_problem():
    gpu = {"python": "3.12.3", "executable": "/e/bin/python", "torch": "2.11.0+cu130", "cuda": True,
           "cuda_version": "13.0", "gpu": "NVIDIA H100", "gpu_memory_gb": 79.1, "problems": []}  # fmt: skip
    assert envsetup.summarize(gpu)[1] == "PyTorch 2.11.0+cu130, CUDA 13.0: NVIDIA H100 (79.1 GB)"
    cpu = {"torch": "2.13.0+cpu", "cuda": False, "cuda_version": None, "problems": ["gsplat is not installed"]}
    lines = envsetup.summarize(cpu)
    assert "CPU-only build" in lines[0] and lines[-1] == "Problem: gsplat is not installed"


def test_the_extension_zip_carries_the_core_and_its_requirements(tmp_path):
    """The zip scripts/build_extension.py makes (Blender's own builder) holds what the set-up and the worker need."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("needs the bpy module (Blender's extension builder)")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (zip_path,) = tmp_path.glob("*.zip")
    names = set(zipfile.ZipFile(zip_path).namelist())
    for needed in ("pyproject.toml", "core/__main__.py", "core/worker.py", "core/pipeline.py", "core/bundle.py",
                   "addon/envsetup.py", "addon/runner.py"):  # fmt: skip
        assert needed in names, f"{needed} is missing from the extension zip"
    assert not any(n.startswith(("tests/", ".venv/", "scripts/")) for n in names)
    extracted = tmp_path / "ext"
    zipfile.ZipFile(zip_path).extract("pyproject.toml", extracted)
    assert envsetup.group_requirements("gpu", extracted / "pyproject.toml") == envsetup.group_requirements("gpu")
