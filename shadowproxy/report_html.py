"""The report as one self-contained html file: inline CSS and SVG, no script, no network.

Every piece of data goes through `html.escape`: route names and sample values come from
request paths and response bodies.
"""

from __future__ import annotations

from html import escape

from shadowproxy.charts import latency_chart, mismatch_chart
from shadowproxy.gate import CHECKS, DASH, TITLES, Check, Verdict
from shadowproxy.report_view import (
    ReportView,
    RouteView,
    check_title,
    diff_lines,
    interval,
    limit,
    request_line,
    statuses,
    traffic,
)

_CLASS: dict[Verdict, str] = {"GO": "go", "NO-GO": "nogo", "INCONCLUSIVE": "inc"}
_MAX_BODY_CHARS = 2000

_CSS = """
:root{--go:#1a7f37;--go-bg:#dafbe1;--nogo:#cf222e;--nogo-bg:#ffebe9;--inc:#9a6700;--inc-bg:#fff8c5;
--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
Helvetica,Arial,sans-serif}
main,header>div{max-width:1180px;margin:0 auto;padding:0 28px}
main{padding-bottom:48px}
header{padding:26px 0 22px;border-bottom:4px solid var(--c);background:var(--bg)}
header.go{--c:var(--go);--bg:var(--go-bg)} header.nogo{--c:var(--nogo);--bg:var(--nogo-bg)}
header.inc{--c:var(--inc);--bg:var(--inc-bg)}
h1{margin:0 0 6px;font-size:15px;font-weight:600;color:var(--muted);letter-spacing:.04em;
text-transform:uppercase}
.verdict{font-size:34px;font-weight:700;color:var(--c);margin:0}
.headline{font-size:17px;margin:6px 0 10px}
.meta{color:var(--muted);font-size:13px} .meta code{color:var(--fg)}
h2{font-size:20px;margin:36px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:17px;margin:0 0 8px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
table{border-collapse:collapse;width:100%;margin:8px 0 16px;font-size:13px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
tbody tr:nth-child(even) td{background:#fbfcfd}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{background:var(--soft);padding:1px 5px;border-radius:4px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;overflow-x:auto;
white-space:pre;margin:6px 0 12px}
.pill{display:inline-block;padding:1px 10px;border-radius:999px;font-size:12px;font-weight:700;
border:1px solid var(--c);color:var(--c);background:var(--bg);white-space:nowrap}
.pill.go,.o-pass{--c:var(--go);--bg:var(--go-bg)} .pill.nogo,.o-fail{--c:var(--nogo);--bg:var(--nogo-bg)}
.pill.inc,.o-open{--c:var(--inc);--bg:var(--inc-bg)}
.tag{font-size:12px;color:var(--muted);border:1px solid var(--line);border-radius:4px;padding:0 6px}
.scroll{overflow-x:auto}
.iv,.cell .iv{white-space:nowrap} .cell .legend{display:block;margin-left:15px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;
background:var(--c);margin-right:6px}
.route{border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:16px 0}
.route ul{margin:4px 0 12px;padding-left:20px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:22px} .card span{color:var(--muted);font-size:12px}
.legend,.note{color:var(--muted);font-size:12.5px}
.chart{border:1px solid var(--line);border-radius:8px;padding:10px;margin:10px 0 18px}
details{margin:8px 0} summary{cursor:pointer;font-weight:600}
"""


def render(view: ReportView) -> str:
    d = view.decision
    cls = _CLASS[d.verdict]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Cutover report: {escape(d.verdict)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<header class="{cls}"><div><h1>Shadow cutover report</h1>',
        f'<p class="verdict" id="verdict">{escape(d.verdict)}</p>',
        f'<p class="headline">{escape(view.headline)}</p>',
        f'<p class="meta">Source <code>{escape(view.source)}</code> · window {escape(view.window)} · config '
        f"<code>{escape(view.config_source)}</code> (digest <code>{escape(view.digest)}</code>)</p>",
        "</div></header>",
        "<main>",
        "<h2>Verdict</h2><ul>" + "".join(f"<li>{escape(r)}</li>" for r in d.reasons) + "</ul>",
        _summary(view),
        _charts(view),
        _coverage(view),
        _criteria(view),
        "<h2>Routes</h2>",
        *(_route(r) for r in view.routes),
    ]
    if view.suggestions_yaml:
        parts.append("<h2>Suggested ignore rules (learned noise)</h2>")
        parts.append(
            '<p class="note">Paste into the config after review; nothing is ignored until you do.</p>'
        )
        parts.append(f"<pre>{escape(view.suggestions_yaml)}</pre>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _pill(v: Verdict, extra: str = "") -> str:
    return f'<span class="pill {_CLASS[v]}">{escape(v)}{escape(extra)}</span>'


def _cell(c: Check | None) -> str:
    if c is None:
        return f'<td class="cell">{DASH}</td>'
    title = escape(c.reason, quote=True)
    return (
        f'<td class="cell o-{c.outcome}" title="{title}"><span class="iv"><span class="dot"></span>'
        f'{escape(interval(c))}</span><span class="legend">limit {escape(limit(c))}</span></td>'
    )


def _summary(view: ReportView) -> str:
    head = "".join(f"<th>{escape(TITLES[c])}</th>" for c in CHECKS)
    rows = []
    for r in view.routes:
        v = r.v
        tags = " ".join(
            t
            for t in (
                '<span class="tag">critical</span>' if v.critical else "",
                "" if v.declared else '<span class="tag">auto</span>',
            )
            if t
        )
        cells = "".join(_cell(v.check(c)) for c in CHECKS)
        rows.append(
            f'<tr><td><a href="#{_anchor(r.name)}"><code>{escape(r.name)}</code></a> {tags}</td>'
            f"<td>{_pill(v.verdict, ' (early)' if v.early else '')}</td>"
            f'<td class="num">{v.evidence.compared:,}</td>{cells}</tr>'
        )
    return (
        '<h2>Summary</h2><div class="scroll"><table><thead><tr><th>route</th><th>verdict</th>'
        f'<th class="num">compared</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        '<p class="legend">Each cell: estimate [NO-GO lower bound, GO upper bound] and the limit. '
        "Green: proven within the limit; red: proven over it; amber: not proven either way. "
        "Hover a cell for the full reason.</p>"
    )


def _charts(view: ReportView) -> str:
    routes = [r.v for r in view.routes]
    slo = routes[0].gate.latency_slo_s if routes else 0.5
    return (
        "<h2>Charts</h2><h3>Latency, primary and shadow</h3>"
        f'<div class="chart">{latency_chart(routes, slo)}</div>'
        "<h3>Mismatch rate against its limit</h3>"
        f'<div class="chart">{mismatch_chart(routes)}</div>'
        '<p class="legend">Dot: observed rate (0 sits at the left edge); bar: decision interval; '
        "red tick: the route's limit.</p>"
    )


def _coverage(view: ReportView) -> str:
    c = view.decision.coverage
    cards = [
        ("declared routes seen", c.declared_seen),
        ("declared routes not seen", c.declared_unseen),
        ("under min_samples", c.under_min),
        ("automatic routes", c.auto),
    ]
    html = "".join(
        f'<div class="card"><b>{len(xs)}</b><span>{escape(label)}</span><div class="note">'
        + (", ".join(f"<code>{escape(x)}</code>" for x in xs) or "none")
        + "</div></div>"
        for label, xs in cards
    )
    return f'<h2>Coverage</h2><div class="cards">{html}</div>'


def _criteria(view: ReportView) -> str:
    rows = [f"<tr><td><code>{escape(k)}</code></td><td>{escape(v)}</td></tr>" for k, v in view.criteria]
    out = "<h2>Criteria</h2>" + _table(["criterion", "global"], rows)
    if view.overrides:
        rows = [f"<tr><td><code>{escape(r)}</code></td><td>{escape(d)}</td></tr>" for r, d in view.overrides]
        out += _table(["route", "differs from global"], rows)
    out += (
        "<h3>How the verdict is reached</h3><ul>"
        + "".join(f"<li>{escape(n)}</li>" for n in view.notes)
        + "</ul>"
    )
    return out


def _table(head: list[str], rows: list[str]) -> str:
    """A table; a heading starting with # is a right-aligned number column."""
    ths = "".join(
        f'<th class="num">{escape(h[1:])}</th>' if h.startswith("#") else f"<th>{escape(h)}</th>"
        for h in head
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _anchor(name: str) -> str:
    return "route-" + "".join(ch if ch.isalnum() else "-" for ch in name)


def _route(r: RouteView) -> str:
    v = r.v
    tags = ('<span class="tag">critical</span>' if v.critical else "") + (
        "" if v.declared else '<span class="tag">automatic route</span>'
    )
    out = [
        f'<section class="route" id="{_anchor(r.name)}"><h3><code>{escape(r.name)}</code>'
        f"{_pill(v.verdict, ' (early)' if v.early else '')}{tags}</h3>",
        "<ul>" + "".join(f"<li>{escape(x)}</li>" for x in v.reasons) + "</ul>",
    ]
    if v.checks:
        out.append(f'<p class="note">{escape(traffic(v))}</p>')
        lat = "".join(
            f"<tr><td>{x.quantile}</td><td>{escape(x.primary)}</td><td>{escape(x.shadow)}</td>"
            f"<td>{escape(' '.join(filter(None, (x.expected, x.expected_met))))}</td></tr>"
            for x in r.latency
        )
        out.append(_table(["latency", "primary", "shadow", "plan target"], [lat]))
        checks = "".join(
            f'<tr class="o-{c.outcome}"><td>{escape(check_title(c.name, v.gate))}</td>'
            f'<td class="num">{c.k:,} / {c.n:,}</td><td class="iv">{escape(interval(c))}</td>'
            f"<td>{escape(limit(c))}</td>"
            f'<td><span class="dot"></span>{c.outcome}</td><td class="note">{escape(c.reason)}</td></tr>'
            for c in v.checks
        )
        out.append(_table(["check", "#k / n", "estimate [bounds]", "limit", "outcome", "reason"], [checks]))
    if r.fields:
        rows = [
            f'<tr><td><code>{escape(f.path)}</code></td><td class="num">{f.raw:,}</td>'
            f'<td class="num">{f.noise:,}</td></tr>'
            for f in r.fields
        ]
        out.append(_table(["top differing fields", "#pairs differing", "#old vs old"], rows))
    if r.skipped and v.checks:
        out.append(
            '<p class="note">Not shadowed: ' + ", ".join(f"{escape(k)} {n:,}" for k, n in r.skipped) + "</p>"
        )
    if r.lost:
        out.append(
            '<p class="note">Shadowed, never recorded: '
            + ", ".join(f"{escape(k)} {n:,}" for k, n in r.lost)
            + "</p>"
        )
    for i, s in enumerate(r.examples, 1):
        diff = "\n".join(diff_lines(s.fields)) or "(no field detail: " + ", ".join(s.parts) + ")"
        opened = " open" if i == 1 else ""
        out.append(
            f"<details{opened}><summary>Example {i}: <code>{escape(request_line(s))}</code> · "
            f'{escape(statuses(s))}</summary><p class="note">request <code>{escape(s.request_id)}</code></p>'
            f"<pre>{escape(diff)}</pre>"
            + (f"<pre>{escape(_cut(s.explanation))}</pre>" if s.explanation else "")
            + _bodies(s.primary_body, s.shadow_body)
            + "</details>"
        )
    out.append("</section>")
    return "\n".join(out)


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_BODY_CHARS else text[:_MAX_BODY_CHARS] + "\n… (truncated)"


def _bodies(primary: str, shadow: str) -> str:
    if not primary and not shadow:
        return ""
    return (
        '<details><summary class="note">bodies (stored, redacted)</summary>'
        f'<p class="note">primary</p><pre>{escape(_cut(primary))}</pre>'
        f'<p class="note">shadow</p><pre>{escape(_cut(shadow))}</pre></details>'
    )
