"""Reliability: the bad-input corpus, rows in = rows out, and a full staging disk.

The corpus (:func:`survey_bars.testing.make_bad_corpus`) holds the messy files survey archives
really contain. Each must give exactly one catalogue row: an error row whose reason names the
cause, or an ``ok`` row with the right flags, both in one partition (``process_items``) and
through a whole job (``process`` on a LocalCluster with one worker), where the duplicate
object ids are flagged too.

Faults covered elsewhere (not repeated here): a SIGKILLed worker, SIGINT to the client then
``--resume``, and an existing ``--out`` without ``--overwrite`` are in ``tests/test_cluster.py``;
TLS is in ``tests/test_tls.py``; the reader fuzz (FITS, JPEG, PNG) is in ``tests/test_fuzz.py``; each
bad image of the corpus is read directly, its reason and message checked, in ``tests/test_bad_images.py``.
"""

from __future__ import annotations

import errno
import os
import time
import tracemalloc

import pandas as pd
import pytest


from survey_bars.io import CutoutError, read_cutout
from survey_bars.io.inputs import InputItem
from survey_bars.pipeline import RunOptions, process_items
from survey_bars.testing import (
    check_row,
    corpus_inputs,
    forget_tasks,
    full_disk,
    galaxy_image,
    is_root,
    make_bad_corpus,
    model_for_tests,
    write_cutout,
)


@pytest.fixture(scope="session")
def model():
    """The default bundle when it loads (None), else a cached tiny random-weight bundle."""
    return model_for_tests()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    cases = make_bad_corpus(d / "inputs")
    return d, cases


def _options(model, **kw):
    return RunOptions(model=model, smoothgrad_samples=8, **kw)


def _items(cases):
    items, owners = [], []
    for c in cases:
        for p in c.paths:
            items.append(InputItem(file=p, pixel_scale=c.pixel_scale))
            owners.append(c)
    return items, owners


def test_corpus_covers_the_issue(corpus):
    _, cases = corpus
    names = " | ".join(c.name for c in cases)
    for word in ["truncated", "not FITS", "empty", "NAXIS1=0", "1-D", "cube", "all NaN", "all zero", "inf", "NaN blob",
                 "BSCALE", "big-endian", "no WCS", "non-celestial", "SIP", "max-pixels", "gzip bomb", "unreadable",
                 "duplicate", "unicode", "symlink loop", ".fz",
                 # JPEG and PNG
                 "truncated JPEG", "HTML saved as .png", "empty .jpg", "PNG decompression bomb", "over the pixel limit",
                 "1-bit", "GIF saved as .png", "garbage over its data", "RGB JPEG", "greyscale PNG", "RGBA PNG", "palette",
                 "16-bit", "CMYK", "EXIF orientation"]:
        assert word in names, word


def test_every_case_one_row_in_one_partition(corpus, model):
    _, cases = corpus
    items, owners = _items(cases)
    t = process_items(items, _options(model)).to_pandas()
    assert len(t) == len(items)
    assert list(t.file) == [os.path.abspath(it.file) for it in items]
    problems = [f"{c.name}: {p}" for c, (_, row) in zip(owners, t.iterrows()) for p in check_row(c, row, job=False)]
    assert not problems, "\n".join(problems)
    # error rows say what to do, not only what went wrong
    for err in t.error.dropna():
        reason, _, message = err.partition(": ")
        assert reason and len(message) > 20, err


def test_job_rows_in_equal_rows_out(corpus, model, tmp_path):
    from survey_bars.cluster import process

    d, cases = corpus
    extra, catalogue = corpus_inputs(d / "job", cases)
    out = tmp_path / "catalogue.parquet"
    summary = process([str(d / "inputs")] + extra, out, workers=1, partition_size=8, catalogue=catalogue,
                      options=_options(model), progress=False)
    df = pd.read_parquet(out)
    n_in = sum(len(c.paths) for c in cases)
    assert summary["rows"] == len(df) == n_in
    assert df.file.is_unique
    by_file = {row.file: row for row in df.itertuples(index=False)}
    problems = []
    for c in cases:
        for p in c.paths:
            row = by_file.get(os.path.abspath(p))
            if row is None:
                problems.append(f"{c.name}: no row for {p!r}")
                continue
            problems += [f"{c.name}: {m}" for m in check_row(c, row._asdict(), job=True)]
    assert not problems, "\n".join(problems)
    assert summary["errors"] == sum(len(c.paths) for c in cases if c.status == "error")
    assert summary["duplicates"] == 1
    # the shell metacharacters in a file name were never run
    assert not list(d.rglob("PWNED")) and not os.path.exists("PWNED") and not (tmp_path / "PWNED").exists()
    assert not os.path.exists(str(out) + ".parts")


def test_huge_header_refused_without_reading(corpus):
    _, cases = corpus
    huge = [c for c in cases if c.reason == "too_large"]
    assert {os.path.splitext(c.paths[0])[1] for c in huge} == {".fits", ".png"}
    for c in huge:
        (path,) = c.paths
        assert os.path.getsize(path) < 10_000
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(CutoutError) as e:
            read_cutout(path)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert e.value.reason == "too_large" and "--max-pixels" in e.value.message, (c.name, e.value)
        assert dt < 1.0 and peak < 5_000_000, (c.name, dt, peak)


def test_decompression_bombs_are_bounded(corpus):
    _, cases = corpus
    bombs = [c for c in cases if c.reason == "decompression_bomb"]
    assert len(bombs) == 6  # gzip, two-member gzip, bzip2, xz, zip; a tiny PNG declaring 3000 x 3000
    for c in bombs:
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(CutoutError) as e:
            read_cutout(c.paths[0])
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert e.value.reason == "decompression_bomb", (c.name, e.value)
        # the unpacked image would be 67 MB (and 3x that as float64 copies; 2.7 GB for the PNG); nothing near it is held
        assert peak < 20_000_000 and dt < 3.0, (c.name, peak, dt)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    """Permission errors, simulated because root (as in CI) reads chmod 000 files anyway."""
    import survey_bars.io.cutout as cutouts

    p = write_cutout(tmp_path / "locked.fits", galaxy_image(seed=3))
    os.chmod(p, 0)
    if not is_root():
        with pytest.raises(CutoutError) as e:
            read_cutout(p)
        assert e.value.reason == "unreadable"
    real_access, real_stat = os.access, os.stat

    with monkeypatch.context() as m:  # os.access says no
        m.setattr(os, "access", lambda path, mode, *a, **k: False if os.fspath(path) == p else real_access(path, mode, *a, **k))
        with pytest.raises(CutoutError) as e:
            read_cutout(p)
        assert e.value.reason == "unreadable" and "chmod" in e.value.message

    def denied_open(path, *a, **k):
        if os.fspath(path) == p:
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return open(path, *a, **k)

    with monkeypatch.context() as m:  # access() passes but open() fails (ACLs, NFS root squash)
        m.setattr(cutouts, "open", denied_open, raising=False)
        with pytest.raises(CutoutError) as e:
            read_cutout(p)
        assert e.value.reason == "unreadable"

    def denied_stat(path, *a, **k):
        if os.fspath(path) == p:
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return real_stat(path, *a, **k)

    with monkeypatch.context() as m:  # a directory on the way is not searchable
        m.setattr(os, "stat", denied_stat)
        with pytest.raises(CutoutError) as e:
            read_cutout(p)
        assert e.value.reason == "unreadable"


def test_discovery_terminates_on_symlink_loops(corpus):
    from survey_bars.io.inputs import discover_inputs

    d, cases = corpus
    inputs = d / "inputs"
    assert os.path.islink(inputs / "loop" / "up") and os.path.islink(inputs / "loop" / "self")
    t0 = time.perf_counter()
    walked = discover_inputs([str(inputs)])
    globbed = discover_inputs([str(inputs / "**" / "*.fits")])  # glob's own ** follows links (2**40 paths)
    assert time.perf_counter() - t0 < 5
    expected = {os.path.abspath(p) for c in cases if not c.listed for p in c.paths}
    assert set(walked) == expected and len(walked) == len(expected)
    assert set(globbed) == {p for p in expected if p.endswith(".fits")}
    assert not any("/loop/up/" in p or "/loop/self/" in p for p in walked + globbed)


def test_unlistable_directory_is_an_error_not_a_silent_loss(tmp_path, monkeypatch):
    from survey_bars.errors import JobError
    from survey_bars.io.inputs import discover_inputs

    sub = tmp_path / "in" / "locked"
    sub.mkdir(parents=True)
    write_cutout(sub / "g.fits", galaxy_image())
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(sub):
            raise PermissionError(errno.EACCES, "Permission denied", str(sub))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(JobError, match="Cannot list the input directory"):
        discover_inputs([str(tmp_path / "in")])


# ------------------------------------------------------------------------------ full disk


def _good_inputs(d, n=6):
    d.mkdir(parents=True, exist_ok=True)
    return [write_cutout(d / f"g{i:02d}.fits", galaxy_image(seed=100 + i, bar_len=20 if i % 2 else None), objid=f"G{i}") for i in range(n)]


def test_full_staging_disk_clear_error_then_resume(tmp_path, model):
    """ENOSPC while a part is written: clear error, nothing corrupt left, --resume completes.

    The scheduler and worker run in this process (``LocalCluster(processes=False)``) so that
    the simulated full disk (:func:`survey_bars.testing.full_disk`: half a file written, then
    ENOSPC, for partition 1 only) reaches the task. Then the same while the final catalogue
    is assembled.
    """
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from survey_bars.io.catalogue import is_done, part_paths
    from survey_bars.cluster import JobError, process

    files = _good_inputs(tmp_path / "in")
    opts = _options(model)
    clean = tmp_path / "clean.parquet"
    out = tmp_path / "full.parquet"
    staging = str(out) + ".parts"

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        def run(target, **kw):
            forget_tasks(cluster)
            return process([str(tmp_path / "in")], target, client=client, partition_size=2, options=opts, progress=False, **kw)

        run(clean)
        with full_disk(partition=1) as failed:
            with pytest.raises(JobError) as e:
                run(out, retries=1)
        msg = str(e.value)
        del e  # its traceback holds the failed job's futures, which keep their keys alive
        assert "No space left on device" in msg and "staging directory" in msg and "--resume" in msg, msg
        assert len(failed) == 2  # the first try and one retry
        assert not out.exists()
        left = sorted(os.listdir(staging))
        assert not [f for f in left if f.startswith(".tmp")], left
        part1, done1 = part_paths(staging, 1)
        assert not os.path.exists(part1) and not os.path.exists(done1)
        for f in left:  # whatever finished is whole
            if f.endswith(".parquet"):
                assert pq.read_metadata(os.path.join(staging, f)).num_rows == 2
                assert os.path.exists(os.path.join(staging, f[: -len(".parquet")] + ".done"))
        assert not is_done(staging, 1)
        summary = run(out, resume=True)
        assert summary["rows"] == len(files)
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(clean))

        # the disk fills while the final catalogue is assembled: no partial catalogue appears,
        # the finished parts are kept, and --resume assembles it
        out2 = tmp_path / "full_at_assembly.parquet"
        with full_disk(at_assembly=True) as failed:
            try:
                run(out2)
            except JobError as exc:
                msg = str(exc)
            else:
                pytest.fail("a full disk during assembly was not reported")
        assert "No space left on device" in msg and len(failed) == 1, msg
        assert not out2.exists() and not list(tmp_path.glob(".tmp-catalogue-*"))
        staging2 = str(out2) + ".parts"
        assert sorted(f for f in os.listdir(staging2) if f.endswith(".done")) == [f"part-{i:06d}.done" for i in range(3)]
        summary = run(out2, resume=True)
    assert summary["rows"] == len(files)
    pd.testing.assert_frame_equal(pd.read_parquet(out2), pd.read_parquet(clean))
