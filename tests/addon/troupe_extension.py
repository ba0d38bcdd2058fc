"""Test support: the checkout as the package / extension ``troupe``, and a stand-in worker Python.

- ``load_troupe_module("addon.runner")``: import a module of the checkout under the package name
  ``troupe``, as Blender loads it (no bpy needed for the bpy-free modules).
- ``enable_extension(folder)`` / ``disable_extension()``: install the checkout like a user's
  extension (a user repository whose folder holds a ``troupe`` link) and enable it, so its
  preferences exist (bpy module only).
- ``fake_env_python(folder)``: an executable that stands in for the GPU environment's Python.
  It runs the real worker (``core.__main__``: argument parsing, protocol, pipeline, resume keys,
  signals) with two small test stages instead of the real ones, so runs last as long as a test
  needs (``TEST_STAGE_DELAY`` seconds for the second stage, a tenth of it for the first) and can end with a bundle copied from
  ``TEST_BUNDLE_SRC``. The real stages are run by the tests marked as such.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_PYTHON = ROOT / ".venv" / "core" / "bin" / "python"
REPO_MODULE = "troupe_tests"
EXTENSION_ID = f"bl_ext.{REPO_MODULE}.troupe"


# The CPU path through the real pipeline: its stage modules, and the worker options that select it
# (people from a `core synth` folder's ground-truth tracks, the motion fit started from its
# ground-truth bundle so a few iterations suffice, no avatars).
CPU_PATH_STAGES = {"ingest": "core/people/ingest.py", "people": "core/people/stage.py",
                   "motion": "core/motion/stage.py", "export": "core/export.py"}  # fmt: skip


def cpu_path_options(synth_dir: Path) -> tuple[str, ...]:
    return ("--tracker", "import", "--tracks", str(synth_dir), "--motion-init", str(synth_dir / "bundle"),
            "--no-avatars", "--quality", "preview", "--device", "cpu")  # fmt: skip


def small_synth(base: Path) -> Path:
    """A tiny `core synth` clip (2 people, 6 frames, 160x90) under ``base``, made once per test session."""
    out = base / "troupe-small-synth"
    if not (out / "bundle" / "bundle.json").is_file():
        proc = subprocess.run([str(CORE_PYTHON), "-m", "core", "synth", "--out", str(out), "--people", "2",
                               "--frames", "6", "--size", "160x90", "--seed", "1"],
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _missing_stages() -> list[str]:
    return [name for name, path in CPU_PATH_STAGES.items() if not (ROOT / path).is_file()]


needs_cpu_path = pytest.mark.skipif(bool(_missing_stages()), reason=f"stages not built yet: {_missing_stages()}")


def load_troupe_module(name: str) -> ModuleType:
    """Import ``troupe.<name>`` with the checkout as the package ``troupe``."""
    from scripts.import_bundle import load_troupe

    load_troupe()
    return importlib.import_module(f"troupe.{name}")


STAGE_CODE = textwrap.dedent(
    '''
    import os, shutil, time

    def run_stage(ctx):
        with open(ctx.job.root / "calls.txt", "a", encoding="utf-8") as fh:
            fh.write(ctx.name + "\\n")
        print("library chatter", flush=True)          # must land in the log, never in the protocol
        delay = float(os.environ.get("TEST_STAGE_DELAY", "0")) * (1.0 if ctx.name == "second" else 0.1)
        if ctx.name == "second" and os.environ.get("TEST_IGNORE_CANCEL"):
            time.sleep(600)                            # a stage that never reports progress
        for i in range(10):
            ctx.progress(i / 10, f"step {i}")
            time.sleep(delay / 10)
        (ctx.out_dir / "out.txt").write_text(ctx.name)
        if ctx.name == "second" and os.environ.get("TEST_BUNDLE_SRC"):
            shutil.rmtree(ctx.job.bundle_dir, ignore_errors=True)
            shutil.copytree(os.environ["TEST_BUNDLE_SRC"], ctx.job.bundle_dir)
    '''
)

FAKE_PYTHON = textwrap.dedent(
    """\
    #!{python}
    import sys
    sys.path.insert(0, {mods!r})
    from core import pipeline
    from core.pipeline import StageSpec
    pipeline.STAGES[:] = [StageSpec(n, "fake_stage:run_stage", (), 1.0, n) for n in ("first", "second")]
    assert sys.argv[1:3] == ["-m", "core"], sys.argv
    from core.__main__ import main
    sys.exit(main(sys.argv[3:]))
    """
)


def fake_env_python(folder: Path) -> str:
    """Write the stand-in Python into ``folder`` (a path without spaces: it goes into a #! line)."""
    (folder / "fake_stage.py").write_text(STAGE_CODE)
    exe = folder / "python"
    exe.write_text(FAKE_PYTHON.format(python=CORE_PYTHON, mods=str(folder)))
    exe.chmod(0o755)
    return str(exe)


def assert_reaped(pid: int) -> None:
    """The process is gone and not a zombie (its parent reaped it)."""
    stat = Path(f"/proc/{pid}/stat")
    try:  # the pid could be reused by now; a zombie of ours shows the state Z
        state = stat.read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return
    assert state != "Z", f"process {pid} is a zombie"


def _raise(exc: BaseException) -> None:
    raise exc


def enable_extension(repo_dir: Path) -> ModuleType:
    """Install the checkout as the extension ``troupe`` in a user repository at ``repo_dir``; enable it."""
    import addon_utils
    import bpy

    (repo_dir / "troupe").symlink_to(ROOT, target_is_directory=True)
    repos = bpy.context.preferences.extensions.repos
    for repo in [r for r in repos if r.module == REPO_MODULE]:
        repos.remove(repo)
    repos.new(name=REPO_MODULE, module=REPO_MODULE, custom_directory=str(repo_dir), source="USER")
    addon_utils.enable(EXTENSION_ID, default_set=True, handle_error=_raise)
    return importlib.import_module(EXTENSION_ID)


def disable_extension() -> None:
    import addon_utils
    import bpy

    addon_utils.disable(EXTENSION_ID, default_set=True, handle_error=_raise)
    repos = bpy.context.preferences.extensions.repos
    for repo in [r for r in repos if r.module == REPO_MODULE]:
        repos.remove(repo)
