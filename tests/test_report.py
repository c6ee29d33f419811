"""The report: golden md and json, exit codes, and the html in real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from shadowproxy import config, report
from shadowproxy.evidence import (
    LATENCY_BUCKETS,
    Evidence,
    FieldCount,
    Histogram,
    RouteEvidence,
    Sample,
    SuggestedIgnore,
)
from shadowproxy.exchange import FieldDiff

GOLDEN = Path(__file__).parent / "golden"
CHROMIUM = "/usr/bin/chromium"
# UPDATE_GOLDEN=1 rewrites the golden files; review the diff before committing it.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

CONFIG = """\
primary: {name: deno, url: "http://127.0.0.1:8001"}
shadow: {name: workers, url: "https://api.example.workers.dev", host_header: backend}
gate: {min_samples: 300}
routes:
  - {name: user, match: "/api/users/{id}", critical: true, expected: {p50_s: 0.03, p95_s: 0.05}}
  - {name: pitches, match: "/api/pitches/**"}
  - {name: search, match: "/api/search", gate: {max_mismatch_rate: 0.02}}
  - {name: orders, match: "/api/orders/**"}
"""


def hist(values: list[tuple[float, int]]) -> Histogram:
    """From (seconds, how many) pairs."""
    counts = tuple(sum(n for v, n in values if v <= b) for b in LATENCY_BUCKETS)
    return Histogram(counts=counts, total=sum(n for _, n in values), sum_s=sum(v * n for v, n in values))


def sample(i: int, route: str, path: str, fields: tuple[FieldDiff, ...]) -> Sample:
    return Sample(
        id=i,
        route=route,
        method="GET",
        path=path,
        query="page=2" if i % 2 else "",
        request_id=f"req-{i:04d}",
        request_headers=(("accept", "application/json"), ("authorization", "[REDACTED]")),
        primary_status=200,
        shadow_status=200,
        primary_headers=(("content-type", "application/json"),),
        shadow_headers=(("content-type", "application/json; charset=utf-8"),),
        primary_body='{"id": 7, "title": "Pitch <b>A</b>", "tags": ["x", "y"]}',
        shadow_body='{"id": 7, "title": "Pitch A", "tags": ["y", "x"]}',
        fields=fields,
        parts=("headers", "body"),
        primary_latency_s=0.041,
        shadow_latency_s=0.058,
        at=1_764_300_000.0 + i,
    )


def evidence() -> Evidence:
    user_pairs = tuple((0.02 + (i % 10) * 0.001, 0.022 + (i % 10) * 0.001) for i in range(3000))
    pitch_pairs = tuple((0.03, 0.09 if i % 3 == 0 else 0.031) for i in range(1200))
    diffs = (
        FieldDiff("$.title", "changed", "Pitch <b>A</b>", "Pitch A"),
        FieldDiff("$.tags", "order", ["x", "y"], ["y", "x"]),
        FieldDiff("$.author", "missing", "ann", None),
        FieldDiff("header:content-type", "changed", "application/json", "application/json; charset=utf-8"),
    )
    return Evidence(
        source="store:/var/lib/shadowproxy/shadowproxy.db",
        window="since 2026-11-28 10:00 UTC (30 h)",
        routes=(
            RouteEvidence(
                route="user",
                requests=3100,
                shadowed=3000,
                compared=3000,
                shadow_errors=4,
                shadow_timeouts=1,
                skipped={"sampled_out": 100},
                primary_latency=hist([(0.02, 1500), (0.028, 1400), (0.06, 100)]),
                shadow_latency=hist([(0.021, 1400), (0.029, 1500), (0.07, 100)]),
                latency_pairs=user_pairs,
            ),
            RouteEvidence(
                route="pitches",
                requests=1200,
                shadowed=1200,
                compared=1195,
                mismatches=96,
                mismatches_by_part={"body": 90, "headers": 12},
                shadow_errors=5,
                primary_latency=hist([(0.03, 1200)]),
                shadow_latency=hist([(0.031, 800), (0.09, 400)]),
                latency_pairs=pitch_pairs,
                fields=(
                    FieldCount("$.title", 80, 0),
                    FieldCount("$.tags", 20, 18),
                    FieldCount("$.served_at", 9, 9),
                ),
            ),
            RouteEvidence(
                route="search",
                requests=122,
                shadowed=42,
                compared=42,
                skipped={"body_too_large": 3, "unsafe_method": 75},
                lost={"pair_abandoned": 2},
                primary_latency=hist([(0.2, 42)]),
                shadow_latency=hist([(0.22, 42)]),
                latency_pairs=tuple((0.2, 0.22) for _ in range(42)),
            ),
            RouteEvidence(route="/api/uploads/{id}", requests=77, skipped={"unsafe_method": 77}),
        ),
        samples={"pitches": tuple(sample(i, "pitches", f"/api/pitches/{i}", diffs) for i in (3, 2, 1, 0))},
        suggestions=(
            SuggestedIgnore("pitches", "$.served_at", 9, 9, 1195, "differs between two primaries as often"),
            SuggestedIgnore("/api/uploads/{id}", '$.meta["trace id"]', 5, 5, 40, "old vs old as often"),
        ),
    )


@pytest.fixture
def cfg() -> config.Config:
    return config.loads(CONFIG, source="shadowproxy.yaml", env={})


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; UPDATE_GOLDEN=1 to accept"


def test_markdown_golden(cfg: config.Config) -> None:
    text, verdict = report.render(cfg, evidence(), "md")
    assert verdict == "NO-GO"
    assert text.splitlines()[0] == "# Cutover report: NO-GO"
    golden("report.md", text)


def test_json_golden_holds_the_same_data(cfg: config.Config) -> None:
    text, _ = report.render(cfg, evidence(), "json")
    golden("report.json", text)
    data = json.loads(text)
    assert (data["verdict"], data["exit_code"]) == ("NO-GO", 1)
    assert data["config"] == {"source": "shadowproxy.yaml", "digest": cfg.digest}
    assert [r["route"] for r in data["routes"]] == [
        "user",
        "pitches",
        "search",
        "orders",
        "/api/uploads/{id}",
    ]
    pitches = data["routes"][1]
    assert pitches["verdict"] == "NO-GO"
    assert [c["outcome"] for c in pitches["checks"]] == ["fail", "pass", "pass", "fail"]
    assert len(pitches["examples"]) == 3 and pitches["examples"][0]["request_id"] == "req-0003"
    assert data["coverage"]["declared_unseen"] == ["orders"]
    assert data["criteria"]["family"]["tests"] == 12


def test_rendering_is_deterministic(cfg: config.Config) -> None:
    for fmt in report.FORMATS:
        assert report.render(cfg, evidence(), fmt) == report.render(cfg, evidence(), fmt)


def test_suggestions_are_pasteable_yaml(cfg: config.Config) -> None:
    data = json.loads(report.render(cfg, evidence(), "json")[0])
    parsed = yaml.safe_load(data["suggestions_yaml"])
    assert parsed == {
        "routes": [{"name": "pitches", "compare": {"ignore": ["$.served_at"]}}],
        "compare": {"ignore": ['$.meta["trace id"]']},
    }


def test_route_names_are_escaped(cfg: config.Config) -> None:
    hostile = RouteEvidence(route="/a/<script>x|y</script>", requests=5, skipped={"unsafe_method": 5})
    ev = Evidence(routes=(hostile,), source="s", window="w")
    html, _ = report.render(cfg, ev, "html")
    md, _ = report.render(cfg, ev, "md")
    assert "<script>" not in html and "&lt;script&gt;" in html
    # Markdown: literal inside code spans, escaped elsewhere; never live html.
    assert "`/a/<script>x\\|y</script>`" in md and "### /a/\\<script>x\\|y\\</script>" in md
    assert not re.search(r"(?<!\\)<", re.sub(r"`[^`]*`", "", md))


def test_run_report_exit_codes_and_output(
    cfg: config.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.md"
    assert report.run_report(cfg, evidence(), "md", str(out)) == 1
    assert out.read_text(encoding="utf-8").startswith("# Cutover report: NO-GO")
    empty = Evidence(routes=(), source="s", window="w")
    assert report.run_report(cfg, empty, "json", None) == 3
    assert json.loads(capsys.readouterr().out)["verdict"] == "INCONCLUSIVE"
    go_cfg = config.loads("primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\n", env={})
    user = evidence().routes[0]
    assert report.run_report(go_cfg, Evidence(routes=(user,), source="s", window="w"), "md", None) == 0
    assert report.run_report(cfg, evidence(), "pdf", None) == 2
    assert report.run_report(cfg, evidence(), "md", str(tmp_path / "missing" / "r.md")) == 2
    assert "cannot write" in capsys.readouterr().err
    assert report.EXIT_CODES == {"GO": 0, "NO-GO": 1, "INCONCLUSIVE": 3}


def test_html_is_self_contained(cfg: config.Config) -> None:
    html, _ = report.render(cfg, evidence(), "html")
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html.replace("https://api.example.workers.dev", "")
    assert html.count("<svg") == 2


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.chromium
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_html_in_headless_chromium(cfg: config.Config, tmp_path: Path) -> None:
    html, _ = report.render(cfg, evidence(), "html")
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    # REPORT_SCREENSHOT=/some/file.png keeps the screenshot for a human to look at.
    shot = Path(os.environ.get("REPORT_SCREENSHOT", tmp_path / "report.png"))
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ]
    subprocess.run(
        [*base, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=60
    )
    assert shot.stat().st_size > 50_000
    assert _png_size(shot) == (1280, 2000)
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True, capture_output=True, timeout=60)
    text = dom.stdout.decode()
    assert '<p class="verdict" id="verdict">NO-GO</p>' in text
    assert "Mismatch rate per route against its limit" in text
