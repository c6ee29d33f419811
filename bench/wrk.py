"""Run wrk against a loopback URL and parse what it prints.

wrk prints times with a unit suffix (us, ms, s, m, h) and only prints the socket-error and
non-2xx lines when there were some, so their absence means zero.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(rf"^\s*(50|99)(?:\.0+)?%\s+{_TIME}\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
# A failed request above this share means the scenario did not run as intended.
MAX_ERROR_RATE = 0.01


class WrkError(Exception):
    """wrk could not run, or printed something we cannot read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int = 0
    non_2xx: int = 0

    @property
    def failed(self) -> int:
        return self.socket_errors + self.non_2xx

    @property
    def error_rate(self) -> float:
        return 1.0 if self.requests == 0 else self.failed / self.requests

    def problem(self) -> str | None:
        """Why this run does not count, or None when it does."""
        if self.requests == 0:
            return f"wrk completed no request ({self.socket_errors} socket errors)"
        if self.error_rate > MAX_ERROR_RATE:
            return (
                f"{self.failed} of {self.requests} requests failed "
                f"({self.socket_errors} socket errors, {self.non_2xx} non-2xx)"
            )
        return None


def to_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(output: str) -> WrkResult:
    percentiles = {m.group(1): to_ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(output)}
    requests = _REQUESTS.search(output)
    rps = _RPS.search(output)
    if requests is None or rps is None or set(percentiles) != {"50", "99"}:
        raise WrkError(f"cannot read wrk output (was --latency given?):\n{output.strip()}")
    socket = _SOCKET.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=to_ms(requests.group(2), requests.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        socket_errors=sum(int(g) for g in socket.groups()) if socket else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def command(url: str, connections: int, duration_s: int) -> list[str]:
    """One wrk thread: on two cores a second thread would only fight the proxy for CPU."""
    host = urlsplit(url).hostname
    if host != "127.0.0.1":
        raise ValueError(f"load goes to 127.0.0.1 only, not {host!r}")
    if connections < 1 or duration_s < 1:
        raise ValueError("connections and duration must be at least 1")
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", url]


def run(url: str, connections: int, duration_s: int) -> WrkResult:
    argv = command(url, connections, duration_s)
    # wrk stops itself after -d; the timeout only guards against a wedged wrk.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if done.returncode != 0:
        raise WrkError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return parse(done.stdout)
