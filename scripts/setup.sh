#!/usr/bin/env bash
# Create or update the project's two environments (idempotent; re-runs only what changed):
#   .venv/core     the reconstruction core + CPU test tools (+ the GPU group where CUDA exists)
#   .venv/blender  Blender as a Python module (bpy), for add-on tests and headless imports
#   .venv/blender42  bpy 4.2 LTS, the oldest supported Blender, for the add-on tests only
# Usage: scripts/setup.sh [core|blender|blender42|all]   (default: all)
# PYTHON selects the interpreter used to create the environments (default: python3, 3.11).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TROUPE_ROOT"

PY="${PYTHON:-python3}"
what="${1:-all}"

ensure_env() {  # ensure_env NAME GROUP...
  local name="$1"; shift
  local venv=".venv/$name"
  local stamp="$venv/.troupe-setup"
  local want
  want="$(printf '%s\n' "$@"; sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[setup] $venv: installing groups $*" >&2
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  # pip >= 25.1 reads dependency groups from pyproject.toml (PEP 735).
  "$venv/bin/python" -m pip install -q --upgrade "pip>=25.1"
  local args=()
  for g in "$@"; do args+=(--group "$g"); done
  "$venv/bin/python" -m pip install -q "${args[@]}"
  printf '%s' "$want" > "$stamp"
}

if [ "$what" = core ] || [ "$what" = all ]; then
  groups=(core-test)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    groups+=(gpu)
  fi
  ensure_env core "${groups[@]}"
  # sam2 1.1.0 pins a CUDA torch: installed without its dependencies (hydra-core, iopath are in core).
  if ! .venv/core/bin/python -c "import sam2" 2>/dev/null; then
    SAM2_BUILD_CUDA=0 .venv/core/bin/python -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
  fi
fi
if [ "$what" = blender ] || [ "$what" = all ]; then
  ensure_env blender blender
fi
if [ "$what" = blender42 ] || [ "$what" = all ]; then
  ensure_env blender42 blender42
fi
