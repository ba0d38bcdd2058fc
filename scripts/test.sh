#!/usr/bin/env bash
# Set up what is missing, then run the whole suite: lint, type check, core tests, add-on tests.
# Extra arguments go to both pytest runs (e.g. -k name, -x).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TROUPE_ROOT"
scripts/setup.sh all

echo "== ruff (whole tree)"
.venv/core/bin/ruff check .
echo "== mypy (addon/ against the Blender 4.2 API stubs)"
.venv/blender/bin/mypy
echo "== core tests (.venv/core)"
.venv/core/bin/python -m pytest tests/core "$@"
echo "== add-on tests (.venv/blender, bpy $(.venv/blender/bin/python -c 'import importlib.metadata as m; print(m.version("bpy"))'))"
.venv/blender/bin/python -m pytest tests/addon "$@"
echo "== add-on tests on the oldest supported Blender (.venv/blender42, bpy 4.2 LTS; the environment set-up test is version-independent and runs once, above)"
.venv/blender42/bin/python -m pytest tests/addon --ignore=tests/addon/test_envsetup.py "$@"
