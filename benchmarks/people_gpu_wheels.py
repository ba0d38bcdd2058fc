"""Wheels the people stage's sam2 / ViTPose run needs on a GPU machine without internet
(Python 3.12, x86-64; torch and transformers already there).

    python benchmarks/people_gpu_wheels.py [--dest .whl/people] [--with-core]

Then on the GPU machine::

    python -m pip install --no-index --no-deps .whl/people/*.whl
    python -m pytest -q tests/core/test_people_sam2.py          # CPU and CUDA (the gpu test) plumbing

sam2 1.1.0, antlr4-python3-runtime 4.9.3 and iopath 0.1.10 come as source only: they are built here into pure
Python wheels (sam2 without its optional CUDA extension, SAM2_BUILD_CUDA=0). ``--with-core`` adds
the core's compiled dependencies the stage uses (opencv-python-headless, scipy, pillow) and ai-edge-litert
(the offline backend) for a machine that has only torch, numpy and transformers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BINARY = ["hydra-core==1.3.2", "omegaconf==2.3.1", "portalocker==4.4.2", "PyYAML==6.0.4"]
SOURCE_ONLY = ["sam2==1.1.0", "antlr4-python3-runtime==4.9.3", "iopath==0.1.10"]
CORE = ["opencv-python-headless==5.0.0.93", "scipy==1.17.1", "pillow==13.0.0", "ai-edge-litert==2.3.0", "flatbuffers==25.12.19"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[1] / ".whl" / "people")
    p.add_argument("--with-core", action="store_true")
    args = p.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    pkgs = BINARY + (CORE if args.with_core else [])
    rc = subprocess.call([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                          "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                          "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                          "--platform", "any", "-d", str(args.dest), *pkgs])  # fmt: skip
    env = dict(os.environ, SAM2_BUILD_CUDA="0")
    rc = rc or subprocess.call([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                                str(args.dest), *SOURCE_ONLY], env=env)  # fmt: skip
    if rc == 0:
        wheels = sorted(args.dest.glob("*.whl"))
        print(f"{len(wheels)} wheels, {sum(f.stat().st_size for f in wheels) / 2**20:.1f} MiB in {args.dest}")
        for w in wheels:
            print("  ", w.name)
    return rc


if __name__ == "__main__":
    sys.exit(main())
