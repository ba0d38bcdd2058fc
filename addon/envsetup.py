# SPDX-License-Identifier: GPL-3.0-or-later
"""Create, check and repair the GPU environment the worker runs in. No bpy; standard library only.

The environment is a plain virtual environment (never Blender's own Python, never the system
site packages) made from a Python the user picks (``find_pythons`` lists candidates). The
packages come from the dependency group of the extension's ``pyproject.toml`` (``gpu``: the
core plus the CUDA parts); the core's code itself is not installed: the worker imports it
from the extension folder (``core_environment``).

The add-on runs this file as a separate process with the chosen Python, so Blender never waits:

    PYTHON envsetup.py --env DIR [--group gpu | --requirements FILE] [--pip-args "..."] [--recreate]
    ENV_PYTHON envsetup.py --env DIR --check         # verify only

It speaks the worker's line protocol (DESIGN.md, "Worker protocol") on stdout: ``start``,
``progress`` (stage ``venv``, ``install``, ``verify``), then ``done`` with the environment's
``python`` and a ``report`` (``verify``), or one ``error``. pip's output goes to the log
``<DIR>-setup.log`` beside the environment.

Being runnable on its own, this file also holds the few process helpers ``runner.py`` shares
(``core_environment``, ``split_args`` / ``join_args``, ``log_tail``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# The folder that holds ``core/`` and ``pyproject.toml`` (the extension root).
EXTENSION_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = EXTENSION_ROOT / "pyproject.toml"
DEFAULT_GROUP = "gpu"
MIN_PYTHON = (3, 11)  # pyproject.toml requires-python
STAMP = "troupe-env.json"  # written into the environment after a successful set-up
PROTOCOL_VERSION = 1

# Variables that would make the environment's Python load another installation's modules.
_ENV_DROP = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE", "VIRTUAL_ENV")


def core_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a Python process that imports the core from the extension folder.

    Blender's own Python settings are dropped, so the GPU environment sees only itself and
    the extension; output is unbuffered UTF-8 whatever the system locale.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _ENV_DROP}
    env["PYTHONPATH"] = str(EXTENSION_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def log_tail(path: Path | str, lines: int = 12, max_bytes: int = 64_000) -> list[str]:
    """The last non-empty lines of a text file (empty list if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def split_args(text: str) -> list[str]:
    """Worker options typed as on a command line (``join_args`` writes them so)."""
    if sys.platform == "win32":  # double quotes; backslashes in paths are kept
        return [t[1:-1] if len(t) >= 2 and t[0] == t[-1] == '"' else t for t in shlex.split(text, posix=False)]
    return shlex.split(text)


def join_args(args: list[str]) -> str:
    return subprocess.list2cmdline(args) if sys.platform == "win32" else shlex.join(args)


def env_python(env_dir: Path | str) -> Path:
    """The Python executable inside a virtual environment folder."""
    d = Path(env_dir)
    return d / "Scripts" / "python.exe" if sys.platform == "win32" else d / "bin" / "python"


def log_path_for(env_dir: Path | str) -> Path:
    d = Path(env_dir)
    return d.parent / f"{d.name}-setup.log"


# -- requirements --------------------------------------------------------------------------------


def group_requirements(group: str = DEFAULT_GROUP, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement strings of a PEP 735 dependency group, with included groups resolved."""
    import tomllib

    try:
        groups = tomllib.loads(pyproject.read_text(encoding="utf-8"))["dependency-groups"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{pyproject}: cannot read [dependency-groups] ({exc})") from None

    def resolve(name: str, seen: tuple[str, ...]) -> list[str]:
        if name not in groups:
            raise ValueError(f"{pyproject}: no dependency group {name!r} (has {sorted(groups)})")
        if name in seen:
            raise ValueError(f"{pyproject}: dependency group {name!r} includes itself")
        out: list[str] = []
        for item in groups[name]:
            out += resolve(item["include-group"], (*seen, name)) if isinstance(item, dict) else [item]
        return out

    return list(dict.fromkeys(resolve(group, ())))


def requirement_name(req: str) -> str:
    """``"numpy>=1.26,<3"`` -> ``"numpy"``."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise ValueError(f"not a requirement: {req!r}")
    return m.group(1)


def pinned_version(req: str) -> str | None:
    """``"torch==2.13.0"`` -> ``"2.13.0"``; None for ranges and bare names."""
    m = re.fullmatch(r"\s*[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?\s*==\s*([^\s,;]+)\s*(?:;.*)?", req)
    return m.group(1) if m else None


def read_requirements(path: Path | str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


# -- finding a Python ----------------------------------------------------------------------------


@dataclass
class PythonInfo:
    """A Python interpreter that could be the base of the environment."""

    path: str  # executable
    version: tuple[int, ...] = ()  # (3, 11, 7); empty when it could not be run
    problem: str = ""  # why it cannot be used ("" = usable)
    source: str = ""  # where it was found (PATH, py launcher, Blender)

    @property
    def usable(self) -> bool:
        return not self.problem

    def label(self) -> str:
        v = ".".join(map(str, self.version)) or "?"
        return f"Python {v} ({self.source}): {self.path}" + (f" [{self.problem}]" if self.problem else "")


_PROBE = (
    "import json, sys\n"
    "info = {'version': list(sys.version_info[:3]), 'missing': []}\n"
    "for m in ('venv', 'ensurepip'):\n"
    "    try:\n"
    "        __import__(m)\n"
    "    except ImportError:\n"
    "        info['missing'].append(m)\n"
    "print(json.dumps(info))\n"
)


def probe_python(path: str, source: str = "") -> PythonInfo:
    """Run ``path`` to learn its version and whether it can create environments."""
    info = PythonInfo(path=str(path), source=source)
    try:
        out = subprocess.run([str(path), "-I", "-c", _PROBE], capture_output=True, text=True, timeout=20, check=False)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        info.problem = f"cannot be run ({exc.__class__.__name__})"
        return info
    info.version = tuple(data["version"])
    if info.version < MIN_PYTHON:
        info.problem = f"too old: Troupe needs Python {'.'.join(map(str, MIN_PYTHON))} or newer"
    elif data["missing"]:
        mm = ".".join(map(str, info.version[:2]))
        info.problem = f"has no {' / '.join(data['missing'])} (Debian/Ubuntu: install python{mm}-venv)"
    return info


def _candidate_paths() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name in ("python3.12", "python3.11", "python3.13", "python3", "python"):
        p = shutil.which(name)
        if p:
            found.append((p, "PATH"))
    if sys.platform == "win32" and shutil.which("py"):
        try:
            out = subprocess.run(["py", "-0p"], capture_output=True, text=True, timeout=20, check=False).stdout
            found += [(m.group(1).strip(), "py launcher") for m in re.finditer(r"(\S:\\.*?python\.exe)", out)]
        except (OSError, subprocess.SubprocessError):
            pass
    elif sys.platform == "darwin":
        for pattern in ("/Library/Frameworks/Python.framework/Versions/3.*/bin/python3", "/opt/homebrew/bin/python3.*"):
            found += [(str(p), "installed") for p in sorted(Path("/").glob(pattern.lstrip("/")))]
    # Blender's own Python can serve as the base of a separate environment (nothing is installed into it).
    if sys.executable and Path(sys.executable).name.lower().startswith("python"):
        found.append((sys.executable, "Blender"))
    return found


def find_pythons(extra: list[str] | None = None) -> list[PythonInfo]:
    """Python interpreters on this machine, usable ones first (3.12 and 3.11 before others)."""
    seen: set[str] = set()
    infos: list[PythonInfo] = []
    for path, source in [(p, "chosen") for p in extra or []] + _candidate_paths():
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            continue
        seen.add(key)
        infos.append(probe_python(path, source))
    preferred: dict[tuple[int, ...], int] = {(3, 12): 0, (3, 11): 1, (3, 13): 2}
    infos.sort(key=lambda i: (not i.usable, i.source == "Blender", preferred.get(i.version[:2], 3)))
    return infos


# -- verification --------------------------------------------------------------------------------

_VERIFY = r"""
import json, sys
from importlib import metadata
out = {"python": sys.version.split()[0], "executable": sys.executable, "isolated": sys.prefix != sys.base_prefix,
       "packages": {}}
for name in sys.argv[1:]:
    try:
        out["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out["packages"][name] = None
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = bool(torch.cuda.is_available())
    out["cuda_version"] = torch.version.cuda
    if out["cuda"]:
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = props.name
        out["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import core
    out["core"] = core.__version__
except Exception as exc:
    out["core_error"] = f"{type(exc).__name__}: {exc}"
print("TROUPE-ENV " + json.dumps(out))
"""


def verify(python: Path | str, requirements: list[str], timeout: float = 300) -> dict[str, Any]:
    """Import torch (CUDA? which GPU?) and the core in the environment; compare packages with
    ``requirements``. The report's ``problems`` lists what is wrong (empty = ready)."""
    names = [requirement_name(r) for r in requirements]
    out = subprocess.run([str(python), "-c", _VERIFY, *names], capture_output=True, text=True, timeout=timeout,
                         env=core_environment(), check=False)  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("TROUPE-ENV ")), None)
    if line is None:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"problems": [f"{python} could not run the check: {tail}"], "packages": {}}
    report: dict[str, Any] = json.loads(line[len("TROUPE-ENV ") :])
    problems = []
    for req in requirements:
        name = requirement_name(req)
        have, want = report["packages"].get(name), pinned_version(req)
        if have is None:
            problems.append(f"{name} is not installed")
        elif want and have.split("+")[0] != want:
            problems.append(f"{name} {have} is installed, Troupe needs {want}")
    if "torch_error" in report:
        problems.append(f"PyTorch cannot be imported: {report['torch_error']}")
    if "core_error" in report:
        problems.append(f"the Troupe core cannot be imported: {report['core_error']}")
    if not report.get("isolated"):
        problems.append(f"{python} is not a virtual environment: Troupe keeps its packages in their own one")
    report["problems"] = problems
    report["requirements"] = list(requirements)
    return report


def summarize(report: dict[str, Any]) -> list[str]:
    """One line per fact for the preferences (what works first, then each problem)."""
    lines = []
    if report.get("python"):
        lines.append(f"Python {report['python']}: {report.get('executable', '')}")
    if report.get("torch"):
        if report.get("cuda"):
            gpu = f"{report.get('gpu', 'GPU')} ({report.get('gpu_memory_gb', '?')} GB)"
            lines.append(f"PyTorch {report['torch']}, CUDA {report.get('cuda_version')}: {gpu}")
        else:
            cpu_build = "+cpu" in report["torch"] or not report.get("cuda_version")
            why = "a CPU-only build of PyTorch" if cpu_build else "no CUDA GPU or driver found"
            lines.append(f"PyTorch {report['torch']}: no GPU ({why}); runs will be very slow")
    return lines + [f"Problem: {p}" for p in report.get("problems", [])]


# -- the set-up process (run as a script) --------------------------------------------------------


class _Setup:
    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.args = args
        self.out = out
        self.env_dir = Path(args.env).absolute()
        self.log_path = log_path_for(self.env_dir)
        self.log = open(self.log_path, "a", encoding="utf-8", buffering=1)  # closed in run()
        self.cancelled = False
        self.child: subprocess.Popen[str] | None = None

    def emit(self, kind: str, **fields: Any) -> None:
        self.out.write(json.dumps({"type": kind, **fields}, ensure_ascii=False) + "\n")
        self.out.flush()

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.emit("progress", stage=stage, fraction=round(fraction, 4), stage_fraction=0.0, message=message)

    def on_signal(self, signum: int, frame: object) -> None:
        self.cancelled = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)

    def call(self, argv: list[str], on_line: Any = None) -> int:
        """Run a step, its output into the log; ``on_line(line)`` sees each line."""
        self.log.write(f"$ {shlex.join(argv)}\n")
        self.child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      encoding="utf-8", errors="replace", env=core_environment())  # fmt: skip
        assert self.child.stdout is not None
        for line in self.child.stdout:
            if on_line is None or on_line(line.rstrip()) is not False:
                self.log.write(line)
        rc = self.child.wait()
        self.child = None
        if self.cancelled:
            raise KeyboardInterrupt
        return rc

    def fail(self, message: str) -> int:
        self.log.write(f"ERROR: {message}\n")
        self.emit("error", message=message, log=str(self.log_path), cancelled=False)
        return 2

    def requirements(self) -> list[str]:
        if self.args.requirements:
            return read_requirements(self.args.requirements)
        return group_requirements(self.args.group)

    def run(self) -> int:
        self.log.write(f"\n== Troupe environment set-up {time.strftime('%Y-%m-%d %H:%M:%S')}: {sys.argv}\n")
        self.emit("start", protocol=PROTOCOL_VERSION, job=str(self.env_dir), pid=os.getpid())
        try:
            return self._run()
        except KeyboardInterrupt:
            self.log.write("cancelled\n")
            self.emit("error", message="set-up cancelled; run it again to finish (or Repair)",
                      log=str(self.log_path), cancelled=True)  # fmt: skip
            return 130
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return self.fail(f"{type(exc).__name__}: {exc}")
        finally:
            self.log.close()

    def _run(self) -> int:
        reqs = self.requirements()
        python = env_python(self.env_dir)
        if not self.args.check:
            if self.args.recreate and self.env_dir.exists():
                if not (self.env_dir / "pyvenv.cfg").is_file():
                    return self.fail(f"{self.env_dir} is not a Python environment (no pyvenv.cfg); it is left "
                                     "alone: choose an empty or new folder")  # fmt: skip
                self.progress("venv", 0.0, f"removing the old environment {self.env_dir}")
                shutil.rmtree(self.env_dir)
            if not python.exists():
                if self.env_dir.exists() and any(self.env_dir.iterdir()) and not (self.env_dir / "pyvenv.cfg").exists():
                    return self.fail(f"{self.env_dir} is not empty and not a Python environment: choose an empty folder")
                self.progress("venv", 0.01, f"creating the environment {self.env_dir}")
                if self.call([sys.executable, "-m", "venv", str(self.env_dir)]) != 0 or not python.exists():
                    return self.fail(f"could not create a virtual environment in {self.env_dir} with {sys.executable}")
            self.install(python, reqs)
        elif not python.exists():
            return self.fail(f"no environment in {self.env_dir} (no {python}): run the set-up")
        self.progress("verify", 0.92, "checking PyTorch, the GPU and the Troupe core")
        report = verify(python, reqs)
        if not self.args.check:
            stamp = {"requirements": reqs, "base_python": sys.executable, "report": report,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            (self.env_dir / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        self.log.write("\n".join(summarize(report)) + "\n")
        self.progress("verify", 1.0, "checked")
        self.emit("done", python=str(python), report=report)
        return 0

    def install(self, python: Path, reqs: list[str]) -> None:
        req_file = self.env_dir / "troupe-requirements.txt"
        req_file.write_text("\n".join(reqs) + "\n", encoding="utf-8")
        pip = [str(python), "-m", "pip"]
        quiet = ["--disable-pip-version-check", "--no-input"]
        extra = split_args(self.args.pip_args or "")
        # A pip that reports download progress as lines (24.1+) makes a live bar for the big wheels.
        version = subprocess.run([*pip, "--version"], capture_output=True, text=True, check=False).stdout.split()
        if len(version) < 2 or tuple(int(x) for x in re.findall(r"\d+", version[1])[:2]) < (24, 1):
            self.progress("install", 0.04, "updating pip")
            self.call([*pip, "install", *quiet, "--upgrade", "--progress-bar", "off", "pip>=24.1", *extra])
        n_req = max(len(reqs), 1)
        state: dict[str, Any] = {"collected": 0, "fraction": 0.05, "file": ""}

        def on_line(line: str) -> bool:
            m = re.match(r"Progress (\d+) of (\d+)", line)
            if m:  # download bytes of the current file: shown, not logged
                done, total = int(m.group(1)), max(int(m.group(2)), 1)
                self.progress("install", state["fraction"], f"downloading {state['file']}: "
                              f"{done / 2**20:.0f} of {total / 2**20:.0f} MB")  # fmt: skip
                return False
            if line.startswith(("Collecting ", "Processing ")):
                state["collected"] += 1
                # The dependencies are not known in advance: approach 60 % as packages are collected.
                state["fraction"] = 0.05 + 0.55 * (1 - 0.5 ** (state["collected"] / n_req))
            elif line.lstrip().startswith("Downloading "):
                state["file"] = line.split()[1].rsplit("/", 1)[-1]
            elif line.startswith("Installing collected packages"):
                state["fraction"] = 0.7
            elif line.startswith("Successfully installed"):
                state["fraction"] = 0.9
            if line.strip():
                self.progress("install", state["fraction"], line.strip()[:200])
            return True

        self.progress("install", 0.05, f"installing {len(reqs)} packages and their dependencies")
        rc = self.call([*pip, "install", *quiet, "--progress-bar", "raw", "-r", str(req_file), *extra], on_line)
        if rc != 0:
            tail = [ln for ln in log_tail(self.log_path, 20) if "ERROR" in ln or "error" in ln] or log_tail(self.log_path)
            raise ValueError(f"pip could not install the packages (exit code {rc}): {tail[-1] if tail else ''}")


def setup_argv(base_python: str, env_dir: str, *, group: str = DEFAULT_GROUP, requirements: str | None = None,
               pip_args: str = "", recreate: bool = False, check: bool = False) -> list[str]:  # fmt: skip
    """The command that sets up (or with ``check`` only verifies) the environment in ``env_dir``."""
    argv = [base_python, str(Path(__file__).resolve()), "--env", str(env_dir), "--group", group]
    if requirements:
        argv += ["--requirements", str(requirements)]
    if pip_args:
        argv += ["--pip-args", pip_args]
    if recreate:
        argv.append("--recreate")
    if check:
        argv.append("--check")
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, help="environment folder (created)")
    p.add_argument("--group", default=DEFAULT_GROUP, help="dependency group of pyproject.toml to install")
    p.add_argument("--requirements", default=None, help="a requirements file instead of the group")
    p.add_argument("--pip-args", default="", help="extra pip options: package source (--index-url ...), proxy")
    p.add_argument("--recreate", action="store_true", help="delete the environment first")
    p.add_argument("--check", action="store_true", help="only verify an existing environment")
    args = p.parse_args(argv)
    setup = _Setup(args, sys.stdout)
    signal.signal(signal.SIGINT, setup.on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, setup.on_signal)
    return setup.run()


if __name__ == "__main__":
    sys.exit(main())
