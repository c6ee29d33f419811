"""The tools the benchmark needs (installed on demand as root) and what machine it ran on."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGES = ("nginx", "wrk", "h2load")
# The Debian package of each tool whose package is named otherwise.
_PACKAGE_OF = {"h2load": "nghttp2-client"}
# Debian puts nginx in /usr/sbin, which a non-root PATH often lacks.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class ToolError(Exception):
    pass


def which(tool: str) -> str | None:
    return shutil.which(tool, path=_SEARCH_PATH)


def ensure_tools(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Tool name -> executable path; apt-get installs what is missing when we are root."""
    missing = [_PACKAGE_OF.get(t, t) for t in packages if which(t) is None]
    if missing:
        if os.geteuid() != 0:
            names = " ".join(missing)
            raise ToolError(f"{names}: not found and not root; first run: sudo apt-get install -y {names}")
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            if subprocess.run(argv, env=env, check=False).returncode != 0:
                raise ToolError(f"`{' '.join(argv)}` failed; install {' '.join(missing)} by hand")
    found = {t: which(t) for t in packages}
    lost = [t for t, p in found.items() if p is None]
    if lost:
        raise ToolError(f"{', '.join(lost)} still not found after installing")
    return {t: p for t, p in found.items() if p is not None}


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else ""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def build_of(tree: Path) -> str:
    """`compiled` or `pure`: what `python -m shadowproxy` imports when run from `tree`."""
    code = "import shadowproxy; print('compiled' if shadowproxy.compiled() else 'pure')"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def info(
    tools: dict[str, str], repo: Path, load_before: float, tree: Path | None = None
) -> dict[str, object]:
    commit = _output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    versions = {
        "shadowproxy": _version("shadowproxy"),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "nginx": _output([tools["nginx"], "-v"]).removeprefix("nginx version: nginx/"),
        "wrk": _output([tools["wrk"], "-v"]).split("[")[0].removeprefix("wrk ").strip(),
    }
    if "h2load" in tools:
        versions["h2load"] = _output([tools["h2load"], "--version"]).removeprefix("h2load nghttp2/")
    if "valgrind" in tools:
        versions["valgrind"] = _output([tools["valgrind"], "--version"]).removeprefix("valgrind-")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        # Taken before any load of ours: other work on the machine skews every number.
        "loadavg_1m_before": load_before,
        "python": sys.version.split()[0],
        "versions": versions,
        "git_commit": commit + (" (with uncommitted changes)" if dirty not in ("", "unknown") else ""),
        "build": build_of(tree or repo),
    }
