"""Job directory, stages and the resumable pipeline behind ``python -m core run``.

A job directory holds one run::

    config.json        the resolved RunConfig of the last run
    troupe.log         everything the worker and its libraries printed
    <stage>/           each stage's outputs, plus <stage>/.done.json once it completed
    bundle/            the result bundle (written by the export stage)

A stage is skipped on a later run when its ``.done.json`` carries the same key: a hash of
the stage's name, the config fields it depends on, its code (``code_fingerprint``) and the key
of the stage before it. So a run resumes after a crash or a cancel, a change of settings re-runs
only the stages it affects and those after them, and after an update of Troupe that changed a
stage, that stage and those after it run again instead of handing back the old code's results.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("troupe")

QUALITY_PRESETS = ("preview", "standard", "high")
# a motion_init file with one of these suffixes (any case) is a pickle: read only with allow_pickle
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
REPORT_INTERVAL = 0.25  # seconds between a stage's progress lines


@dataclass
class RunConfig:
    """Settings of one reconstruction run (written to ``config.json`` in the job directory)."""

    video: str = ""  # source video file or folder of frames
    frame_start: int = 0  # first source frame to use
    frame_end: int | None = None  # one past the last source frame (None = to the end)
    frame_step: int = 1  # use every n-th frame
    max_size: int = 1280  # longest image side to work at (frames are downscaled above it)
    max_people: int = 8  # keep at most this many tracks (the longest, most visible)
    quality: str = "standard"  # preset name: preview | standard | high
    device: str = "auto"  # torch device: auto | cpu | cuda | cuda:N
    tracker: str = "offline"  # people backend: sam2 | offline | import
    tracks: str | None = None  # folder for tracker=import (user masks, or a `core synth` output)
    keypoints: str = "auto"  # 2D keypoint backend: auto | vitpose | offline | import
    body_model: str | None = None  # folder or file of the SMPL-X model (else env / config folder)
    gender: str = "neutral"
    motion_init: str | None = None  # start the motion fit from another tool's result (docs/motion.md)
    allow_pickle: bool = False  # let motion_init read pickled files (they can run code): trusted files only
    pose_prior: str | None = None  # learned pose prior for the motion fit (`python -m core pose-prior` builds one)
    weights_dir: str | None = None  # where learned-model weights are found / cached
    seed: int = 0
    avatars: bool = True  # build Gaussian avatars (off: motion-only bundle)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific overrides, by stage name

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class StageUnavailable(RuntimeError):
    """The stage is not part of this version of Troupe (never faked)."""


class Cancelled(Exception):
    """The run was cancelled (SIGINT); the job directory stays resumable."""


class JobError(RuntimeError):
    """A failure with a message meant for the user (bad input, missing model, ...)."""


@dataclass
class StageSpec:
    name: str
    target: str  # "module:function" taking a StageContext
    depends_on: tuple[str, ...]  # RunConfig fields that change this stage's output
    weight: float  # share of the whole run's time, for the progress bar
    description: str = ""
    enabled_by: str | None = None  # RunConfig bool field that turns the stage off when False


# The pipeline, in order (docs: DESIGN.md, "Data flow").
STAGES: list[StageSpec] = [
    StageSpec("ingest", "core.people.ingest:run_stage",
              ("video", "frame_start", "frame_end", "frame_step", "max_size"), 0.05, "read and cache frames"),
    StageSpec("people", "core.people.stage:run_stage",
              ("tracker", "tracks", "max_people", "keypoints", "quality", "weights_dir", "seed"), 0.25,
              "detect and track people, masks and 2D keypoints"),
    StageSpec("motion", "core.motion.stage:run_stage",
              ("body_model", "gender", "quality", "seed", "motion_init", "allow_pickle", "pose_prior"), 0.3,
              "SMPL-X motion and camera"),
    StageSpec("avatars", "core.avatars.stage:run_stage", ("quality", "seed"), 0.35,
              "per-person Gaussian avatars", enabled_by="avatars"),
    StageSpec("export", "core.export:run_stage", ("avatars",), 0.05, "write the result bundle"),
]  # fmt: skip


class JobDir:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    @property
    def log_path(self) -> Path:
        return self.root / "troupe.log"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundle"

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def marker(self, name: str) -> Path:
        return self.stage_dir(name) / ".done.json"

    def is_done(self, name: str, key: str) -> bool:
        try:
            return json.loads(self.marker(name).read_text())["key"] == key
        except (OSError, ValueError, KeyError):
            return False

    def mark_done(self, name: str, key: str, seconds: float) -> None:
        self.stage_dir(name).mkdir(parents=True, exist_ok=True)
        self.marker(name).write_text(json.dumps({"key": key, "seconds": round(seconds, 3)}) + "\n")

    def clear_done(self, name: str) -> None:
        self.marker(name).unlink(missing_ok=True)

    def write_config(self, config: RunConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config.to_json(), indent=2) + "\n")


# settings that name an input file: a stage's key holds the file's content, so a file rebuilt at
# the same path runs the stage again
FILE_SETTINGS = ("motion_init", "pose_prior")


def stage_key(spec: StageSpec, config: RunConfig, upstream: str) -> str:
    values = {k: getattr(config, k) for k in spec.depends_on}
    for k in FILE_SETTINGS:
        if k in values and values[k] and Path(values[k]).is_file():
            values[k] = [values[k], hashlib.sha256(Path(values[k]).read_bytes()).hexdigest()]
    values["extra"] = config.extra.get(spec.name)
    blob = json.dumps([spec.name, values, code_fingerprint(spec.target), upstream], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_fingerprint(target: str) -> str:
    """Hash of the code a stage runs (``code_files``) and Troupe's version, from ``target``
    ("module:function") without importing it. Empty where the module cannot be found (loading it
    then says why)."""
    from . import __version__

    files = code_files(target)
    if not files:
        return ""
    h = hashlib.sha256(__version__.encode())
    for f in files:
        h.update("/".join(f.parts[-2:]).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# The runner itself: its settings reach a stage's key through ``StageSpec.depends_on``, and a
# change to how stages are run must not throw away every finished stage of every job.
NOT_STAGE_CODE = frozenset({"core.pipeline"})


def code_files(target: str) -> list[Path]:
    """The source files a stage's results depend on: every ``.py`` of the stage's own package
    (all of ``core/motion/`` for ``core.motion.stage``; the module alone where it sits directly
    in ``core`` or outside it), and every module of the same top-level package that those import,
    directly or through each other (``core/body/model.py``, ``core/bundle.py``, ...). Imports are
    read from the sources (``ast``), so nothing is imported but the top-level package's location."""
    module = target.split(":")[0]
    parts = module.split(".")
    try:
        top = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return []
    if top is None:
        return []
    if not top.submodule_search_locations:  # a lone module: no package to follow imports into
        return [Path(top.origin)] if top.origin and top.origin.endswith(".py") else []
    roots = [Path(r) for r in top.submodule_search_locations]
    start = _module_file(roots, parts)
    if start is None:
        return []
    seen: dict[Path, str] = {start: module}
    if len(parts) >= 3:  # core.<package>.<module>: the whole package
        pkg_dir = start.parent
        for f in sorted(pkg_dir.rglob("*.py")):
            rel = f.relative_to(pkg_dir).with_suffix("").parts
            name = ".".join([*parts[:-1], *(p for p in rel if p != "__init__")])
            seen.setdefault(f, name)
    todo = list(seen.items())
    while todo:
        f, name = todo.pop()
        for imported in _imports(f, name, f.name == "__init__.py"):
            bits = imported.split(".")
            if bits[0] != parts[0]:
                continue
            for n in range(1, len(bits) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                sub = ".".join(bits[:n])
                g = _module_file(roots, bits[:n])
                if sub not in NOT_STAGE_CODE and g is not None and g not in seen:
                    seen[g] = sub
                    todo.append((g, sub))
    return sorted(seen)


def _module_file(roots: list[Path], parts: list[str]) -> Path | None:
    """``core.body.model`` -> .../core/body/model.py (or .../__init__.py of a package)."""
    for root in roots:
        base = root.joinpath(*parts[1:])
        for f in (base / "__init__.py",) if len(parts) == 1 else (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file():
                return f
    return None


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Absolute names of what ``path`` (module ``module``) imports; ``from a import b`` gives
    both ``a`` and ``a.b``, as ``b`` may be a submodule."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name:
                out.add(name)
                out.update(f"{name}.{a.name}" for a in node.names if a.name != "*")
    return out


@dataclass
class StageContext:
    """What a stage gets: the job, the config, and progress / cancel hooks."""

    job: JobDir
    config: RunConfig
    name: str
    _progress: Callable[[float, str], None]
    _cancelled: Callable[[], bool]

    @property
    def out_dir(self) -> Path:
        d = self.job.stage_dir(self.name)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def input_dir(self, stage: str) -> Path:
        return self.job.stage_dir(stage)

    _last_report: float = field(default=-1.0, repr=False)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report this stage's progress in [0, 1]; raises Cancelled if a cancel was asked for.

        Cheap enough to call every iteration: the cancel check runs on every call, while
        progress lines go out at most every ``REPORT_INTERVAL`` seconds."""
        self.check_cancel()
        now = time.monotonic()
        if now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            self._progress(fraction, message)

    def check_cancel(self) -> None:
        if self._cancelled():
            raise Cancelled()


def load_stage(spec: StageSpec) -> Callable[[StageContext], None]:
    module_name, func = spec.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The stage's own module (or its package) is absent: this version has no such stage.
        if exc.name and module_name.startswith(exc.name):
            raise StageUnavailable(
                f"stage '{spec.name}' ({spec.description}) is not available in this version of Troupe"
            ) from None
        raise JobError(
            f"stage '{spec.name}' needs the Python package '{exc.name}', which is not installed in "
            "this environment; run the add-on's 'Set up environment' (or scripts/setup.sh) again"
        ) from None
    fn = getattr(module, func, None)
    if fn is None:
        raise StageUnavailable(f"stage '{spec.name}' is not available in this version of Troupe")
    return fn


def run_pipeline(
    job: JobDir,
    config: RunConfig,
    report: Callable[[str, float, float, str], None],
    cancelled: Callable[[], bool] = lambda: False,
    stages: list[StageSpec] | None = None,
) -> Path:
    """Run (or resume) every stage; returns the bundle directory.

    ``report(stage, overall_fraction, stage_fraction, message)`` receives progress.
    """
    stages = STAGES if stages is None else stages
    stages = [s for s in stages if s.enabled_by is None or getattr(config, s.enabled_by)]
    job.write_config(config)
    total = sum(s.weight for s in stages)
    done_weight = 0.0
    upstream = ""
    for spec in stages:
        key = stage_key(spec, config, upstream)
        upstream = key
        base = done_weight / total
        span = spec.weight / total
        if job.is_done(spec.name, key):
            log.info("stage %s: up to date, skipped", spec.name)
            report(spec.name, base + span, 1.0, "up to date (resumed)")
            done_weight += spec.weight
            continue
        job.clear_done(spec.name)
        fn = load_stage(spec)
        log.info("stage %s: start", spec.name)
        report(spec.name, base, 0.0, spec.description)
        t0 = time.monotonic()

        def _progress(frac: float, msg: str, _base: float = base, _span: float = span, _name: str = spec.name) -> None:
            frac = min(max(frac, 0.0), 1.0)
            report(_name, _base + _span * frac, frac, msg)

        ctx = StageContext(job=job, config=config, name=spec.name, _progress=_progress, _cancelled=cancelled)
        if cancelled():
            raise Cancelled()
        fn(ctx)
        seconds = time.monotonic() - t0
        job.mark_done(spec.name, key, seconds)
        log.info("stage %s: done in %.2f s", spec.name, seconds)
        report(spec.name, base + span, 1.0, f"done in {seconds:.1f} s")
        done_weight += spec.weight
    return job.bundle_dir
