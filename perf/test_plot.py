#!/usr/bin/env python3
"""perf/plot.py runs: every plot is made from the committed results, parses as XML, and a second
run gives the same bytes; given files, only the plots they hold data for are made.

Usage: python3 perf/test_plot.py
Runs plot.py with target/perf-venv/bin/python when that exists (perf/README.md, "Pictures"),
else with this interpreter, which then needs matplotlib.
"""

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

PERF = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(os.path.dirname(PERF), "target", "perf-venv", "bin", "python")
PYTHON = VENV if os.path.exists(VENV) else sys.executable
EXPECTED = ["latency", "cpu", "rss", "cluster", "dialects", "headline"]


def plot(out, *files):
    r = subprocess.run([PYTHON, os.path.join(PERF, "plot.py"), "--out", out, *files], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"plot.py failed (matplotlib: perf/README.md, Pictures):\n{r.stderr}")
    return sorted(os.listdir(out))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        first, second, rss, dia = (os.path.join(tmp, d) for d in ("first", "second", "rss", "dialects"))
        assert plot(first) == sorted(f"{n}.svg" for n in EXPECTED), os.listdir(first)
        for name in EXPECTED:
            root = ET.parse(os.path.join(first, f"{name}.svg")).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg", (name, root.tag)
        plot(second)
        for name in EXPECTED:
            read = lambda d: open(os.path.join(d, f"{name}.svg"), "rb").read()
            assert read(first) == read(second), f"{name}.svg differs between two runs"
        dialects = os.path.join(PERF, "results", "2026-12-05", "dialects.jsonl")
        connect = os.path.join(PERF, "results", "2026-11-22", "connect-19k.jsonl")
        assert plot(rss, connect) == ["rss.svg"], os.listdir(rss)
        assert "dialects.svg" in plot(dia, dialects), os.listdir(dia)
        headline = os.path.join(PERF, "results", "2026-12-06", "headline.jsonl")
        hl = os.path.join(tmp, "headline")
        assert "headline.svg" in plot(hl, headline), os.listdir(hl)
    print(f"ok: {', '.join(EXPECTED)} made, valid XML, identical on a second run ({PYTHON})")


if __name__ == "__main__":
    main()
