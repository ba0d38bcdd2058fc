"""Download the wheels the avatar GPU run needs on a machine without internet (Python 3.12, x86-64).

    python benchmarks/avatars_gpu_wheels.py [--dest .whl/avatars] [--with-core]

Then on the GPU machine (torch already installed there)::

    python -m pip install --no-index --no-deps .whl/avatars/*.whl

gsplat 1.5.3 is pure Python and compiles its CUDA kernels on first use (ninja, the CUDA
toolkit). ``--with-core`` adds the core's own compiled dependencies used by the avatar code
(opencv-python-headless, 61 MiB) for a machine that has only torch and numpy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

GSPLAT = [
    "gsplat==1.5.3",
    # gsplat's imports: jaxtyping (-> wadler-lindig), rich (-> markdown-it-py -> mdurl, pygments),
    # packaging; ninja builds its extension.
    "jaxtyping==0.3.11",
    "wadler-lindig==0.1.8",
    "rich==15.0.0",
    "markdown-it-py==4.3.0",
    "mdurl==0.1.2",
    "pygments==2.21.0",
    "packaging==26.4",
    "ninja==1.13.2",
    # the parity test runs under pytest
    "pytest==9.2.0",
    "pluggy==1.7.0",
    "iniconfig==2.3.1",
]
CORE = ["opencv-python-headless==5.0.0.93"]  # 61 MiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[1] / ".whl" / "avatars")
    p.add_argument("--with-core", action="store_true", help="also opencv-python-headless")
    args = p.parse_args()
    pkgs = GSPLAT + (CORE if args.with_core else [])
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--platform", "any", "-d", str(args.dest), *pkgs]  # fmt: skip
    rc = subprocess.call(cmd)
    if rc == 0:
        total = sum(f.stat().st_size for f in args.dest.glob("*.whl"))
        print(f"{len(list(args.dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {args.dest}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
