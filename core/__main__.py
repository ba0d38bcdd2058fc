"""Troupe core command line: ``python -m core <command> ...`` (checkout on PYTHONPATH).

Commands are loaded lazily, so ``validate`` needs numpy alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with add_arguments(parser) and main(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("core.worker", "reconstruct a video into a job directory and result bundle"),
    "validate": ("core.validate_cli", "check a result bundle and list every problem"),
    "synth": ("core.synth.cli", "render a synthetic multi-person scene with ground truth"),
    "eval": ("core.evaluate", "compare a predicted bundle with a ground-truth bundle"),
    "standin": ("core.body.standin", "generate the SMPL-X-shaped test stand-in body model"),
    "pose-prior": ("core.motion.pose_prior", "build a learned pose prior from motion capture (AMASS / SMPL-X npz)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module)
            sp.description = (modules[name].__doc__ or help_text).strip()
            sp.formatter_class = argparse.RawDescriptionHelpFormatter
            modules[name].add_arguments(sp)
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
