"""Check a Troupe result bundle against the v1 schema; print each problem and exit 1 if any."""

from __future__ import annotations

import argparse

from . import bundle


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (holds bundle.json)")


def main(args: argparse.Namespace) -> int:
    problems = bundle.validate(args.bundle)
    if problems:
        print(f"{args.bundle}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    b = bundle.read_bundle(args.bundle)
    print(
        f"{args.bundle}: valid Troupe bundle v{bundle.SCHEMA_VERSION}: {len(b.people)} people, "
        f"{b.frame_count} frames at {b.fps:g} fps, {b.image_size[0]}x{b.image_size[1]}"
    )
    return 0
