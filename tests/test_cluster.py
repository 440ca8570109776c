"""The catalogue service against a real multi-process Dask cluster on 127.0.0.1.

The tests start ``dask scheduler`` and two ``dask worker`` processes themselves. They check
that every input appears exactly once, that a SIGKILLed worker does not lose or duplicate a
galaxy, that an interrupted run finished with --resume equals an uninterrupted one, and that
the external cluster and a LocalCluster give identical catalogues.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_bars.cluster import JobError, process
from survey_bars.pipeline import RunOptions

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N_GALAXIES = 240
OPTIONS = RunOptions(smoothgrad_samples=16)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    from survey_bars.simulate import simulate

    d = tmp_path_factory.mktemp("sims")
    simulate(d, N_GALAXIES, survey="mixed", seed=4242, workers=2)
    return d


def _wait_for(predicate, timeout=60.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


class DaskProcesses:
    """A scheduler and workers as separate OS processes on 127.0.0.1."""

    def __init__(self, tmp, n_workers=2):
        self.tmp = tmp
        self.scheduler_file = str(tmp / "scheduler.json")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "True"}
        self.env = env
        self.log = open(tmp / "dask.log", "w")
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", self.scheduler_file],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        _wait_for(lambda: os.path.exists(self.scheduler_file), what="scheduler file")
        self.workers = [self.start_worker(i) for i in range(n_workers)]
        from distributed import Client

        with Client(scheduler_file=self.scheduler_file, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=60)

    def start_worker(self, i):
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", self.scheduler_file,
             "--nthreads", "1", "--nworkers", "1", "--no-nanny", "--memory-limit", "2GiB",
             "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}-{time.time_ns()}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )

    def close(self):
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in self.workers + [self.scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()


@pytest.fixture
def dask_procs(tmp_path):
    procs = DaskProcesses(tmp_path)
    yield procs
    procs.close()


def _read(path):
    df = pd.read_parquet(path)
    return df.sort_values("file").reset_index(drop=True)


@pytest.fixture(scope="module")
def local_catalogue(sim_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "catalogue.parquet"
    summary = process([str(sim_dir)], out, workers=2, partition_size=16, options=OPTIONS, progress=False)
    assert summary["rows"] == N_GALAXIES
    return out


def test_every_input_exactly_once_and_reads_back(local_catalogue, sim_dir):
    from astropy.table import Table

    from survey_bars.io.catalogue import read_catalogue, read_metadata

    df = _read(local_catalogue)
    files = sorted(str(p) for p in sim_dir.glob("*.fits"))
    assert sorted(df.file) == files
    assert df.file.is_unique and df.object_id.is_unique
    assert (df.status == "ok").mean() > 0.95
    # pyarrow keeps field units; astropy Table gets them as units
    schema = pq.read_schema(local_catalogue)
    assert schema.field("bar_length_arcsec").metadata[b"unit"] == b"arcsec"
    t = read_catalogue(local_catalogue)
    assert isinstance(t, Table) and str(t["ra"].unit) == "deg" and str(t["bar_length_kpc"].unit) == "kpc"
    meta = read_metadata(local_catalogue)
    assert meta["model_card"]["name"] and meta["run_config"]["partition_size"] == 16
    # the metadata records the measuring method used: 'auto' is the learned head of the shipped bundle
    assert meta["run_config"]["method_requested"] == "auto" and meta["run_config"]["method"] == "head"
    assert {f["name"] for f in meta["flags"]} >= {"LOW_SNR", "DUPLICATE_OBJECT_ID"}


def test_external_cluster_equals_local(dask_procs, sim_dir, local_catalogue, tmp_path):
    out = tmp_path / "ext.parquet"
    summary = process([str(sim_dir)], out, scheduler_file=dask_procs.scheduler_file, partition_size=16, options=OPTIONS, progress=False)
    assert summary["rows"] == N_GALAXIES
    pd.testing.assert_frame_equal(_read(out), _read(local_catalogue))


def test_sigkill_worker_mid_job(dask_procs, sim_dir, local_catalogue, tmp_path):
    out = tmp_path / "killed.parquet"
    staging = str(out) + ".parts"
    result = {}

    def run():
        try:
            result["summary"] = process([str(sim_dir)], out, scheduler_file=dask_procs.scheduler_file, partition_size=8, options=OPTIONS, progress=False)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    _wait_for(lambda: os.path.isdir(staging) and any(f.endswith(".done") for f in os.listdir(staging)), what="first partition")
    victim = dask_procs.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    th.join(timeout=600)
    assert "error" not in result, result.get("error")
    df = _read(out)
    assert len(df) == N_GALAXIES and df.file.is_unique
    ref = _read(local_catalogue).drop(columns="partition")
    pd.testing.assert_frame_equal(df.drop(columns="partition"), ref)


def test_interrupted_then_resume_equals_clean(sim_dir, local_catalogue, tmp_path):
    out = tmp_path / "resumed.parquet"
    staging = str(out) + ".parts"
    # Ctrl-C must reach the CLI as KeyboardInterrupt even where this test runs with SIGINT
    # ignored (a job started with `&` by a non-interactive shell, which children inherit)
    cmd = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "runpy.run_module('survey_bars.cli', run_name='__main__', alter_sys=True)",
           "process", "--input", str(sim_dir), "--out", str(out),
           "--workers", "1", "--partition-size", "16", "--smoothgrad-samples", "16", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(lambda: os.path.isdir(staging) and sum(f.endswith(".done") for f in os.listdir(staging)) >= 3, timeout=300, what="three partitions")
    p.send_signal(signal.SIGINT)
    outp, _ = p.communicate(timeout=120)
    assert p.returncode != 0, outp
    assert not out.exists()
    done_before = sum(f.endswith(".done") for f in os.listdir(staging))
    assert 3 <= done_before < N_GALAXIES // 16
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(_read(out), _read(local_catalogue))


def test_resume_redoes_a_part_with_other_columns(tmp_path):
    """A part left by a survey-bars with other catalogue columns is not taken as done."""
    from survey_bars.io.catalogue import (
        empty_row,
        is_done,
        part_paths,
        rows_to_table,
        write_part,
    )

    table = rows_to_table([empty_row(object_id="a", file="a.fits", partition=0, status="ok", quality_flags=0)])
    write_part(table, str(tmp_path), 0, digest="d")
    assert is_done(str(tmp_path), 0, "d") and not is_done(str(tmp_path), 0, "other")
    part, _ = part_paths(str(tmp_path), 0)
    pq.write_table(table.drop(["bar_length_moments_arcsec"]), part)  # as an older version wrote it
    assert not is_done(str(tmp_path), 0, "d")


def test_existing_out_refused_and_fatal_errors(sim_dir, local_catalogue, tmp_path):
    with pytest.raises(JobError, match="--overwrite"):
        process([str(sim_dir)], local_catalogue, workers=1, options=OPTIONS, progress=False)
    with pytest.raises(JobError, match="No input cutouts were found"):
        process([str(tmp_path)], tmp_path / "x.parquet", workers=1, options=OPTIONS, progress=False)
    with pytest.raises(JobError, match="Cannot reach the Dask scheduler"):
        process([str(sim_dir)], tmp_path / "y.parquet", scheduler="tcp://127.0.0.1:1", timeout="2s", options=OPTIONS, progress=False)
    with pytest.raises(JobError, match="bundle"):
        process([str(sim_dir)], tmp_path / "z.parquet", options=RunOptions(model=str(tmp_path / "nope")), progress=False)
    with pytest.raises(ValueError, match="Unknown cosmology 'NoSuchCosmo'"):  # the options refuse it: no job starts
        RunOptions(cosmology="NoSuchCosmo")


def test_default_partition_size_balances_small_jobs():
    from survey_bars.cluster import default_partition_size

    assert default_partition_size(400) == 25  # 16 partitions: even work for 2, 4 or 8 workers
    assert default_partition_size(10) == 4
    assert default_partition_size(10**7) == 64
    assert all(default_partition_size(n) >= 1 for n in range(0, 50))


def test_cli_rejects_p_bar_min_out_of_range(tmp_path, capsys):
    from survey_bars.cli import main

    rc = main(["process", "--input", str(tmp_path), "--out", str(tmp_path / "c.parquet"), "--p-bar-min", "1.5"])
    assert rc == 2 and "--p-bar-min must be a number in [0, 1]" in capsys.readouterr().err


def test_local_cluster_workers_run_without_the_profiler():
    from distributed import Client

    from survey_bars.cluster import local_cluster

    with local_cluster(1, 1, "1GiB") as cluster, Client(cluster) as client:
        flags = client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
    assert list(flags.values()) == [False]


def test_discovery_finds_every_format_and_the_catalogue_names_images(tmp_path):
    """Directories with mixed formats, globs, @lists and a catalogue's file column all find JPEG/PNG."""
    from PIL import Image

    from survey_bars.io.inputs import discover_inputs, read_input_catalogue
    from survey_bars.testing import write_cutout

    d = tmp_path / "mixed"
    (d / "sub").mkdir(parents=True)
    img = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    names = ["a.fits", "b.JPG", "sub/c.jpeg", "sub/d.png", "e.fits.gz"]
    for n in names:
        if n.endswith((".fits", ".gz")):
            write_cutout(d / n, img.astype(np.float32))
        else:
            Image.fromarray(img).save(d / n, format="PNG" if n.endswith("png") else "JPEG")
    (d / "labels.csv").write_text("file\n")
    (d / "notes.txt").write_text("x")
    assert discover_inputs([str(d)]) == sorted(str(d / n) for n in names)
    assert discover_inputs([str(d / "**" / "*.png")]) == [str(d / "sub/d.png")]
    (tmp_path / "list.txt").write_text("mixed/b.JPG\nmixed/sub/d.png\n")
    assert discover_inputs([f"@{tmp_path / 'list.txt'}"]) == [str(d / "b.JPG"), str(d / "sub/d.png")]
    cat = tmp_path / "cat.csv"
    cat.write_text("file,pixel_scale,ra,dec\nmixed/b.JPG,0.3,10.0,-1.0\n")
    items = read_input_catalogue(str(cat))
    assert items[str(d / "b.JPG")].pixel_scale == 0.3
