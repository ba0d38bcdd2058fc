"""MediaPipe's bundled pose models (BlazePose detector, landmark model with segmentation), run with LiteRT.

MediaPipe 0.10.21 is the last release whose wheel ships the model files, and it needs numpy<2,
so Troupe does not install it: it takes the ``.tflite`` files out of that wheel (fetched with pip
from PyPI, nothing from a model hub) and runs them with ``ai-edge-litert``, which works with
numpy 2. Search order for the files: ``<weights_dir>/mediapipe``, ``$TROUPE_WEIGHTS/mediapipe``,
an installed ``mediapipe`` package, ``~/.cache/troupe/mediapipe-0.10.21`` (filled on first use).

Run ``python -m core.people.mediapipe_models [--dest DIR]`` to fetch them ahead of time (e.g. on
a machine with PyPI access, then copy the folder).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..pipeline import JobError

log = logging.getLogger("troupe.people")

MEDIAPIPE_VERSION = "0.10.21"
# file name -> path inside the mediapipe wheel
FILES = {
    "pose_detection.tflite": "mediapipe/modules/pose_detection/pose_detection.tflite",
    "pose_landmark_full.tflite": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
}


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "troupe" / f"mediapipe-{MEDIAPIPE_VERSION}"


def _candidates(weights_dir: str | None) -> list[Path]:
    out = []
    if weights_dir:
        out.append(Path(weights_dir) / "mediapipe")
    if os.environ.get("TROUPE_WEIGHTS"):
        out.append(Path(os.environ["TROUPE_WEIGHTS"]) / "mediapipe")
    try:
        import importlib.util

        spec = importlib.util.find_spec("mediapipe")
        if spec and spec.origin:
            out.append(Path(spec.origin).parent / "modules")
    except (ImportError, ValueError):
        pass
    out.append(default_cache())
    return out


def _find_in(folder: Path) -> dict[str, Path] | None:
    found = {}
    for name, inner in FILES.items():
        for p in (folder / name, folder / Path(inner).relative_to("mediapipe/modules")):
            if p.is_file():
                found[name] = p
                break
    return found if len(found) == len(FILES) else None


def fetch(dest: Path) -> Path:
    """Download the mediapipe wheel with pip (no dependencies) and extract the model files into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--python-version",
               "3.11", "--platform", "manylinux_2_28_x86_64", "-d", tmp, f"mediapipe=={MEDIAPIPE_VERSION}"]  # fmt: skip
        log.info("fetching MediaPipe %s model files with pip", MEDIAPIPE_VERSION)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise JobError(
                f"the offline people backend needs MediaPipe {MEDIAPIPE_VERSION}'s pose models and pip could not "
                f"download them ({proc.stderr.strip()[-300:]}). On a machine with PyPI access run "
                f"`python -m core.people.mediapipe_models --dest DIR` and copy DIR to {dest} "
                "(or to <weights_dir>/mediapipe)"
            )
        with zipfile.ZipFile(wheels[0]) as z:
            for name, inner in FILES.items():
                (dest / name).write_bytes(z.read(inner))
    return dest


def find_models(weights_dir: str | None, download: bool = True) -> dict[str, Path]:
    for folder in _candidates(weights_dir):
        found = _find_in(folder)
        if found:
            return found
    if not download:
        raise JobError(f"MediaPipe pose models not found in {', '.join(map(str, _candidates(weights_dir)))}")
    return _find_in(fetch(default_cache())) or {}


class TFLiteModel:
    """One .tflite model on the CPU: ``model(x)`` -> list of outputs (in the model's output order)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise JobError(
                "the offline people backend needs the Python package 'ai-edge-litert' (the TFLite runtime); "
                "run scripts/setup.sh (or pip install ai-edge-litert==2.3.0)"
            ) from None
        self.interp = Interpreter(model_path=str(path), num_threads=threads or min(4, os.cpu_count() or 1))
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.outputs = sorted(self.interp.get_output_details(), key=lambda d: d["name"])
        self.shape = tuple(self.input["shape"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self.input["index"], np.ascontiguousarray(x, np.float32).reshape(self.shape))
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.outputs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", default=str(default_cache()), help="folder for the .tflite files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    dest = fetch(Path(args.dest))
    print(f"MediaPipe {MEDIAPIPE_VERSION} pose models in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
