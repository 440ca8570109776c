"""The catalogue is the same before and after a refactoring: every column, every row.

Usage::

    python -m benchmarks.identity --before REF [--n 48] [--workdir DIR]

A fixed input set is written once: ``--n`` simulated cutouts (FITS, seed 3131), 8-bit colour
JPEG copies of the first 16 of them (a pixel scale from an input catalogue) and the whole
bad-input corpus of :mod:`survey_bars.testing` (error rows and flagged rows). The set is run
through ``survey-bars process`` with each bar-measuring method (``auto``, ``moments``,
``bhambra2022``) twice: by the code at git ``REF`` (checked out into a temporary worktree)
and by the working tree. The two catalogues of each method must have the same rows and
columns; numbers must agree to floating-point identity (NaN equals NaN), strings exactly.
Columns that hold a run's own time or path are left out (none today: the catalogue's
columns are all per-object).

Exit status 0 when every catalogue is identical, 1 otherwise; the differing columns are
printed. This is a check for refactorings, not a timed benchmark: it writes nothing to
RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ("auto", "moments", "bhambra2022")

_WRITE_INPUTS = r"""
import csv, os, sys
import numpy as np
from PIL import Image
from astropy.io import fits
from survey_bars.simulate import simulate
from survey_bars.testing import corpus_inputs, make_bad_corpus

work, n = sys.argv[1], int(sys.argv[2])
sims = os.path.join(work, "sims")
simulate(sims, n, seed=3131, workers=1)
jpg = os.path.join(work, "jpeg")
os.makedirs(jpg)
rows = []
for name in sorted(f for f in os.listdir(sims) if f.endswith(".fits"))[:16]:
    data = fits.getdata(os.path.join(sims, name)).astype(float)
    lo, hi = np.nanpercentile(data, [1, 99.7])
    g = np.clip((data - lo) / (hi - lo), 0, 1)
    rgb = (np.stack([g, g ** 1.1, g ** 0.9], axis=-1) * 255).round().astype(np.uint8)
    path = os.path.join(jpg, name.replace(".fits", ".jpg"))
    Image.fromarray(rgb[::-1]).save(path, quality=90)
    rows.append({"file": path, "pixel_scale": 0.262})
with open(os.path.join(work, "jpeg.csv"), "w", newline="") as fh:
    w = csv.DictWriter(fh, ["file", "pixel_scale"])
    w.writeheader()
    w.writerows(rows)
cases = make_bad_corpus(os.path.join(work, "corpus"), bombs=False)
extra, cat = corpus_inputs(os.path.join(work, "corpus-inputs"), cases)
with open(os.path.join(work, "corpus-args.txt"), "w") as fh:
    fh.write("\n".join(["--input", os.path.join(work, "corpus"), *extra] + (["--catalogue", cat] if cat else [])))
"""


def _run(args, tree, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(tree), **(env_extra or {}))
    res = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        msg = f"command failed in {tree}: {' '.join(map(str, args))}"
        raise SystemExit(msg)
    return res


def _process(tree, work, out_dir, method):
    cli = [sys.executable, "-c", "import sys; from survey_bars.cli import main; sys.exit(main())", "process"]
    common = ["--workers", "1", "--method", method, "--quiet", "--overwrite"]
    outs = {}
    jobs = {
        "sims": ["--input", str(work / "sims")],
        "jpeg": ["--catalogue", str(work / "jpeg.csv")],
        "corpus": (work / "corpus-args.txt").read_text().split("\n"),
    }
    for name, inputs in jobs.items():
        out = out_dir / f"{name}-{method}.parquet"
        _run(cli + inputs + ["--out", str(out)] + common, tree)
        outs[name] = out
    return outs


def compare(a_path, b_path):
    """Return the differences between two catalogues as a list of strings (empty: identical)."""
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(a_path)
    b = pd.read_parquet(b_path)
    diffs = []
    if list(a.columns) != list(b.columns):
        diffs.append(f"columns differ: only before {sorted(set(a.columns) - set(b.columns))}, "
                     f"only after {sorted(set(b.columns) - set(a.columns))}")
    if len(a) != len(b):
        return diffs + [f"{len(a)} rows before, {len(b)} after"]
    key = ["file", "object_id"]
    a = a.sort_values(key, kind="stable").reset_index(drop=True)
    b = b.sort_values(key, kind="stable").reset_index(drop=True)
    for col in [c for c in a.columns if c in b.columns]:
        x, y = a[col], b[col]
        if x.dtype.kind in "fc" and y.dtype.kind in "fc":
            same = np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=True)
        else:
            same = x.astype(object).where(x.notna(), None).tolist() == y.astype(object).where(y.notna(), None).tolist()
        if not same:
            diffs.append(f"column {col!r} differs")
    return diffs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git ref of the code before the change")
    parser.add_argument("--n", type=int, default=48, help="simulated cutouts (default 48)")
    parser.add_argument("--workdir", default=None, help="keep the inputs and catalogues here")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="survey-bars-identity-"))
    work.mkdir(parents=True, exist_ok=True)
    before_tree = work / "before-tree"
    if before_tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(before_tree, ignore_errors=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.before], cwd=REPO, check=True,
                   capture_output=True)
    try:
        inputs = work / "inputs"
        if not (inputs / "corpus-args.txt").exists():
            shutil.rmtree(inputs, ignore_errors=True)
            inputs.mkdir()
            _run([sys.executable, "-c", _WRITE_INPUTS, str(inputs), str(args.n)], before_tree)
        failed = False
        for method in METHODS:
            before = _process(before_tree, inputs, _mk(work / "before"), method)
            after = _process(REPO, inputs, _mk(work / "after"), method)
            for name in before:
                diffs = compare(before[name], after[name])
                status = "identical" if not diffs else "DIFFERENT"
                print(f"{method:12s} {name:7s} {status}")
                for d in diffs:
                    print("    " + d)
                failed |= bool(diffs)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=REPO, capture_output=True)
    print("all catalogues identical" if not failed else "catalogues differ")
    return 1 if failed else 0


def _mk(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


if __name__ == "__main__":
    sys.exit(main())
