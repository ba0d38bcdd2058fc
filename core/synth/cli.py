"""Render a synthetic video of several people walking, with exact ground truth.

    python -m core synth --out DIR --people N --frames T --size WxH --seed S
                         [--camera static|orbit] [--fps F] [--body-model PATH]

Writes DIR/video.mp4, DIR/bundle/ (the ground-truth result bundle: camera, each person's SMPL-X
motion and rig) and DIR/gt/ (tracks.json, COCO-17 keypoints with occlusion flags, boxes and
per-pixel person labels); see docs/formats.md. Without --body-model the generated stand-in body
(not SMPL-X; made on first use in the checkout's .cache/standin/) is used and the bundle says so.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .scene import SynthConfig

CHECKOUT = Path(__file__).resolve().parents[2]
STANDIN_CACHE = CHECKOUT / ".cache" / "standin"


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must look like 640x360 (width x height), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    p.add_argument("--out", required=True, help="output folder (created; existing files are replaced)")
    p.add_argument("--people", type=int, default=d.people, help=f"number of people (default {d.people})")
    p.add_argument("--frames", type=int, default=d.frames, help=f"number of frames (default {d.frames})")
    p.add_argument("--size", type=_size, default=d.size, metavar="WxH",
                   help=f"frame size in pixels (default {d.size[0]}x{d.size[1]})")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="random seed: the same seed gives the same scene")
    p.add_argument("--camera", choices=("static", "orbit"), default=d.camera,
                   help="static, or a slow orbit around the scene centre (default static)")  # fmt: skip
    p.add_argument("--fps", type=float, default=d.fps, help=f"frame rate (default {d.fps:g})")
    p.add_argument("--body-model", metavar="PATH",
                   help="SMPL-X model file or folder (SMPLX_NEUTRAL.npz); default: the generated stand-in")  # fmt: skip


def load_body_model(path: str | None):  # type: ignore[no-untyped-def]
    """The body model to render: the user's SMPL-X, or the stand-in (generated on first use)."""
    from ..body.model import BodyModel

    if path:
        return BodyModel(path)
    from ..body.standin import ensure_standin

    return BodyModel(ensure_standin(STANDIN_CACHE, genders=("neutral",)))


def main(args: argparse.Namespace) -> int:
    from ..body.model import BodyModelNotFound
    from .generate import generate

    try:
        cfg = SynthConfig(people=args.people, frames=args.frames, size=args.size, seed=args.seed, camera=args.camera,
                          fps=args.fps)  # fmt: skip
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    try:
        model = load_body_model(args.body_model)
    except BodyModelNotFound as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 1

    def progress(frac: float, msg: str) -> None:
        print(f"\r[{frac * 100:5.1f}%] {msg:<40}", end="", file=sys.stderr, flush=True)

    res = generate(cfg, args.out, model, progress=progress)
    print(file=sys.stderr)
    s = res.seconds
    print(f"{res.out}: {cfg.people} people, {cfg.frames} frames {cfg.size[0]}x{cfg.size[1]} at {cfg.fps:g} fps "
          f"({'stand-in body' if model.standin else 'SMPL-X'}); {sum(s.values()):.1f} s "
          f"(plan {s['plan']:.1f}, bodies {s['body']:.1f}, render {s['render']:.1f}, write {s['write']:.1f})")  # fmt: skip
    print(f"  video  {res.video}\n  bundle {res.bundle}\n  gt     {res.gt}")
    return 0
