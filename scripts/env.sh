# Sourced by the project's scripts: paths and environment shared by set-up, demo and tests.
# Keeps Blender's user resources and caches inside the checkout, never in the home folder.
TROUPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TROUPE_ROOT
export TROUPE_CORE_PYTHON="$TROUPE_ROOT/.venv/core/bin/python"
export TROUPE_BLENDER_PYTHON="$TROUPE_ROOT/.venv/blender/bin/python"
export BLENDER_USER_RESOURCES="$TROUPE_ROOT/.cache/blender"
export XDG_CACHE_HOME="$TROUPE_ROOT/.cache/xdg"
export MPLCONFIGDIR="$TROUPE_ROOT/.cache/matplotlib"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$BLENDER_USER_RESOURCES" "$XDG_CACHE_HOME"
