"""The layout rules of DESIGN.md: core/ never imports bpy, addon/ never imports torch,
and the shared bundle module needs numpy alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLENDER_ONLY = {"bpy", "bmesh", "mathutils", "bpy_extras", "gpu", "blf", "bl_math", "addon_utils"}
HEAVY = {"torch", "torchvision", "gsplat", "smplx", "sam2", "transformers", "diffusers", "cv2", "scipy",
         "skimage", "trimesh", "mediapipe", "pycolmap"}  # fmt: skip


def imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return names


def offenders(folder: str, forbidden: set[str]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        hit = imported_top_modules(path) & forbidden
        if hit:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hit)}")
    return bad


def test_core_never_imports_blender_modules():
    assert offenders("core", BLENDER_ONLY) == []


def test_addon_never_imports_torch_or_other_heavy_ml():
    assert offenders("addon", HEAVY) == []


def test_the_scan_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import numpy\nfrom torch import nn\nimport importlib\nimportlib.import_module('bpy.types')\n")
    assert imported_top_modules(bad) >= {"torch", "bpy"}


def test_bundle_module_imports_with_numpy_alone():
    code = (
        "import sys; import core.bundle; import core.validate_cli; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(HEAVY | BLENDER_ONLY)!r}); print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
