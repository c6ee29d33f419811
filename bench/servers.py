"""The processes under test: nginx upstreams and mirror, the slow shadow, shadowproxy.

Each lives in its own directory under the run's temp dir and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import string
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from bench import bodies, procstat, seed
from bench.procs import Process, free_port, port_open
from bench.scenarios import Scenario, seeded_route_names, shadowproxy_config

NGINX_TEMPLATES = Path(__file__).parent / "nginx"
START_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parent.parent
# No proxy from the environment may stand between us and a loopback admin port.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Conf(string.Template):
    # nginx's own variables use `$`; our placeholders are `@@name`.
    delimiter = "@@"


def render(template: str, **values: object) -> str:
    return _Conf((NGINX_TEMPLATES / template).read_text()).substitute(values)


def write_bodies(root: Path, mismatch: bool = False) -> None:
    for kind, data in bodies.documents(shadow_mismatch=mismatch).items():
        path = root / bodies.PATHS[kind].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class Server:
    def __init__(self, process: Process, port: int, admin_url: str | None = None) -> None:
        self.process = process
        self.port = port
        self.admin_url = admin_url  # shadowproxy's admin port; nginx has none

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_nginx(nginx: str, workdir: Path, name: str, template: str, **values: object) -> Server:
    """nginx in the foreground (daemon off) under its own prefix; returns once it accepts."""
    prefix = workdir / name
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render(template, prefix=prefix, port=port, **values))
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = Process(f"nginx {name}", argv, prefix / "stdout.log")
    proc.wait_until(lambda: port_open(port), START_TIMEOUT_S, f"port {port} open")
    return Server(proc, port)


def start_upstream(nginx: str, workdir: Path, name: str, mismatch: bool = False) -> Server:
    write_bodies(workdir / name / "www", mismatch=mismatch)
    return start_nginx(nginx, workdir, name, "upstream.conf")


def start_slow_shadow(workdir: Path, name: str, *, hang: bool) -> Server:
    root = workdir / name / "www"
    write_bodies(root)
    port = free_port()
    argv = [sys.executable, "-m", "bench.slow_shadow", "--port", str(port), "--root", str(root)]
    if hang:
        argv.append("--hang")
    proc = Process(name, argv, workdir / name / "stdout.log", cwd=REPO)
    proc.wait_until(lambda: port_open(port), START_TIMEOUT_S, f"port {port} open")
    return Server(proc, port)


def _ready(admin_url: str) -> bool:
    try:
        with _LOCAL.open(f"{admin_url}/readyz", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_shadowproxy(
    workdir: Path,
    scenario: Scenario,
    primary_url: str,
    shadow_url: str,
    *,
    wrapper: Sequence[str] = (),
    timeout_s: float = START_TIMEOUT_S,
    tree: Path | None = None,
) -> Server:
    """`python -m shadowproxy run -c FILE`, ready when /readyz answers 200 and every worker listens
    (a worker that binds late would otherwise miss all of wrk's connections). `wrapper` goes
    before the argv, e.g. valgrind, whose start-up needs a longer `timeout_s`. `tree` is where
    it runs from (its `shadowproxy` package is the one imported): the repo unless given."""
    home = workdir / scenario.name
    home.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    store = home / "shadowproxy.db"
    if scenario.seeded_routes and not store.exists():  # later rounds reuse it
        seed.seed(str(store), seeded_route_names(scenario))
    cfg = shadowproxy_config(
        scenario,
        listen_port=port,
        admin_port=admin,
        primary_url=primary_url,
        shadow_url=shadow_url,
        store_path=str(store),
    )
    cfg_path = home / "shadowproxy.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = [*wrapper, sys.executable, "-m", "shadowproxy", "run", "-c", str(cfg_path)]
    proc = Process(f"shadowproxy ({scenario.name})", argv, home / "stdout.log", cwd=tree or REPO)
    admin_url = f"http://127.0.0.1:{admin}"

    def ready() -> bool:
        return (
            procstat.listening_sockets(port) >= scenario.workers
            and procstat.listening_sockets(admin) >= scenario.workers
            and _ready(admin_url)
        )

    proc.wait_until(ready, timeout_s, "/readyz 200 with every worker listening")
    return Server(proc, port, admin_url)
