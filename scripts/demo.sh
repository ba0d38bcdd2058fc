#!/usr/bin/env bash
# The main job on the built-in sample: set up what is missing, make the sample clip,
# reconstruct it, import the result into Blender, save out/demo/scene.blend and render
# out/demo/preview.png.
#
#   out/demo/synth/    the sample: a synthetic multi-person clip with its ground truth
#   out/demo/job/      the reconstruction job (worker log, stage outputs, bundle/)
#   out/demo/scene.blend, out/demo/preview.png
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TROUPE_ROOT"
scripts/setup.sh core
scripts/setup.sh blender

OUT="${TROUPE_DEMO_OUT:-out/demo}"
mkdir -p "$OUT"
CORE=(.venv/core/bin/python -m core)

echo "== sample clip: $OUT/synth"
"${CORE[@]}" synth --out "$OUT/synth" --people 3 --frames 48 --size 640x360 --seed 7

BUNDLE="$OUT/synth/bundle"

echo "== import into Blender: $OUT/scene.blend, $OUT/preview.png"
.venv/blender/bin/python scripts/import_bundle.py "$BUNDLE" --out "$OUT/scene.blend" \
  --render "$OUT/preview.png" --frame 24
echo "done: $OUT/scene.blend $OUT/preview.png"
