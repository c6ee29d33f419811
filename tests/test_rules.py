"""promtool on our rules, their unit tests, the example config and our exposition."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shadowproxy.exchange import (
    SKIP_REASONS,
    Comparison,
    Exchange,
    FieldDiff,
    RequestSnapshot,
    UpstreamResult,
)
from shadowproxy.metrics import Metrics
from tests.promserver import PROMTOOL, ROOT, RULES

pytestmark = pytest.mark.prometheus

PROM_DIR = ROOT / "config" / "prometheus"


def promtool(
    *args: str, stdin: bytes | None = None, cwd: Path = PROM_DIR
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_rules_are_valid() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_rule_unit_tests_pass() -> None:
    r = promtool("test", "rules", "rules_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_prometheus_config_is_valid() -> None:
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


# Each mutation breaks a property the unit tests claim to check; they must notice.
MUTATIONS = {
    "error threshold 3% (2% must fire)": (
        "route:shadowproxy_shadow_error_ratio:rate5m > 0.01",
        "route:shadowproxy_shadow_error_ratio:rate5m > 0.03",
    ),
    "error threshold 0.4% (0.5% must not fire)": (
        "route:shadowproxy_shadow_error_ratio:rate5m > 0.01",
        "route:shadowproxy_shadow_error_ratio:rate5m > 0.004",
    ),
    "no volume guard (a trickle must not page)": (
        "route:shadowproxy_shadow_requests:rate5m * 300 >= 100",
        "route:shadowproxy_shadow_requests:rate5m * 300 >= 1",
    ),
    "slow share from the wrong bucket": ('{le="0.5"}', '{le="1.0"}'),
    "latency alert without for": ("for: 10m\n        labels:\n          severity: critical", "for: 0m\n"
                                  "        labels:\n          severity: critical"),
    "saturation on any skip": ('{reason="saturated"}', ""),
    "comparison worker alert on any skip": ('{reason="compare_busy"}', ""),
    "loop stalls counted from the 10 ms bucket": ('{le="0.025"}[5m]', '{le="0.01"}[5m]'),
    "loop stalls at 2 % (1.7 % must fire)": ("          ) > 0.01\n", "          ) > 0.02\n"),
    "mismatch ratio ignoring healthy routes": (
        "(route:shadowproxy_mismatches:rate5m or route:shadowproxy_comparisons:rate5m * 0)",
        "route:shadowproxy_mismatches:rate5m",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_rule_unit_tests_catch_a_broken_rule(name: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[name]
    text = RULES.read_text(encoding="utf-8")
    assert old in text, f"mutation {name!r} no longer applies"
    (tmp_path / "rules.yml").write_text(text.replace(old, new, 1), encoding="utf-8")
    shutil.copy(PROM_DIR / "rules_test.yml", tmp_path / "rules_test.yml")
    r = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert r.returncode != 0, f"unit tests still pass with: {name}"
    assert "FAILED" in r.stdout + r.stderr


def realistic_metrics() -> Metrics:
    m = Metrics()
    req = RequestSnapshot("GET", "/api/users/1", "", (), b"", "rid", "user")
    for i in range(200):
        m.request("user", "GET", 200 if i % 50 else 503)
        m.upstream("primary", "user", "GET", 200, None, 0.02 + i / 1000)
        m.upstream("shadow", "user", "GET", 200 if i % 40 else 502, None, 0.03 + i / 300)
    m.upstream("shadow", "user", "GET", None, "timeout", 10.0)
    m.upstream("shadow", "pitches", "POST", None, "error", 0.001)
    m.upstream("secondary", "user", "GET", 200, None, 0.02)
    primary = UpstreamResult("primary", 200, (), b"{}", 0.02)
    shadow = UpstreamResult("shadow", 200, (), b"{}", 0.03)
    diff = Comparison(
        False, ("headers", "body"), (FieldDiff("$.a[1]", "changed"), FieldDiff("header:vary", "extra"))
    )
    for c in (Comparison.equal(), diff, None, Comparison(True, hashed_only=True)):
        m.exchange(Exchange(req, primary, shadow, c))
    for reason in SKIP_REASONS:
        m.skipped("user", reason)
    m.shadow_in_flight(3)
    m.dropped("store_queue_full")
    m.task_failed(RuntimeError("x"))
    m.set_verdicts({"user": -1, "pitches": 0})
    return m


def test_exposition_passes_promtool_check_metrics() -> None:
    body, _ = realistic_metrics().render()
    assert b"shadowproxy_field_mismatches_total" in body
    r = promtool("check", "metrics", stdin=body)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == ""
