"""Add-on tests run in .venv/blender with Blender as a Python module (bpy).

The checkout is loaded as the package ``troupe`` (the extension's name), the way Blender loads
the extension, so ``addon`` reaches ``core.bundle`` by its relative import. Fixtures:

    fresh_scene      an empty factory scene for each test
    small_bundle     a numpy-made bundle (2 stick figures, 32 frames, splats), seconds to make
    synth_bundle     ``python -m core synth`` (2 people, 30 frames, stand-in bodies, a video),
                     with splats and an appearance mesh added from each rig: the main fixture
    standin_dir      the generated SMPL-X stand-in body model files
Both core-made fixtures run the core's interpreter (``TROUPE_CORE_PYTHON``, set by
scripts/env.sh, else .venv/core/bin/python) and skip with the reason when it is missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _load_troupe() -> None:
    if "troupe" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("troupe", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["troupe"] = module
    spec.loader.exec_module(module)


_load_troupe()
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

bpy = pytest.importorskip("bpy")


def core_python() -> Path | None:
    exe = os.environ.get("TROUPE_CORE_PYTHON") or str(ROOT / ".venv" / "core" / "bin" / "python")
    return Path(exe) if Path(exe).is_file() else None


def run_core(*args: str, timeout: int = 300) -> None:
    exe = core_python()
    if exe is None:
        pytest.skip("the core's Python (TROUPE_CORE_PYTHON or .venv/core) is missing: run scripts/setup.sh core")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([str(exe), "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"python -m core {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


@pytest.fixture
def fresh_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    import bundle_factory

    return bundle_factory.make_bundle(tmp_path_factory.mktemp("small") / "bundle", people=2, frames=32)


def add_splats_and_meshes(root: Path, count: int = 1500, seed: int = 0) -> None:
    """Give every person of a bundle splats on its body surface and an appearance mesh (the
    rig's surface with top-4 weights and colours), as the avatar stage will."""
    from troupe.core import bundle

    b = bundle.read_bundle(root)
    rng = np.random.default_rng(seed)
    for p in b.people:
        rig = p.rig
        idx = rng.integers(0, len(rig.vertices), count)
        means = rig.vertices[idx] + rng.normal(0, 0.01, (count, 3))
        ids, wts = bundle.dense_to_topk(rig.weights[idx], 4)
        p.splats = bundle.Splats(
            means=means.astype(np.float32), sh=rng.normal(0, 1, (count, 4, 3)).astype(np.float32),
            opacity=rng.normal(2, 1, count).astype(np.float32),
            log_scales=np.log(rng.uniform(0.005, 0.02, (count, 3))).astype(np.float32),
            quats=rng.normal(size=(count, 4)).astype(np.float32), skin_joints=ids, skin_weights=wts,
        )  # fmt: skip
        mids, mwts = bundle.dense_to_topk(rig.weights, 4)
        colors = rng.integers(0, 256, (len(rig.vertices), 3)).astype(np.uint8)
        p.mesh = bundle.Mesh(vertices=rig.vertices, faces=rig.faces, skin_joints=mids, skin_weights=mwts, colors=colors)
    bundle.write_bundle(root, b)


@pytest.fixture(scope="session")
def synth_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    run_core("synth", "--out", str(out), "--people", "2", "--frames", "30", "--size", "320x180", "--seed", "3",
             "--camera", "orbit")  # fmt: skip
    root = out / "bundle"
    add_splats_and_meshes(root)
    return root


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory) -> Path:
    cached = ROOT / ".cache" / "standin"
    if (cached / "SMPLX_NEUTRAL.npz").is_file():
        return cached
    out = tmp_path_factory.mktemp("standin")
    run_core("standin", "--out", str(out), "--genders", "neutral")
    return out
