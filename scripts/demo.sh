#!/usr/bin/env bash
# The main job on the built-in sample: set up what is missing, make the sample clip (three
# people walking, rendered with known ground truth), reconstruct it with the CPU path (people
# from the sample's tracks, SMPL-X motion and camera fitted, Gaussian avatars optimised), compare
# with the ground truth, import the result into Blender, save out/demo/scene.blend and render
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

echo "== sample clip: $OUT/synth (synthetic, with ground truth)"
"${CORE[@]}" synth --out "$OUT/synth" --people 3 --frames 32 --size 480x270 --seed 7

# The demo body model is the generated stand-in (test/demo data, not SMPL-X): synth made it.
echo "== reconstruct: $OUT/job (the log is $OUT/job/troupe.log)"
rm -rf "$OUT/job"  # the demo shows a whole run; a user's job folder resumes instead
"${CORE[@]}" run "$OUT/synth/video.mp4" --out "$OUT/job" --tracker import --tracks "$OUT/synth" \
  --quality preview --body-model .cache/standin --progress text

echo "== accuracy against the sample's ground truth"
"${CORE[@]}" eval "$OUT/job/bundle" "$OUT/synth/bundle" --json "$OUT/eval.json"

echo "== import into Blender: $OUT/scene.blend, $OUT/preview.png"
.venv/blender/bin/python scripts/import_bundle.py "$OUT/job/bundle" --out "$OUT/scene.blend" \
  --render "$OUT/preview.png" --frame 16
echo "done: $OUT/scene.blend $OUT/preview.png"
