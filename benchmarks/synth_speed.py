"""How long ``python -m core synth`` takes on this machine (CPU), per phase.

    .venv/core/bin/python benchmarks/synth_speed.py [--json OUT] [--sheet PNG] [--quick]

Runs the reference case (4 people x 60 frames at 640x360, static camera: the target is under a
minute on a 2-core machine) and variations (orbit camera, 1 and 8 people, 1280x720), each in a
fresh temporary folder with the stand-in body, and prints seconds per phase, seconds per frame
and the ratio to the reference. ``--sheet`` also writes a contact sheet of the reference clip
(frames with their COCO-17 keypoints: green visible, red hidden; below them the label image).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.body.model import BodyModel  # noqa: E402
from core.keypoints import COCO17_SKELETON  # noqa: E402
from core.synth.cli import STANDIN_CACHE  # noqa: E402
from core.synth.generate import generate  # noqa: E402
from core.synth.scene import SynthConfig  # noqa: E402

CASES = [
    ("reference 4p 60f 640x360 static", dict(people=4, frames=60, size=(640, 360), camera="static")),
    ("orbit camera", dict(people=4, frames=60, size=(640, 360), camera="orbit")),
    ("1 person", dict(people=1, frames=60, size=(640, 360), camera="static")),
    ("8 people", dict(people=8, frames=60, size=(640, 360), camera="static")),
    ("1280x720", dict(people=4, frames=60, size=(1280, 720), camera="static")),
]


def contact_sheet(out: Path, path: Path, tiles: int = 6) -> None:
    cap = cv2.VideoCapture(str(out / "video.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    with np.load(out / "gt" / "keypoints.npz") as z:
        kps = z["keypoints"]
    with np.load(out / "gt" / "labels.npz") as z:
        labels = z["labels"]
    tracks = json.loads((out / "gt" / "tracks.json").read_text())
    palette = np.zeros((256, 3), np.uint8)
    for i, p in enumerate(tracks["people"]):
        palette[i + 1] = p["color"][::-1]  # BGR
    cells = []
    for t in np.linspace(0, len(frames) - 1, tiles).astype(int):
        img = frames[t].copy()
        for person in kps[:, t]:
            for a, b in COCO17_SKELETON:
                if person[a, 2] > 0 and person[b, 2] > 0:
                    cv2.line(
                        img,
                        tuple(int(v) for v in person[a, :2]),
                        tuple(int(v) for v in person[b, :2]),
                        (255, 255, 255),
                        1,
                    )
            for x, y, v in person:
                cv2.circle(img, (int(x), int(y)), 2, (0, 220, 0) if v > 0 else (0, 0, 255), -1)
        cv2.putText(img, f"frame {t}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        cells.append(np.concatenate([img, palette[labels[t]]], axis=0))
    half = (len(cells) + 1) // 2
    rows = [np.concatenate(cells[:half], 1), np.concatenate(cells[half:] + cells[:0], 1)]
    if rows[1].shape != rows[0].shape:
        rows[1] = np.pad(rows[1], ((0, 0), (0, rows[0].shape[1] - rows[1].shape[1]), (0, 0)))
    cv2.imwrite(str(path), np.concatenate(rows, 0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--sheet", help="write a contact sheet PNG of the reference clip here")
    ap.add_argument("--quick", action="store_true", help="the reference case only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from core.body.standin import ensure_standin

    t0 = time.perf_counter()
    model = BodyModel(ensure_standin(STANDIN_CACHE, genders=("neutral",)))
    load_s = time.perf_counter() - t0
    rows = []
    for name, kw in CASES[:1] if args.quick else CASES:
        cfg = SynthConfig(seed=args.seed, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            res = generate(cfg, Path(tmp) / "scene", model)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            if args.sheet and not rows:
                contact_sheet(res.out, Path(args.sheet))
        rows.append({"case": name, **{k: v for k, v in kw.items() if k != "size"}, "size": list(kw["size"]),
                     "seconds": total, "cpu_seconds": cpu, "per_frame": total / cfg.frames, "phases": res.seconds})  # fmt: skip
    ref = rows[0]["seconds"]
    print(f"body model load {load_s:.1f} s (not included below)")
    print("wall-clock seconds (CPU seconds of this process in brackets: larger with BLAS threads,")
    print("smaller than wall when other work shares the machine)")
    print(
        f"{'case':<34} {'total s':>8} {'(cpu s)':>8} {'s/frame':>8} {'vs ref':>7}   plan  bodies  render  write"
    )
    for r in rows:
        p = r["phases"]
        print(f"{r['case']:<34} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['per_frame']:8.3f} {r['seconds'] / ref:7.2f}  "
              f"{p['plan']:5.1f} {p['body']:7.1f} {p['render']:7.1f} {p['write']:6.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"load_seconds": load_s, "cases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
