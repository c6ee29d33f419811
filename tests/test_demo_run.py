"""`shadowproxy demo`, shortened and headless: the report catches the planted regressions."""

from __future__ import annotations

from pathlib import Path

from shadowproxy.demo.run import EXPECTED_GO, demo


async def test_the_demo_report_names_the_planted_regression_and_passes_a_clean_route(tmp_path: Path):
    result = await demo(2200, tmp_path, concurrency=32, quiet=True)
    assert result.problems == ()
    verdicts = {r.route: r.verdict for r in result.decision.routes}
    assert verdicts["pitch_detail"] == "NO-GO"
    assert any(verdicts[r] == "GO" for r in EXPECTED_GO), verdicts
    assert result.decision.verdict == "NO-GO"
    md = result.report_md.read_text()
    assert md.startswith("# Cutover report: NO-GO")
    detail = md[md.index("### pitch_detail") :]
    assert "$.data.budget" in detail[:4000]
    html = result.report_html.read_text()
    assert "<svg" in html and "pitch_detail" in html
