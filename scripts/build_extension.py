# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and validate the Troupe Blender extension zip with Blender's own extension tool.

    python scripts/build_extension.py [--out DIR] [--blender-ext PATH] [--validate-only]

Runs ``blender_ext.py build`` and then ``blender_ext.py validate`` on the zip (the tool ships
inside Blender and inside the ``bpy`` wheel at ``addons_core/bl_pkg/cli/blender_ext.py``; it
runs with plain Python 3.11+). The package is built from a staging copy holding the files a
clean checkout has (git's tracked and not-ignored files), so caches and virtual environments
never end up in the zip; the manifest's ``[build]`` exclusions then apply as usual.
Prints the zip's path; exit status 1 when building or validation fails.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IGNORED_DIRS = {".git", ".venv", ".cache", "out", "build", "__pycache__", ".pytest_cache", ".mypy_cache",
                 ".ruff_cache", ".whl", ".gl", ".device"}  # fmt: skip


def find_blender_ext() -> Path:
    """blender_ext.py of the bpy module in this interpreter, or of the project's Blender venv."""
    candidates: list[str] = []
    spec = importlib.util.find_spec("bpy")  # located, not imported
    if spec is not None and spec.origin:
        candidates += glob.glob(str(Path(spec.origin).parent / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"))
    for venv in ("blender", "blender42"):
        candidates += glob.glob(str(ROOT / ".venv" / venv / "lib" / "python3*" / "site-packages" / "bpy" / "*"
                                    / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"))  # fmt: skip
    if not candidates:
        raise FileNotFoundError("blender_ext.py not found: pass --blender-ext, or set up .venv/blender (scripts/setup.sh blender)")
    return Path(candidates[0])


def checkout_files(root: Path) -> list[Path]:
    """Files of a clean checkout of ``root`` (relative paths)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True).stdout  # fmt: skip
        files = [Path(p) for p in out.decode().split("\0") if p]
        return [f for f in files if (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _IGNORED_DIRS]
            files += [Path(dirpath, f).relative_to(root) for f in filenames if not f.endswith((".pyc", ".zip"))]
        return files


def run_tool(tool: Path, *args: str) -> None:
    cmd = [sys.executable, str(tool), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed (exit status {proc.returncode})")


def build(out_dir: Path, tool: Path | None = None) -> Path:
    """Build the extension into ``out_dir``, validate the zip, return its path."""
    tool = tool or find_blender_ext()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="troupe-ext-") as tmp:
        stage = Path(tmp) / "troupe"
        for rel in checkout_files(ROOT):
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst)
        manifest = (stage / "blender_manifest.toml").read_text()
        ext_id = next(line.split("=")[1].strip().strip('"') for line in manifest.splitlines() if line.startswith("id "))
        version = next(line.split("=")[1].strip().strip('"') for line in manifest.splitlines() if line.startswith("version "))
        zip_path = out_dir / f"{ext_id}-{version}.zip"
        if zip_path.exists():
            zip_path.unlink()
        run_tool(tool, "build", "--source-dir", str(stage), "--output-filepath", str(zip_path))
    run_tool(tool, "validate", str(zip_path))
    return zip_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "build"), help="output folder (default build/)")
    p.add_argument("--blender-ext", help="path of blender_ext.py (default: the one in the bpy wheel)")
    p.add_argument("--validate-only", action="store_true", help="validate the checkout's manifest only")
    args = p.parse_args(argv)
    try:
        tool = Path(args.blender_ext) if args.blender_ext else find_blender_ext()
        if args.validate_only:
            run_tool(tool, "validate", str(ROOT))
            return 0
        print(build(Path(args.out), tool))
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"build_extension: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
