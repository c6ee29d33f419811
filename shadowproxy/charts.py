"""Inline SVG charts for the html report: no scripts, no fonts, no network.

Latency is drawn as bucket ranges (where the quantile lies), never as an interpolated
point, and on a log axis because routes differ by orders of magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from shadowproxy.gate import DASH, Outcome, RouteVerdict, bucket_range, pct, seconds

MAX_ROWS = 40
COLOURS: dict[Outcome, str] = {"pass": "#1a7f37", "fail": "#cf222e", "open": "#9a6700"}
PRIMARY, SHADOW, LIMIT, GRID, INK, MUTED = "#6e7781", "#8250df", "#cf222e", "#d0d7de", "#1f2328", "#59636e"
_W, _LABEL, _RIGHT = 880, 220, 24
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"


def _el(tag: str, text: str | None = None, **attrs: float | str) -> str:
    """One SVG element; attribute names use _ for -, numbers get one decimal."""
    parts = []
    for k, v in attrs.items():
        shown = f"{v:.1f}" if isinstance(v, float) else str(v)
        parts.append(f'{k.rstrip("_").replace("_", "-")}="{escape(shown, quote=True)}"')
    head = f"<{tag} {' '.join(parts)}"
    return f"{head}/>" if text is None else f"{head}>{escape(text)}</{tag}>"


class _LogAxis:
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = math.log10(lo), math.log10(hi)
        self.x0, self.x1 = float(_LABEL), float(_W - _RIGHT)

    def x(self, v: float) -> float:
        if v <= 0:
            return self.x0
        if math.isinf(v):
            return self.x1
        f = (math.log10(v) - self.lo) / (self.hi - self.lo)
        return self.x0 + min(1.0, max(0.0, f)) * (self.x1 - self.x0)

    def ticks(self, ticks: Sequence[tuple[float, str]], top: float, bottom: float) -> list[str]:
        out = []
        for v, text in ticks:
            x = self.x(v)
            out.append(_el("line", x1=x, y1=top, x2=x, y2=bottom, stroke=GRID))
            out.append(_el("text", text, x=x, y=bottom + 14, font_size=11, fill=MUTED, text_anchor="middle"))
        return out


def _label(text: str) -> str:
    return text if len(text) <= 30 else text[:29] + "…"


def _row_label(text: str, y: float) -> str:
    return _el("text", _label(text), x=_LABEL - 8, y=y, font_size=12, text_anchor="end", fill=INK)


def _svg(height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {_W} {height:.0f}" '
        f'width="100%" style="{_FONT};max-width:{_W}px"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def latency_chart(routes: Sequence[RouteVerdict], slo_s: float) -> str:
    """Per route, primary and shadow: the p50 bucket (dark) and the p50 to p95 span (light)."""
    rows = [r for r in routes if r.evidence.primary_latency.total or r.evidence.shadow_latency.total][
        :MAX_ROWS
    ]
    axis = _LogAxis(0.001, 30.0)
    top, row_h, gap = 34.0, 13.0, 12.0
    height = top + len(rows) * (2 * row_h + gap) + 30
    bottom = height - 30
    body = [
        _el("rect", x=_LABEL, y=6, width=10, height=10, fill=PRIMARY),
        _el("text", "primary", x=_LABEL + 14, y=15, font_size=12, fill=INK),
        _el("rect", x=_LABEL + 80, y=6, width=10, height=10, fill=SHADOW),
        _el("text", "shadow", x=_LABEL + 94, y=15, font_size=12, fill=INK),
        _el(
            "text",
            f"dark: p50 bucket · light: p50{DASH}p95 buckets · dashed: SLO {seconds(slo_s)}",
            x=_LABEL + 160,
            y=15,
            font_size=12,
            fill=MUTED,
        ),
    ]
    ticks = [(0.001, "1 ms"), (0.01, "10 ms"), (0.1, "100 ms"), (1.0, "1 s"), (10.0, "10 s")]
    body += axis.ticks(ticks, top - 6, bottom)
    y = top
    for r in rows:
        body.append(_row_label(r.route, y + row_h + 4))
        for h, colour in ((r.evidence.primary_latency, PRIMARY), (r.evidence.shadow_latency, SHADOW)):
            p50, p95 = h.quantile_range(0.5), h.quantile_range(0.95)
            if p50 is not None and p95 is not None:
                x50, x50e, x95e = axis.x(p50[0]), axis.x(p50[1]), axis.x(p95[1])
                tip = f"{r.route}: p50 {bucket_range(p50)}, p95 {bucket_range(p95)}"
                body.append(
                    f"<g><title>{escape(tip)}</title>"
                    + _el("rect", x=x50, y=y, width=max(2.0, x95e - x50), height=row_h - 2, rx=2, fill=colour,
                          fill_opacity="0.25")
                    + _el("rect", x=x50, y=y, width=max(2.0, x50e - x50), height=row_h - 2, rx=2, fill=colour)
                    + "</g>"
                )  # fmt: skip
            y += row_h
        y += gap
    x = axis.x(slo_s)
    body.append(_el("line", x1=x, y1=top - 6, x2=x, y2=bottom, stroke=LIMIT, stroke_dasharray="4 3"))
    return _svg(height, "Latency per route, primary and shadow (bucket ranges, log scale)", body)


def mismatch_chart(routes: Sequence[RouteVerdict]) -> str:
    """Per route: the mismatch estimate, its decision interval, and the route's limit (red tick)."""
    rows = [(r, c) for r in routes if (c := r.check("mismatch")) is not None and c.n > 0][:MAX_ROWS]
    axis = _LogAxis(1e-5, 1.0)
    top, row_h = 16.0, 24.0
    height = top + len(rows) * row_h + 34
    bottom = height - 30
    ticks = [(1e-5, "0.001%"), (1e-4, "0.01%"), (1e-3, "0.1%"), (1e-2, "1%"), (0.1, "10%"), (1.0, "100%")]
    body = axis.ticks(ticks, top - 6, bottom)
    y = top
    for r, c in rows:
        colour = COLOURS[c.outcome]
        mid = y + row_h / 2
        est, low, high = c.estimate or 0.0, c.low or 0.0, 1.0 if c.high is None else c.high
        lo, hi, lim = axis.x(low), axis.x(high), axis.x(c.limit)
        tip = f"{r.route}: {pct(est)} [{pct(low)}{DASH}{pct(high)}], limit {pct(c.limit)}, {c.outcome}"
        body.append(_row_label(r.route, mid + 4))
        body.append(
            f"<g><title>{escape(tip)}</title>"
            + _el("line", x1=lo, y1=mid, x2=hi, y2=mid, stroke=colour, stroke_width=3, stroke_linecap="round")
            + _el("circle", cx=axis.x(est), cy=mid, r=5, fill=colour, stroke="#fff", stroke_width="1.5")
            + _el("line", x1=lim, y1=mid - 9, x2=lim, y2=mid + 9, stroke=LIMIT, stroke_width=2)
            + "</g>"
        )
        y += row_h
    return _svg(height, "Mismatch rate per route against its limit (log scale)", body)
