#!/usr/bin/env python3
"""SVG plots of the benchmark results (perf/README.md, "Pictures").

Usage: perf/plot.py [--out DIR] [RESULTS.jsonl ...]

Without files, every plot reads its own committed files under perf/results/ (DEFAULTS below)
and is written to perf/plots/NAME.svg. With files, every plot reads all of them and is made only
if they hold rows of its kind. The JSON lines are read with perf/summarize.py's `load`.
Needs matplotlib (perf/requirements-plot.txt); the same results give byte-identical SVGs.
"""

import argparse
import glob
import json
import math
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from summarize import fanout_key, group, load, max_rate_shape, median  # noqa: E402

PERF = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(PERF, "results")
R1122 = os.path.join(RESULTS, "2026-11-22")
COMPARISON = [os.path.join(R1122, f) for f in ("fanout-1topic.jsonl", "fanout-10topics.jsonl", "market-data.jsonl")]
MAX_RATE = [os.path.join(R1122, f) for f in ("max-throughput.jsonl", "max-throughput-extended.jsonl")]
DEFAULTS = {
    "latency": MAX_RATE + COMPARISON,
    "cpu": MAX_RATE + COMPARISON + [os.path.join(R1122, "floor.jsonl")],
    "rss": [os.path.join(R1122, "connect-19k.jsonl"), os.path.join(R1122, "connect-19k-issues45.jsonl"),
            os.path.join(RESULTS, "2026-12-05", "deflate.jsonl"), os.path.join(RESULTS, "2026-12-06", "ab-conn.jsonl")],
    "cluster": sorted(glob.glob(os.path.join(RESULTS, "*", "cluster-*", "bench.jsonl"))),
    "dialects": sorted(glob.glob(os.path.join(RESULTS, "2026-12-05", "dialects*.jsonl"))),
    "headline": [os.path.join(RESULTS, "2026-12-06", "headline.jsonl")],
}
COLORS = {"tickcast": "C0", "baseline": "C1", "node-ws": "C2", "v1": "C0", "centrifugo": "C3",
          "binance": "C4", "mixed": "C5"}
ORDER = list(COLORS)

plt.rcParams.update({"svg.hashsalt": "tickcast", "svg.fonttype": "none", "font.size": 9,
                     "axes.grid": True, "grid.alpha": 0.3})


def read(paths):
    """The JSON lines of the files, each row tagged with its file (`_file`)."""
    rows = []
    for p in paths:
        for r in load([p]):
            r["_file"] = p
            rows.append(r)
    return rows


def spread(values):
    """(median, median − min, max − median) of the values that are not None, or None."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    m = statistics.median(values)
    return m, m - min(values), max(values) - m


def ordered(names):
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def color(name):
    return COLORS.get(name.split("/")[0], "0.3")


def latency_ms(pct):
    return lambda r: (r.get("latency_us") or {}).get(pct, 0) / 1e3 or None


def when(rows):
    """The subtitle "runs DATE – DATE UTC" from the rows' `date` fields ("" if they carry none)."""
    dates = sorted(r["date"][:16].replace("T", " ") for r in rows if r.get("date"))
    if not dates:
        return ""
    return f"runs {dates[0]} UTC" if dates[0] == dates[-1] else f"runs {dates[0]} – {dates[-1]} UTC"


def figure(title, rows, ncols=1, width=7.0, height=4.6, note=""):
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained", squeeze=False)
    fig.suptitle(f"{title}\n{'; '.join(s for s in (when(rows), note) if s)}", fontsize=10)
    return fig, axes[0]


def offered(key):
    subs, topics, per, rate, _ = key
    return subs * per / topics * rate


def si(v):
    for div, prefix in ((1e6, " M "), (1e3, " k ")):
        if v >= div:
            return f"{v / div:g}{prefix}"
    return f"{v:g} "


def short(v):
    """3 significant digits with k / M: 6565000 → "6.57 M"."""
    for div, prefix in ((1e6, " M"), (1e3, " k")):
        if v >= div:
            return f"{v / div:.3g}{prefix}"
    return f"{v:.3g}"


def shape_label(key):
    subs, topics, per, rate, _ = key
    each = f", {per} each" if per > 1 else ""
    topics_s = f"{topics} topic{'s' * (topics > 1)}{each}"
    return f"{si(subs)}subs × {topics_s}\n{si(rate)}msgs/s\n→ {si(offered(key))}deliveries/s"


def shape_panel(ax, rows, series, who=lambda r: r["server"]):
    """One column per fanout shape, one dot per `who` and series: the median of the runs, whiskers
    from the lowest to the highest run. series: (name, value of a row, filled marker?)."""
    shapes = sorted(group(rows, fanout_key), key=lambda k: (k[0], k[1], k[3]))
    by = group(rows, who)
    names = ordered(n for n, rs in by.items() if any(v(r) is not None for r in rs for _, v, _ in series))
    if len(names) < len(by):
        ax.text(0.01, 0.01, f"no values: {', '.join(ordered(set(by) - set(names)))}", transform=ax.transAxes)
    colors = [color(n) for n in names]
    if len(set(colors)) < len(colors):
        colors = [f"C{j % 10}" for j in range(len(names))]
    for j, name in enumerate(names):
        labelled = set()
        for i, key in enumerate(shapes):
            rs = [r for r in rows if fanout_key(r) == key and who(r) == name]
            x = i + (j + 0.5) / len(names) * 0.7 - 0.35
            meds = []
            for sname, value, filled in series:
                s = spread([value(r) for r in rs])
                if s:
                    meds.append(s[0])
                    ax.errorbar([x], [s[0]], yerr=[[s[1]], [s[2]]], fmt="o", color=colors[j], capsize=2,
                                mfc=colors[j] if filled else "white",
                                label=None if sname in labelled else f"{name} {sname}".strip())
                    labelled.add(sname)
            if len(meds) > 1:
                ax.plot([x, x], [min(meds), max(meds)], color=colors[j], lw=1)
    ax.set_xticks(range(len(shapes)), [shape_label(k) for k in shapes], fontsize=7)
    ax.set_xlabel("fanout shape: subscribers × topics, publish rate → offered deliveries/s")
    ax.set_xlim(-0.5, len(shapes) - 0.5)
    return shapes


def steps_panel(ax, rows, field, ylabel):
    """The steps of every --max-rate search (one line per run) against deliveries/s."""
    seen = set()
    for r in rows:
        steps = r["steps"]
        ax.plot([s["deliveries_per_s"] for s in steps], [s[field] for s in steps], marker=".", lw=1,
                color=color(r["server"]), label=None if r["server"] in seen else r["server"])
        seen.add(r["server"])
    shapes = {max_rate_shape(r) for r in rows}
    if len(shapes) == 1:
        subs, topics, _, _ = next(iter(shapes))
        ax.set_title(f"--max-rate searches: {subs or 0:,} subs × {topics} topics, one line per run", fontsize=9)
    else:
        ax.set_title(f"--max-rate searches over {len(shapes)} shapes, one line per run", fontsize=9)
    ax.set(xscale="log", yscale="log", xlabel="deliveries/s (log)", ylabel=ylabel)


def panels(title, rows, fan_needs, order):
    """The --max-rate searches, the fanout runs (if any has `fan_needs`) and a figure with a panel for
    each of the two that is there, in `order`: (fig, steps, fan, {"steps"|"fan": axes}); fig None if neither."""
    rows = {"steps": [r for r in rows if r.get("scenario") == "fanout-max-rate" and r.get("steps")],
            "fan": [r for r in rows if r.get("scenario") == "fanout"]}
    if not any(r.get(fan_needs) for r in rows["fan"]):
        rows["fan"] = []
    kinds = [k for k in order if rows[k]]
    if not kinds:
        return None, [], [], {}
    fig, axes = figure(title, rows["steps"] + rows["fan"], ncols=len(kinds), width=6 * len(kinds))
    return fig, rows["steps"], rows["fan"], dict(zip(kinds, axes))


def plot_latency(rows):
    fig, steps, fan, ax = panels("Publish-to-receive latency per server", rows, "latency_us", ("steps", "fan"))
    if steps:
        steps_panel(ax["steps"], steps, "p99_ms", "p99 latency (ms, log; the steps keep no p50)")
        ax["steps"].axhline(steps[0]["p99_bound_ms"], color="0.5", ls="--", lw=1, label="p99 bound of the search")
        ax["steps"].legend()
    if fan:
        shape_panel(ax["fan"], fan, [("p50", latency_ms("p50"), False), ("p99", latency_ms("p99"), True)])
        ax["fan"].set(yscale="log", ylabel="latency (ms, log)")
        ax["fan"].set_title("fixed shapes: p50 (open) and p99 (filled), median of the runs, whiskers min–max",
                            fontsize=9)
        ax["fan"].legend(fontsize=7)
    return fig


def plot_cpu(rows):
    fig, steps, fan, ax = panels("Server CPU per delivery per server", rows, "server_cpu_ns_per_delivery_round",
                                 ("fan", "steps"))
    if fan:
        a = ax["fan"]
        shapes = shape_panel(a, fan, [("", lambda r: r.get("server_cpu_ns_per_delivery_round"), True)])
        floor = group([r for r in rows if r.get("scenario") == "floor" and r.get("batch") == 1], lambda r: r["n"])
        label = "floor: one write per frame, as many sockets"
        for i, key in enumerate(shapes):
            if key[0] in floor:
                a.hlines(median([r["writer_cpu_ns_per_write"] for r in floor[key[0]]]), i - 0.4, i + 0.4,
                         color="0.4", ls="--", label=label)
                label = None
        a.set(yscale="log", ylabel="server CPU ns per frame, whole round (log)")
        a.set_title("fixed shapes, median of the runs, whiskers min–max", fontsize=9)
        a.legend(fontsize=7)
    if steps:
        steps_panel(ax["steps"], steps, "server_cpu_ns_per_delivery", "server CPU ns per delivery, window (log)")
        ax["steps"].legend()
    return fig


def plot_rss(rows):
    rows = [r for r in rows if r.get("scenario") == "connect" and r.get("rss_per_conn_bytes")]
    if not rows:
        return None
    files = list(dict.fromkeys(r["_file"] for r in rows))
    groups = group(rows, lambda r: (files.index(r["_file"]), r["server"]))
    keys = sorted(groups, key=lambda k: (k[0], ordered(s for f, s in groups if f == k[0]).index(k[1])),
                  reverse=True)
    n = sorted({r["n"] for r in rows})
    fig, (ax,) = figure("Server RSS per idle subscribed connection, per server (connect runs)", rows,
                        width=8, height=1.4 + 0.32 * len(keys), note=f"{', '.join(f'{v:,}' for v in n)} connections")
    for y, k in enumerate(keys):
        rs = groups[k]
        m, lo, hi = spread([r["rss_per_conn_bytes"] for r in rs])
        ax.barh(y, m, xerr=[[lo], [hi]], color=color(k[1]), capsize=2)
        ax.text((m + hi) * 1.1, y, f"{m:,.0f} B", va="center", fontsize=8)
    ax.set(xscale="log", ylim=(-0.6, len(keys) - 0.4),
           xlabel="bytes per connection (log): (RSS after the hold − RSS before connecting) ÷ connections\n"
                  "median of the runs, whiskers min–max")
    ax.set_yticks(range(len(keys)), [f"{s}\n{os.path.relpath(files[f], RESULTS)}, {len(groups[(f, s)])} runs"
                                     for f, s in keys], fontsize=7)
    return fig


def commit(row):
    """The commit recorded next to a cluster run (setup.json of perf/scenarios/cluster-100k.sh)."""
    try:
        with open(os.path.join(os.path.dirname(row["_file"]), "setup.json")) as f:
            return json.load(f).get("commit")
    except (OSError, ValueError):
        return None


def plot_cluster(rows):
    rows = sorted((r for r in rows if r.get("scenario") == "fanout" and "," in r.get("url", "")),
                  key=lambda r: r["date"], reverse=True)
    if not rows:
        return None
    socks = sorted({r["subs_connected"] for r in rows})
    nodes = len(rows[0]["url"].split(","))
    fig, (a, b) = figure(f"Cluster runs: {nodes} nodes, subscribers spread round-robin", rows, ncols=2,
                         width=11, height=1.4 + 0.3 * len(rows),
                         note=f"sockets held: {', '.join(f'{s:,}' for s in socks)} (not varied, so not an axis)")
    ys = range(len(rows))
    labels = [f"{os.path.basename(os.path.dirname(r['_file']))} @{commit(r) or '?'}\n"
              f"{r['topics']} topics, {r['rate']:,.0f} msgs/s" for r in rows]
    a.barh(ys, [r["deliveries_per_s"] for r in rows], color="C0")
    a.set(xscale="log", xlabel="deliveries/s in the window (log)", ylim=(-0.6, len(rows) - 0.4))
    a.set_yticks(ys, labels, fontsize=7)
    for pct, filled in (("p50", False), ("p99", True)):
        b.plot([latency_ms(pct)(r) for r in rows], ys, "o", color="C3", mfc="C3" if filled else "white",
               label=pct)
    b.hlines(ys, [latency_ms("p50")(r) for r in rows], [latency_ms("p99")(r) for r in rows], color="C3", lw=1)
    b.set(xscale="log", xlabel="publish-to-receive latency (ms, log)", ylim=a.get_ylim())
    b.set_yticks(ys, [])
    b.legend()
    return fig


def plot_dialects(rows):
    rows = [r for r in rows if r.get("scenario") == "fanout" and r.get("dialect")
            and r["server"].startswith("tickcast/")]
    if not rows:
        return None
    fig, (ax,) = figure("Server CPU per delivery per subscriber format (dialects)", rows, width=8)
    shape_panel(ax, rows, [("", lambda r: r.get("server_cpu_ns_per_delivery"), True)], who=lambda r: r["dialect"])
    ax.set(ylim=(0, None), ylabel="server CPU ns per delivery, window")
    ax.set_title("one server process per shape serves every format; median of the runs, whiskers min–max",
                 fontsize=9)
    ax.legend(title="subscribers speak", fontsize=7, loc="upper center")
    return fig


def plot_headline(rows):
    """Bars: the max sustainable deliveries/s per --max-rate shape and server (median of the runs,
    whiskers min–max); a server none of whose steps passed gets a note instead of a bar."""
    rows = [r for r in rows if r.get("scenario") == "fanout-max-rate"]
    if not rows:
        return None
    bound = rows[0].get("p99_bound_ms")
    fig, (ax,) = figure("Max sustainable deliveries/s on one core", rows, width=8,
                        note=f"zero loss, p99 ≤ {bound:g} ms, rate ×{rows[0].get('rate_step', 1.5):g} per step")
    shapes = sorted(group(rows, max_rate_shape), key=lambda k: (k[0] or 0, k[1] or 0, str(k[3])))
    names = ordered(group(rows, lambda r: r["server"]))
    width = 0.8 / len(names)
    labelled, top, low = set(), 1, None
    for j, name in enumerate(names):
        for i, key in enumerate(shapes):
            rs = [r for r in rows if max_rate_shape(r) == key and r["server"] == name]
            if not rs:
                continue
            x = i - 0.4 + (j + 0.5) * width
            s = spread([r.get("max_sustainable_deliveries_per_s") for r in rs])
            if s is None:
                ax.text(x, 0.02, f"{name}:\nno step\npassed", ha="center", va="bottom", fontsize=6,
                        color=color(name), transform=ax.get_xaxis_transform())
                continue
            ax.bar([x], [s[0]], width * 0.9, yerr=[[s[1]], [s[2]]], capsize=2, color=color(name),
                   label=None if name in labelled else name)
            labelled.add(name)
            ax.text(x, s[0] + s[2], short(s[0]), ha="center", va="bottom", fontsize=7)
            top = max(top, s[0] + s[2])
            low = min(low or s[0] - s[1], s[0] - s[1])
    labels = []
    for subs, topics, per, data in shapes:
        each = f", {per} each" if per and per > 1 else ""
        labels.append(f"{si(subs or 0)}subs × {topics} topic{'s' * ((topics or 0) > 1)}{each}"
                      + ("\nmarket data" if data == "market" else ""))
    ax.set_xticks(range(len(shapes)), labels, fontsize=8)
    bottom = 10 ** math.floor(math.log10(low)) if low and low > 0 else 1
    ax.set(yscale="log", ylabel="deliveries/s (log)", ylim=(bottom, top * 5))
    ax.set_title("median of the runs, whiskers min–max; each server alone on the same core", fontsize=9)
    ax.legend(fontsize=8)
    return fig


PLOTS = {"latency": plot_latency, "cpu": plot_cpu, "rss": plot_rss, "cluster": plot_cluster,
         "dialects": plot_dialects, "headline": plot_headline}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(PERF, "plots"), help="directory for the SVGs (perf/plots)")
    p.add_argument("files", nargs="*", help="JSONL results (default: each plot's committed files)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    given = read(args.files) if args.files else None
    for name, plot in PLOTS.items():
        fig = plot(given if given is not None else read(DEFAULTS[name]))
        if fig is None:
            print(f"{name}: no rows for it, skipped", file=sys.stderr)
            continue
        path = os.path.join(args.out, f"{name}.svg")
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
