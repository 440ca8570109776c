"""Helpers shared by the benchmark scripts: JSON results and RESULTS.md blocks.

Each benchmark writes ``benchmarks/results/<name>.json`` and replaces the block between
``<!-- BEGIN <name> -->`` and ``<!-- END <name> -->`` in ``benchmarks/RESULTS.md`` with a
Markdown rendering, so the recorded figures always come from the last run of the command
that is named beside them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"


def machine():
    """A short description of the machine and software."""
    import numpy as np
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git": _git(),
    }


def _git():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def save(name, data, markdown, command, json_path=None):
    """Write the JSON result and update the RESULTS.md block ``name``.

    With ``json_path`` the JSON goes there instead, and RESULTS.md and ``benchmarks/results``
    are left alone (for scoring a candidate); the block is printed either way.
    """
    data = {"command": command, "machine": machine(), **data}
    text = json.dumps(data, indent=2, default=float) + "\n"
    if json_path is not None:
        Path(json_path).write_text(text)
        print(markdown)
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(text)
    block = f"<!-- BEGIN {name} -->\nCommand: `{command}` ({data['machine']['date']}, git {data['machine']['git']}, {data['machine']['cpu']}, {data['machine']['cores']} cores)\n\n{markdown.strip()}\n<!-- END {name} -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin in text and end in text:
        pre = text[: text.index(begin)]
        post = text[text.index(end) + len(end) :]
        text = pre + block + post
    else:
        text = text.rstrip() + f"\n\n## {name}\n\n" + block + "\n"
    RESULTS_MD.write_text(text)
    print(markdown)


def table(header, rows):
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def real_dev_root(prog):
    """The real-dev directory of a benchmark that needs it, or None after saying where to put it.

    Parameters
    ----------
    prog : str
        The benchmark's name, for the error line on standard error.

    Returns
    -------
    pathlib.Path or None
        :func:`survey_bars.training.realdata.default_root` when it holds the GZ2 labels.
    """
    from survey_bars.training import realdata

    root = realdata.default_root()
    if (root / realdata.GZ2_DIR / "labels.csv").is_file():
        return root
    print(f"{prog}: error: no real-dev data in {root}: set $SURVEY_BARS_REAL_DEV to the directory that holds "
          f"{realdata.GZ2_DIR}/labels.csv", file=sys.stderr)
    return None


def has_torch(prog):
    """Whether torch is installed; if not, say how to install it (the ``[train]`` extra) and return False."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        return True
    print(f'{prog}: error: this benchmark trains networks and needs torch: pip install -e ".[train]"', file=sys.stderr)
    return False


def print_json_line(result, out_json=None):
    """Print a benchmark's result as one JSON line, and also write it to ``out_json`` when given."""
    line = json.dumps(result)
    print(line)
    if out_json:
        with open(out_json, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
