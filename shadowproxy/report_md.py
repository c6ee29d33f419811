"""The report as Markdown: readable raw in a terminal, and rendered on GitHub.

Route names come from request paths (automatic templates), so every piece of data is escaped;
generated text is escaped lightly, keeping the raw file readable.
"""

from __future__ import annotations

import re

from shadowproxy.gate import CHECKS, DASH, TITLES
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

# Markup that changes meaning: `<` (html), `[` only where a link could start, `_` only at word edges.
_SPECIAL = re.compile(r"[\\`*|~<]|\[(?=[^\]]*\][(\[:])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def esc(text: str) -> str:
    """Escape what Markdown would read as markup, and no more: the raw file stays readable."""
    flat = " ".join(text.split())
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), flat)


def code(text: str) -> str:
    """An inline code span that survives backticks in the text (and pipes, in tables)."""
    flat = " ".join(text.split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def fenced(body: str, lang: str = "text") -> list[str]:
    longest = max((len(m) for m in re.findall(r"`{3,}", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", body.rstrip("\n"), fence]


def table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """`align` has one letter per column: l or r."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(head))]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(marks) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(view: ReportView) -> str:
    d = view.decision
    lines = [f"# Cutover report: {d.verdict}", "", f"**{esc(view.headline)}**", ""]
    lines += [
        f"Source {code(view.source)}, window {esc(view.window)}; config {code(view.config_source)} "
        f"(digest {code(view.digest)}).",
        "",
        "## Verdict",
        "",
    ]
    lines += [f"- {esc(r)}" for r in d.reasons] + [""]
    lines += [*_summary(view), ""]
    lines += [*_coverage(view), ""]
    lines += [*_criteria(view), ""]
    lines += ["## Routes", ""]
    for r in view.routes:
        lines += [*_route(r)]
    if view.suggestions_yaml:
        lines += ["## Suggested ignore rules (learned noise)", ""]
        lines += [*fenced(view.suggestions_yaml, "yaml"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _summary(view: ReportView) -> list[str]:
    head = ["route", "verdict", "compared", *(TITLES[c] for c in CHECKS)]
    rows = []
    for r in view.routes:
        v = r.v
        verdict = v.verdict + (" (early)" if v.early else "") + (" · critical" if v.critical else "")
        row = [code(r.name), verdict, f"{v.evidence.compared:,}"]
        for name in CHECKS:
            c = v.check(name)
            row.append(DASH if c is None else f"{esc(interval(c))} vs {esc(limit(c))}: {c.outcome}")
        rows.append(row)
    return ["## Summary", "", *table(head, rows, "llr" + "l" * len(CHECKS)), "", _legend()]


def _legend() -> str:
    return (
        "Cells: estimate [NO-GO lower bound" + DASH + "GO upper bound] vs limit: outcome. "
        "pass = proven within the limit; fail = proven over it; open = not proven either way."
    )


def _coverage(view: ReportView) -> list[str]:
    c = view.decision.coverage

    def names(xs: tuple[str, ...]) -> str:
        return ", ".join(code(x) for x in xs) or "none"

    return [
        "## Coverage",
        "",
        f"- Declared routes seen: {names(c.declared_seen)}",
        f"- Declared routes not seen: {names(c.declared_unseen)}",
        f"- Under min_samples (compared): {names(c.under_min)}",
        f"- Automatic routes seen: {names(c.auto)}",
    ]


def _criteria(view: ReportView) -> list[str]:
    lines = ["## Criteria", ""]
    lines += table(["criterion", "global"], [[code(k), esc(v)] for k, v in view.criteria])
    if view.overrides:
        lines += ["", "Per-route overrides:", ""]
        lines += table(["route", "differs from global"], [[code(r), esc(d)] for r, d in view.overrides])
    lines += ["", "How the verdict is reached:", ""]
    lines += [f"- {esc(n)}" for n in view.notes]
    return lines


def _route(r: RouteView) -> list[str]:
    v = r.v
    tags = " (early)" if v.early else ""
    tags += ", critical" if v.critical else ""
    tags += "" if v.declared else ", automatic route"
    lines = [f"### {esc(r.name)}: {v.verdict}{tags}", ""]
    lines += [f"- {esc(reason)}" for reason in v.reasons] + [""]
    if not v.checks:
        return lines  # the one reason already says it all (no traffic, or why nothing was shadowed)
    lines += [esc(traffic(v)) + ".", ""]
    rows = [
        [x.quantile, x.primary, x.shadow, " ".join(filter(None, (x.expected, x.expected_met)))]
        for x in r.latency
    ]
    lines += [*table(["latency", "primary", "shadow", "plan target"], rows), ""]
    checks = [
        [check_title(c.name, v.gate), f"{c.k:,} / {c.n:,}", esc(interval(c)), esc(limit(c)), c.outcome]
        for c in v.checks
    ]
    lines += [*table(["check", "k / n", "estimate [bounds]", "limit", "outcome"], checks, "lrlll"), ""]
    if r.fields:
        fields = [[code(f.path), f"{f.raw:,}", f"{f.noise:,}"] for f in r.fields]
        lines += ["Top differing fields:", ""]
        lines += [*table(["field", "pairs differing", "old vs old"], fields, "lrr"), ""]
    if r.skipped:
        lines += ["Not shadowed: " + ", ".join(f"{esc(k)} {n:,}" for k, n in r.skipped) + ".", ""]
    if r.lost:
        lines += ["Shadowed, never recorded: " + ", ".join(f"{esc(k)} {n:,}" for k, n in r.lost) + ".", ""]
    for i, s in enumerate(r.examples, 1):
        lines += [
            f"Example {i}: {code(request_line(s))}, {esc(statuses(s))}, request {code(s.request_id)}",
            "",
        ]
        lines += fenced("\n".join(diff_lines(s.fields)) or "(no field detail: " + ", ".join(s.parts) + ")")
        lines += [""]
    return lines
