"""Reliability benchmark: the bad-input corpus, injected faults, the fuzz run and TLS.

``python -m benchmarks.reliability`` builds the bad-input corpus of
:func:`survey_bars.testing.make_bad_corpus`, runs ``survey_bars.cluster.process`` over it on a
LocalCluster with one worker, and records for each case the outcome (status / reason / flags)
and rows in = rows out. It injects the faults that can be run in-process (a full staging disk,
a full disk at assembly, an existing ``--out``), runs the reader fuzz (FITS, JPEG and PNG:
``tests/test_fuzz.py``) and the TLS tests (``tests/test_tls.py``) with pytest, and writes the
table to ``benchmarks/RESULTS.md`` (block ``reliability``). The corpus' JPEG and PNG cases are
written by Pillow at run time, like the rest.

Options: ``--fuzz-examples N`` (default 1000), ``--no-fuzz``, ``--no-tls``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks.common import save, table

ROOT = Path(__file__).resolve().parents[1]


def _outcome(row):
    from survey_bars.flags import describe

    f = row.get("quality_flags")
    f = 0 if f is None or f != f else int(f)
    parts = [row["status"]]
    if row["status"] != "ok" and isinstance(row.get("error"), str):
        parts.append(row["error"].split(":", 1)[0])
    if f:
        parts.append("+".join(describe(f)))
    return " / ".join(parts)


def run_corpus(work, model):
    """Run process() over the corpus; return table rows and a summary."""
    import pandas as pd

    from survey_bars.cluster import process
    from survey_bars.pipeline import RunOptions
    from survey_bars.testing import check_row, corpus_inputs, make_bad_corpus

    t0 = time.perf_counter()
    cases = make_bad_corpus(work / "inputs")
    t_build = time.perf_counter() - t0
    extra, catalogue = corpus_inputs(work / "job", cases)
    out = work / "catalogue.parquet"
    t0 = time.perf_counter()
    summary = process([str(work / "inputs")] + extra, out, workers=1, partition_size=8, catalogue=catalogue,
                      options=RunOptions(model=model, smoothgrad_samples=8), progress=False)
    t_job = time.perf_counter() - t0
    df = pd.read_parquet(out)
    by_file = {r["file"]: r for r in df.to_dict("records")}
    rows, n_pass = [], 0
    for c in cases:
        got = [by_file.get(os.path.abspath(p)) for p in c.paths]
        found = [g for g in got if g is not None]
        problems = [m for g in found for m in check_row(c, g, job=True)]
        if len(found) != len(c.paths):
            problems.append("missing row")
        ok = not problems
        n_pass += ok
        outcomes = sorted({_outcome(g) for g in found})
        rows.append({
            "case": c.name,
            "expected": c.expected_text(),
            "outcome": "; ".join(outcomes),
            "rows_in": len(c.paths),
            "rows_out": len(found),
            "pass": ok,
            "problems": problems,
            "note": c.description,
        })
    n_in = sum(len(c.paths) for c in cases)
    return rows, {
        "cases": len(cases), "cases_as_expected": n_pass, "rows_in": n_in, "rows_out": int(len(df)),
        "rows_out_unique_files": int(df.file.nunique()), "job_summary": {k: (v if not isinstance(v, float) else round(v, 2)) for k, v in summary.items()},
        "corpus_build_s": round(t_build, 2), "job_s": round(t_job, 2),
    }


def run_limits(work):
    """Time and peak Python memory of refusing the huge header and the bombs."""
    from survey_bars.io import CutoutError, read_cutout

    out = []
    for name in ["huge_header_only.fits", "gzip_bomb.fits.gz", "gzip_bomb_two_members.fits.gz", "bzip2_bomb.fits", "xz_bomb.fits", "zip_bomb.fits",
                 "png_over_max_pixels.png", "png_bomb.png", "png_small_bomb.png"]:
        p = work / "inputs" / name
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            read_cutout(p)
            reason = "ok"
        except CutoutError as exc:
            reason = exc.reason
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append({"file": name, "bytes_on_disk": p.stat().st_size, "reason": reason, "seconds": round(dt, 3), "peak_python_mb": round(peak / 1e6, 1)})
    return out


def run_unreadable_simulated(work):
    """EACCES on open, simulated (root reads chmod 000 files)."""
    import survey_bars.io.cutout as cutouts
    from survey_bars.io import CutoutError, read_cutout
    from survey_bars.testing import galaxy_image, write_cutout

    p = write_cutout(work / "locked.fits", galaxy_image(seed=3))

    def denied(path, *a, **k):
        if os.fspath(path) == p:
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return open(path, *a, **k)

    cutouts.open = denied
    try:
        read_cutout(p)
        return "ok"
    except CutoutError as exc:
        return f"error / {exc.reason}"
    finally:
        del cutouts.open


def run_faults(work, model):
    """Faults that can be injected in this process; each is followed by the recovery."""
    import pandas as pd
    from distributed import Client, LocalCluster

    from survey_bars.cluster import JobError, process
    from survey_bars.pipeline import RunOptions
    from survey_bars.testing import forget_tasks, full_disk, galaxy_image, write_cutout

    d = work / "fault_inputs"
    d.mkdir()
    n = 8
    for i in range(n):
        write_cutout(d / f"g{i}.fits", galaxy_image(seed=300 + i, bar_len=20 if i % 2 else None), objid=f"F{i}")
    opts = RunOptions(model=model, smoothgrad_samples=8)
    rows = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        def run(out, **kw):
            forget_tasks(cluster)
            return process([str(d)], out, client=client, partition_size=2, options=opts, progress=False, **kw)

        clean = work / "clean.parquet"
        run(clean)
        ref = pd.read_parquet(clean)

        out = work / "full_staging.parquet"
        with full_disk(partition=1):
            try:
                run(out, retries=1)
                msg = "no error"
            except JobError as exc:
                msg = str(exc)
        left = os.listdir(str(out) + ".parts")
        corrupt = [f for f in left if f.startswith(".tmp") or f.startswith("part-000001")]
        run(out, resume=True)
        same = pd.read_parquet(out).equals(ref)
        rows.append({"fault": "full disk in the staging dir (ENOSPC writing partition 1)",
                     "outcome": f"JobError: {_short(msg)}; partial/tmp files left: {len(corrupt)}; no --out written",
                     "recovery": f"--resume: {'identical to a clean run' if same else 'DIFFERS'}", "rows_in": n, "rows_out": len(pd.read_parquet(out))})

        out = work / "full_assembly.parquet"
        with full_disk(at_assembly=True):
            try:
                run(out)
                msg = "no error"
            except Exception as exc:  # an OSError today
                msg = f"{type(exc).__name__}: {exc}"
        exists = out.exists()
        run(out, resume=True)
        same = pd.read_parquet(out).equals(ref)
        rows.append({"fault": "full disk while the catalogue is assembled",
                     "outcome": f"{_short(msg)}; partial catalogue left: {exists}",
                     "recovery": f"--resume: {'identical to a clean run' if same else 'DIFFERS'}", "rows_in": n, "rows_out": len(pd.read_parquet(out))})

        forget_tasks(cluster)
        try:
            process([str(d)], clean, client=client, partition_size=2, options=opts, progress=False)
            msg = "not refused"
        except JobError as exc:
            msg = f"JobError: {exc}"
        rows.append({"fault": "existing --out without --overwrite", "outcome": _short(msg),
                     "recovery": f"catalogue untouched: {pd.read_parquet(clean).equals(ref)}", "rows_in": n, "rows_out": len(pd.read_parquet(clean))})
    for name, what in [("test_sigkill_worker_mid_job", "SIGKILL of a worker mid-job"),
                       ("test_interrupted_then_resume_equals_clean", "SIGINT to the client mid-run, then --resume")]:
        rows.append({"fault": what, "outcome": f"covered by tests/test_cluster.py::{name} (240 galaxies; not rerun here)",
                     "recovery": "catalogue complete and identical to a clean run (asserted there)", "rows_in": 240, "rows_out": "240 (asserted)"})
    return rows


def _short(msg, n=160):
    msg = " ".join(str(msg).split())
    msg = re.sub(r"'/[^']*/", "'.../", msg)
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def run_pytest(args, env=None):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=1800)
    tail = [line for line in r.stdout.splitlines() if re.search(r"\d+ (passed|failed|xfailed|error)", line)]
    return {"returncode": r.returncode, "summary": tail[-1] if tail else r.stdout[-300:], "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    """Run the benchmark and update ``benchmarks/RESULTS.md``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-examples", type=int, default=1000)
    ap.add_argument("--no-fuzz", action="store_true")
    ap.add_argument("--no-tls", action="store_true")
    args = ap.parse_args(argv)
    command = "python -m benchmarks.reliability" + (f" --fuzz-examples {args.fuzz_examples}" if args.fuzz_examples != 1000 else "") + \
        (" --no-fuzz" if args.no_fuzz else "") + (" --no-tls" if args.no_tls else "")

    from survey_bars.testing import model_for_tests

    model = model_for_tests()
    data = {"model": "default bundle" if model is None else "tiny random-weight test bundle (default bundle absent)"}
    with tempfile.TemporaryDirectory(prefix="survey-bars-reliability-") as tmp:
        work = Path(tmp)
        corpus_rows, corpus_summary = run_corpus(work, model)
        data["corpus"] = corpus_rows
        data["corpus_summary"] = corpus_summary
        data["limits"] = run_limits(work)
        data["unreadable_simulated"] = run_unreadable_simulated(work)
        data["faults"] = run_faults(work, model)
        if not args.no_fuzz:
            report = work / "fuzz.json"
            res = run_pytest(["tests/test_fuzz.py"], env={"SURVEY_BARS_FUZZ_EXAMPLES": str(args.fuzz_examples), "SURVEY_BARS_FUZZ_REPORT": str(report)})
            res["stats"] = json.loads(report.read_text()) if report.exists() else None
            data["fuzz"] = res
        if not args.no_tls:
            data["tls"] = run_pytest(["tests/test_tls.py", "-rxX"])

    s = data["corpus_summary"]
    md = [f"Model: {data['model']}. One `process()` job (LocalCluster, 1 worker, partitions of 8, SmoothGrad 8 samples) over "
          f"the corpus of `survey_bars.testing.make_bad_corpus`: {s['cases']} cases, **{s['cases_as_expected']}/{s['cases']} as expected**, "
          f"rows in {s['rows_in']} = rows out {s['rows_out']} ({s['rows_out_unique_files']} distinct files); job {s['job_s']} s.", ""]
    md.append(table(["case", "expected", "outcome (status / reason / flags)", "rows in", "rows out", "as expected"],
                    [[r["case"], r["expected"], r["outcome"], r["rows_in"], r["rows_out"], "yes" if r["pass"] else "**NO** " + "; ".join(r["problems"])]
                     for r in corpus_rows]))
    md += ["", f"Unreadable file with a simulated EACCES on open (root reads chmod 000 files): {data['unreadable_simulated']}.", ""]
    md.append("Refusals without reading (Python peak memory by tracemalloc):")
    md.append("")
    md.append(table(["file", "bytes on disk", "reason", "seconds", "peak MB"],
                    [[r["file"], r["bytes_on_disk"], r["reason"], r["seconds"], r["peak_python_mb"]] for r in data["limits"]]))
    md += ["", "Faults:", ""]
    md.append(table(["fault", "outcome", "recovery", "rows in", "rows out"],
                    [[r["fault"], r["outcome"], r["recovery"], r["rows_in"], r["rows_out"]] for r in data["faults"]]))
    if "fuzz" in data:
        f = data["fuzz"]
        st = f.get("stats") or {}
        rc, pi = st.get("read_cutout", {}), st.get("process_items", {})
        ri, pii = st.get("read_cutout_images", {}), st.get("process_items_images", {})
        md += ["", f"Fuzz (`tests/test_fuzz.py`, hypothesis, SURVEY_BARS_FUZZ_EXAMPLES={args.fuzz_examples}, real seeds: {st.get('real_seeds')}): "
               f"read_cutout **{rc.get('cases')} cases in {rc.get('seconds', 0):.1f} s**, process_items **{pi.get('cases')} cases in "
               f"{pi.get('seconds', 0):.1f} s**; JPEG and PNG: read_cutout **{ri.get('cases')} cases in {ri.get('seconds', 0):.1f} s**, "
               f"process_items **{pii.get('cases')} cases in {pii.get('seconds', 0):.1f} s**; pytest: {f['summary']} ({f['seconds']} s wall).",
               f"read_cutout outcomes (FITS): {json.dumps(dict(sorted(rc.get('outcomes', {}).items(), key=lambda kv: -kv[1])))}",
               f"read_cutout outcomes (JPEG, PNG): {json.dumps(dict(sorted(ri.get('outcomes', {}).items(), key=lambda kv: -kv[1])))}"]
    if "tls" in data:
        t = data["tls"]
        md += ["", f"TLS (`tests/test_tls.py`: CA + certificates made with cryptography, `dask scheduler` and `dask worker` processes on "
               f"tls://127.0.0.1, `survey-bars process --scheduler tls://... --tls-*`; plain-TCP and foreign-CA clients refused): "
               f"**{t['summary']}** ({t['seconds']} s)."]
    save("reliability", data, "\n".join(md), command)


if __name__ == "__main__":
    main()
