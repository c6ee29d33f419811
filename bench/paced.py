"""Load at a fixed request rate, the way a staging sidecar mostly sees it: h2load (Debian's
`nghttp2-client`) over HTTP/1.1, one connection, a request every 1/rate s.

wrk's closed loop sends the next request the moment an answer lands, which keeps every
process on the path hot. At a low fixed rate each one goes idle between requests, and on this
kind of machine a request then costs several times the CPU it costs under load (bench/README:
"At a fixed request rate"). The percentiles come from h2load's per-request log,
since h2load prints only min/max/mean. The result has wrk's shape, so a paced row is a row.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench.wrk import WrkError, WrkResult

_FINISHED = re.compile(r"^finished in ([\d.]+)s, ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, \d+ started, \d+ done, \d+ succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)


def command(url: str, rate: int, duration_s: int, log: Path, warmup_s: int = 1) -> list[str]:
    host = urlsplit(url).hostname
    if host != "127.0.0.1":
        raise ValueError(f"load goes to 127.0.0.1 only, not {host!r}")
    if rate < 1 or duration_s < 1:
        raise ValueError("rate and duration must be at least 1")
    return [
        "h2load",
        "--h1",
        "-c1",
        f"--rps={rate}",
        f"-D{duration_s}",
        f"--warm-up-time={warmup_s}",
        f"--log-file={log}",
        url,
    ]


def percentile_ms(sorted_us: list[int], q: float) -> float:
    """Nearest-rank percentile of latencies in microseconds, in milliseconds."""
    if not sorted_us:
        raise ValueError("no latencies")
    rank = max(1, -(-len(sorted_us) * q // 1))  # ceil(n * q), at least the first
    return sorted_us[int(rank) - 1] / 1000.0


def parse(output: str, log_text: str) -> WrkResult:
    """h2load's summary for counts and failures, its log (start µs, status, latency µs per
    request) for the percentiles."""
    finished, requests, status = _FINISHED.search(output), _REQUESTS.search(output), _STATUS.search(output)
    if finished is None or requests is None or status is None:
        raise WrkError(f"cannot read h2load output:\n{output.strip()}")
    latencies = sorted(int(line.split("\t")[2]) for line in log_text.splitlines() if line.strip())
    if not latencies:
        raise WrkError(f"h2load logged no request:\n{output.strip()}")
    failed, errored, timeout = (int(g) for g in requests.groups()[1:])
    count, rps = int(requests.group(1)), float(finished.group(2))
    return WrkResult(
        requests=count,
        # "finished in" counts the warm-up too; the rate and the count are the measured part.
        duration_s=count / rps if rps > 0 else float(finished.group(1)),
        rps=rps,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        socket_errors=failed + errored + timeout,
        non_2xx=sum(int(g) for g in status.groups()[1:]),
    )


def run(url: str, rate: int, duration_s: int) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="shadowproxy-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        argv = command(url, rate, duration_s, log)
        # h2load stops itself after -D; the timeout only guards against a wedged one.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
        if done.returncode != 0:
            raise WrkError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
            )
        return parse(done.stdout, log.read_text() if log.exists() else "")
