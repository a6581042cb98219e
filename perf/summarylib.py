"""Helpers shared by the perf summaries (summarize_deflate.py, summarize_dialects.py)."""

import statistics


def cell(vals, digits=0):
    """Median of the values that are not None, with [min–max] when they differ; "–" if none."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    f = lambda v: f"{v:,.{digits}f}"
    m = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return f(m)
    return f"{f(m)} [{f(min(vals))}–{f(max(vals))}]"
