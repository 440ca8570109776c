"""The catalogue job on Dask: inputs, partitions, submission, retries, resume, assembly.

:func:`process` is the Python API (it accepts an existing ``distributed.Client``) and
``survey-bars process`` is its command line. The job:

1. discovers the input files (directories recursively, globs, ``@list.txt`` files, or the
   ``file`` column of an input catalogue) and sorts them, so partitions are deterministic;
2. cuts them into partitions of ``partition_size`` files; each partition is one Dask task that
   reads its own files on the worker, where the model is loaded once per worker process;
3. each task writes its Parquet part atomically to the staging directory ``<out>.parts/`` and
   then a done marker; ``resume=True`` skips partitions whose marker matches;
4. lost workers are retried by the scheduler; a task is idempotent (same inputs, same part);
5. the parts are streamed into the final catalogue, with duplicate object ids flagged and the
   model card, run configuration and flag meanings in the file metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import uuid

from distributed.diagnostics.plugin import WorkerPlugin

from . import __version__
from .errors import JobError, OptionError, filter_input_warnings
from .flags import Flag
from .inference.bundle import BundleError, load_bundle
from .io.catalogue import assemble, is_done, part_paths, write_part
from .io.cutout import DEFAULT_MAX_PIXELS
from .io.inputs import InputItem, discover_inputs, read_input_catalogue
from .measure import calibration_for, get_method, resolve_method, run_methods
from .pipeline import LENGTH_FRAMES, RunOptions, process_items

__all__ = ["make_partitions", "default_partition_size", "make_security", "local_cluster", "WORKER_CONFIG", "process", "JobError", "JobSummary"]


def make_partitions(items, partition_size):
    """Cut the sorted inputs into consecutive partitions.

    Parameters
    ----------
    items : list of InputItem
        Sorted inputs.
    partition_size : int
        Files per partition.

    Returns
    -------
    list of list of InputItem
    """
    if partition_size < 1:
        msg = f"partition_size must be >= 1, got {partition_size}."
        raise ValueError(msg)
    return [items[i : i + partition_size] for i in range(0, len(items), partition_size)]


def default_partition_size(n_items, target_partitions=16, largest=64, smallest=4):
    """Files per partition when the user gives none.

    Large jobs get partitions of ``largest`` files (few tasks, small scheduler overhead);
    small jobs are cut into about ``target_partitions`` partitions so that a few workers are
    kept evenly busy (7 partitions of 64 on 2 workers wastes 20 % of the second worker).

    Parameters
    ----------
    n_items : int
        Number of inputs.
    target_partitions, largest, smallest : int
        Tuning.

    Returns
    -------
    int
    """
    return int(min(largest, max(smallest, -(-n_items // target_partitions))))


def _digest(part, model_id, options):
    h = hashlib.sha256()
    h.update(model_id.encode())
    h.update(json.dumps(options.to_dict(), sort_keys=True, default=str).encode())
    for it in part:
        h.update(json.dumps([it.file, it.object_id, it.ra, it.dec, it.redshift, it.r50_arcsec, it.pixel_scale]).encode())
    return h.hexdigest()


def _run_partition(index, items, options, staging, digest):
    """Dask task: process one partition and write its part (idempotent)."""
    if is_done(staging, index, digest):
        return {"partition": index, "rows": None, "skipped": True}
    table = process_items(items, options)
    if table.num_rows != len(items):  # pragma: no cover - guarded by process_items
        msg = f"Partition {index} produced {table.num_rows} rows for {len(items)} inputs."
        raise RuntimeError(msg)
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("partition"), "partition", pa.array([index] * table.num_rows, pa.int32()))
    try:
        write_part(table, staging, index, digest=digest)
    except OSError as exc:
        msg = f"Cannot write partition {index} to the staging directory {staging!r}: {exc.strerror or exc}. Free space or choose another --out location."
        raise OSError(msg) from None
    errors = int(sum(1 for s in table.column("status").to_pylist() if s != "ok"))
    return {"partition": index, "rows": table.num_rows, "errors": errors, "skipped": False}


class JobSummary(dict):
    """Counts of a finished job: rows, ok, errors, partitions, seconds, out."""

    def __str__(self):
        return (
            f"{self['rows']} galaxies in {self['partitions']} partitions: {self['ok']} ok, "
            f"{self['errors']} errors, {self['duplicates']} duplicate ids; "
            f"{self['seconds']:.1f} s -> {self['out']}"
        )


class _Progress:
    def __init__(self, total, stream=None, enabled=True):
        self.total = total
        self.done = 0
        self.t0 = time.time()
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, n=1):
        self.done += n
        if not self.enabled:
            return
        now = time.time()
        if not self.tty and now - self._last < 5 and self.done < self.total:
            return
        self._last = now
        frac = self.done / max(self.total, 1)
        bar = "#" * int(30 * frac)
        el = now - self.t0
        eta = el / frac - el if frac > 0 else 0
        line = f"[{bar:<30}] {self.done}/{self.total} partitions  {el:6.0f}s elapsed  ~{eta:.0f}s left"
        self.stream.write(("\r" if self.tty else "") + line + ("" if self.tty else "\n"))
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def make_security(tls_ca_file=None, tls_cert=None, tls_key=None):
    """Build a ``distributed.Security`` for TLS to the scheduler, or None.

    Parameters
    ----------
    tls_ca_file : str, optional
        CA certificate that signed the scheduler's and workers' certificates.
    tls_cert, tls_key : str, optional
        This client's certificate and private key (the key may be inside the cert file).

    Returns
    -------
    distributed.Security or None
        None when no TLS option is given; Dask's own configuration
        (``distributed.comm.tls.*``) still applies then.
    """
    if not (tls_ca_file or tls_cert or tls_key):
        return None
    from distributed import Security

    for what, path in (("CA file", tls_ca_file), ("certificate", tls_cert), ("key", tls_key)):
        if path and not os.path.isfile(path):
            msg = f"The TLS {what} {path!r} does not exist."
            raise JobError(msg)
    if not (tls_ca_file and tls_cert):
        msg = "TLS needs both --tls-ca-file and --tls-cert (and --tls-key unless the key is in the certificate file)."
        raise JobError(msg)
    return Security(tls_ca_file=tls_ca_file, tls_client_cert=tls_cert, tls_client_key=tls_key, require_encryption=True)


#: Dask settings for the workers that survey-bars starts itself (its LocalCluster); set the same
#: on your own workers (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``, as ``deploy/`` does).
#: Dask's statistical profiler samples each task's call stack every 10 ms and keeps a
#: second-by-second history for an hour: for this pipeline that grew a worker by ~50 MiB per
#: 10k galaxies and cost 5-10 % of its throughput (benchmarks/RESULTS.md, perf_memory).
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def local_cluster(n_workers=None, threads_per_worker=1, memory_limit="4GiB", **kwargs):
    """Start a ``distributed.LocalCluster`` of worker processes with :data:`WORKER_CONFIG`.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: one per CPU core).
    threads_per_worker : int, optional
        Threads per worker; 1 is the efficient setting (onnxruntime runs single-threaded).
    memory_limit : str, optional
        Dask's memory limit per worker.
    **kwargs
        More ``LocalCluster`` arguments.

    Returns
    -------
    distributed.LocalCluster
    """
    import dask
    from distributed import LocalCluster

    kwargs.setdefault("dashboard_address", None)
    with dask.config.set(WORKER_CONFIG):  # nannies hand the config to their workers
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit, processes=True, **kwargs)


def _connect(client, scheduler, scheduler_file, workers, threads_per_worker, memory_limit, timeout, security=None):
    """Return (client, owned cluster or None, owned flag)."""
    from distributed import Client

    if client is not None:
        return client, None, False
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    kw = {"security": security} if security is not None else {}
    if scheduler or scheduler_file:
        try:
            if scheduler_file:
                c = Client(scheduler_file=scheduler_file, timeout=timeout, **kw)
            else:
                c = Client(scheduler, timeout=timeout, **kw)
        except Exception as exc:  # OSError, TimeoutError, TLS/TypeError mismatches...
            where = scheduler_file or scheduler
            msg = f"Cannot reach the Dask scheduler at {where!r} within {timeout}: {exc}. Check the address and that the scheduler is running."
            raise JobError(msg) from None
        return c, None, True
    cluster = local_cluster(workers, threads_per_worker, memory_limit)
    c = Client(cluster)
    c.register_plugin(_QuietInputs(), name="survey-bars-quiet-inputs")  # our own workers: we own their warnings
    return c, cluster, True


class _QuietInputs(WorkerPlugin):
    """Worker plugin for the job's own LocalCluster: :func:`~survey_bars.errors.filter_input_warnings`
    in each worker process, restarted ones included."""

    def setup(self, worker):
        filter_input_warnings()


def process(
    inputs,
    out,
    *,
    client=None,
    scheduler=None,
    scheduler_file=None,
    workers=None,
    threads_per_worker=1,
    memory_limit="4GiB",
    partition_size=None,
    catalogue=None,
    options=None,
    resume=False,
    overwrite=False,
    keep_parts=False,
    retries=3,
    timeout="20s",
    progress=True,
    security=None,
):
    """Run the catalogue job.

    Parameters
    ----------
    inputs : str or list of str
        FITS files, directories, globs or ``@list`` files. May be empty when ``catalogue``
        names the files.
    out : str
        ``catalogue.parquet``, or a directory for a partitioned catalogue.
    client : distributed.Client, optional
        An existing client (e.g. in a notebook). It is not closed.
    scheduler, scheduler_file : str, optional
        Connect to a running scheduler (also ``DASK_SCHEDULER_ADDRESS``).
    workers, threads_per_worker, memory_limit : optional
        LocalCluster sizing when no scheduler is given (``workers`` defaults to the CPU count).
    partition_size : int, optional
        Files per partition (one task each); by default chosen by
        :func:`default_partition_size` from the number of inputs (at most 64).
    catalogue : str, optional
        Input catalogue (CSV/Parquet) with ``file`` and optional object_id, ra, dec, redshift,
        r50_arcsec, pixel_scale.
    options : RunOptions, optional
        Model and measurement settings.
    resume : bool
        Keep finished partitions of an earlier, interrupted run.
    overwrite : bool
        Replace an existing ``out``.
    keep_parts : bool
        Keep the staging directory after assembly.
    retries : int
        Retries of a partition whose worker died.
    timeout : str
        Scheduler connection timeout.
    progress : bool
        Print progress to stderr.
    security : distributed.Security, optional
        TLS settings for connecting to ``scheduler`` (see :func:`make_security`).

    Returns
    -------
    JobSummary

    Raises
    ------
    JobError
        No inputs, an unusable model, an unreachable scheduler, or an existing ``out``.
    """
    t0 = time.time()
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not (overwrite or resume):
        msg = f"{out!r} exists. Pass --overwrite to replace it, or --resume to finish an interrupted run."
        raise JobError(msg)
    bundle, options, requested = _job_options(options or RunOptions())
    items = _job_items(inputs, catalogue)
    if partition_size is None:
        partition_size = default_partition_size(len(items))
    parts = make_partitions(items, partition_size)
    model_id = json.dumps(bundle.card.get("files", {}), sort_keys=True) + json.dumps(bundle.card.get("calibration", {}), sort_keys=True)
    digests = [_digest(p, model_id, options) for p in parts]
    staging = _staging_dir(out, resume)
    todo = [i for i in range(len(parts)) if not (resume and is_done(staging, i, digests[i]))]

    c, cluster, owned = _connect(client, scheduler, scheduler_file, workers, threads_per_worker, memory_limit, timeout, security)
    bar = _Progress(len(parts), enabled=progress)
    bar.done = len(parts) - len(todo)
    try:
        _run_partitions(c, parts, todo, options, staging, digests, retries, bar)
    finally:
        if owned:
            c.close()
            if cluster is not None:
                cluster.close()

    run_config = {
        **options.to_dict(),
        "method_requested": requested,
        "partition_size": partition_size,
        "inputs": [os.fspath(p) for p in ([inputs] if isinstance(inputs, str) else (inputs or []))],
        "catalogue": os.fspath(catalogue) if catalogue else None,
        "n_inputs": len(items),
    }
    summary = _assemble_job(staging, len(parts), out, bundle, run_config, overwrite or resume)
    if not keep_parts:
        shutil.rmtree(staging, ignore_errors=True)
    return JobSummary(**summary, partitions=len(parts), seconds=time.time() - t0, out=out)


def _job_options(options):
    """Load the bundle and settle the options: ``(bundle, options, method requested)``; JobError if unusable."""

    try:
        bundle = load_bundle(options.model)
        requested = options.method
        options = dataclasses.replace(options, method=resolve_method(bundle.card, options.method))
        calibration_for(bundle.card, options.method)
    except (BundleError, ValueError) as exc:
        raise JobError(str(exc)) from None
    if options.save_saliency:
        options = dataclasses.replace(options, save_saliency=os.path.abspath(options.save_saliency))
    if options.model:
        options = dataclasses.replace(options, model=os.path.abspath(options.model))
    return bundle, options, requested


def _job_items(inputs, catalogue):
    """The job's inputs, sorted, each with what the input catalogue says about it; JobError if none."""
    cat_items = read_input_catalogue(catalogue) if catalogue else {}
    files = discover_inputs(inputs) if inputs else []
    if not files:
        files = sorted(cat_items)
    items = [cat_items.get(f, InputItem(file=f)) for f in files]
    if not items:
        msg = ("No input cutouts were found. Give files, directories or globs of FITS (.fits, .fit, .fits.gz, .fz), "
               "JPEG (.jpg, .jpeg) or PNG (.png) cutouts, or an input catalogue with a 'file' column.")
        raise JobError(msg)
    return items


def _staging_dir(out, resume):
    """Create (or, without ``resume``, empty) the staging directory ``<out>.parts`` of the parts."""
    staging = out.rstrip(os.sep) + ".parts"
    if os.path.exists(staging) and not resume:
        shutil.rmtree(staging)
    try:
        os.makedirs(staging, exist_ok=True)
    except OSError as exc:
        msg = f"Cannot create the staging directory {staging!r}: {exc.strerror}. Choose a writable --out location."
        raise JobError(msg) from None
    return staging


def _run_partitions(c, parts, todo, options, staging, digests, retries, bar):
    """Submit the partitions still to do, one task each, and wait for them; the first failure stops the job."""
    from distributed import as_completed

    run_token = uuid.uuid4().hex[:8]  # task keys unique per run: a long-lived client may hold old futures
    futures = [
        c.submit(
            _run_partition,
            i,
            parts[i],
            options,
            staging,
            digests[i],
            key=f"survey-bars-partition-{digests[i][:16]}-{run_token}-{i}",
            retries=retries,
            pure=False,
        )
        for i in todo
    ]
    for fut in as_completed(futures):
        try:
            fut.result()
        except Exception as exc:
            for f in futures:
                f.cancel()
            msg = f"A partition failed: {exc}. Finished partitions are kept; fix the cause and rerun with --resume."
            raise JobError(msg) from None
        bar.update()
        fut.release()


def _assemble_job(staging, n_parts, out, bundle, run_config, replace):
    """Stream the parts into the catalogue at ``out``, duplicates flagged; return the row counts."""
    dups = _duplicate_ids(staging, range(n_parts))
    metadata = {
        "model_card": bundle.card,
        "model_path": str(bundle.path),
        "run_config": run_config,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software_version": __version__,
    }
    transform = _flag_duplicates(dups) if dups else None
    if os.path.exists(out) and replace and os.path.isdir(out):
        for f in os.listdir(out):
            if f.startswith("catalogue-") and f.endswith(".parquet"):
                os.unlink(os.path.join(out, f))
    try:
        rows = assemble(staging, list(range(n_parts)), out, metadata=metadata, transform=transform)
    except OSError as exc:
        msg = f"Cannot write the catalogue {out!r}: {exc.strerror or exc}. The partitions are kept in {staging!r}; free space and rerun with --resume."
        raise JobError(msg) from None
    n_err = _count_errors(staging, range(n_parts))
    return {"rows": rows, "ok": rows - n_err, "errors": n_err, "duplicates": len(dups)}


def _duplicate_ids(staging, partitions):
    import pyarrow.parquet as pq

    seen, dups = set(), set()
    for p in partitions:
        part, _ = part_paths(staging, p)
        for oid in pq.read_table(part, columns=["object_id"]).column(0).to_pylist():
            if oid in seen:
                dups.add(oid)
            seen.add(oid)
    return dups


def _count_errors(staging, partitions):
    import pyarrow.parquet as pq

    n = 0
    for p in partitions:
        part, _ = part_paths(staging, p)
        n += sum(1 for s in pq.read_table(part, columns=["status"]).column(0).to_pylist() if s != "ok")
    return n


def _flag_duplicates(dups):
    import pyarrow as pa
    import pyarrow.compute as pc

    dup_arr = pa.array(sorted(dups), pa.string())

    def transform(table):
        is_dup = pc.is_in(table.column("object_id"), value_set=dup_arr)
        flags = pc.fill_null(table.column("quality_flags"), 0)
        bit = pa.scalar(int(Flag.DUPLICATE_OBJECT_ID), pa.uint32())
        new = pc.if_else(is_dup, pc.bit_wise_or(flags, bit), flags)
        return table.set_column(table.schema.get_field_index("quality_flags"), table.schema.field("quality_flags"), new.cast(pa.uint32()))

    return transform


# ----------------------------------------------------------------------------- command line


def configure_parser(parser):
    """Add the ``process`` options to an argparse parser."""
    parser.add_argument("--input", "-i", nargs="+", default=[], metavar="PATH", help="FITS, JPEG or PNG files, directories (recursive), globs, or @list.txt files.")
    parser.add_argument("--out", "-o", required=True, help="Output catalogue: a .parquet file, or a directory for a partitioned catalogue.")
    parser.add_argument("--model", default=None, help="Model bundle directory (default: the shipped bundle).")
    parser.add_argument("--scheduler", default=None, help="Address of a running Dask scheduler (or set DASK_SCHEDULER_ADDRESS).")
    parser.add_argument("--scheduler-file", default=None, help="Dask scheduler file.")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: CPU count).")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--memory-limit", default="4GiB", help="LocalCluster memory limit per worker.")
    parser.add_argument("--partition-size", type=int, default=None, help="Files per partition, one Dask task each (default: up to 64, fewer for small jobs so workers stay evenly busy).")
    parser.add_argument("--catalogue", default=None, help="CSV/Parquet with file and optional object_id, ra, dec, redshift, r50_arcsec, pixel_scale.")
    parser.add_argument("--smoothgrad-samples", type=int, default=None, help="SmoothGrad samples per galaxy (default: the bundle's).")
    parser.add_argument("--smoothgrad-noise", type=float, default=None,
                        help="SmoothGrad noise as a fraction of each frame's range (default: the bundle's).")
    parser.add_argument("--method", default="auto", choices=list(run_methods()),
                        help="Bar measuring method for bar_length_arcsec. auto (default): head when the bundle has a learned "
                             "length head (the shipped one has), else moments. "
                             + " ".join(f"{n}: {get_method(n).summary}" for n in run_methods()[1:])
                             + " The catalogue metadata records the method used.")
    parser.add_argument("--pixel-scale", type=float, default=None, help="Pixel scale (arcsec) to assume for files without a WCS (flagged).")
    parser.add_argument("--band", default=None,
                        help="Band of multi-band FITS files (cubes, one extension per band): a name matched against "
                             "EXTNAME/BAND/FILTER (e.g. r, HSC-I, VIS) or a 0-based index. Default: HSC-I, VIS, r, i, z, g, "
                             "the first the file has, else its first band. JPEG/PNG use the mean of their colour channels.")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="Refuse larger images without reading them.")
    parser.add_argument("--save-saliency", default=None, metavar="DIR", help="Write FITS saliency maps here for QA.")
    parser.add_argument("--p-bar-min", type=float, default=0.5,
                        help="Measure bars (and compute SmoothGrad maps) where p_bar reaches this (default 0.5).")
    parser.add_argument("--saliency-all", action="store_true",
                        help="Compute SmoothGrad maps for every galaxy, not only bar candidates (slower; with --save-saliency).")
    parser.add_argument("--length-frame", choices=LENGTH_FRAMES, default="auto",
                        help="The frame bars in FITS (linear) inputs are measured in: 'measured', the model frame, sized by "
                             "the half-light radius of the galaxy's flux (the probabilities' frame, and the one every "
                             "calibration was made in); 'softened', a wider frame sized by the half-light radius of its "
                             "asinh-softened light, about the frame its display image gets; 'auto' (default): softened "
                             "where the stamp cuts the galaxy, else measured. Display images (JPEG/PNG) have one frame.")
    parser.add_argument("--cosmology", default="Planck18", help="astropy.cosmology realisation for bar_length_kpc.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="Keep the finished partitions of an interrupted run.")
    group.add_argument("--overwrite", action="store_true", help="Replace an existing --out.")
    parser.add_argument("--keep-parts", action="store_true", help="Keep the staging directory of parts.")
    parser.add_argument("--fail-on-error", action="store_true", help="Exit non-zero when any input gave an error row.")
    parser.add_argument("--timeout", default="20s", help="Scheduler connection timeout.")
    parser.add_argument("--tls-ca-file", default=None, help="TLS: CA certificate of the cluster (tls:// scheduler addresses).")
    parser.add_argument("--tls-cert", default=None, help="TLS: this client's certificate.")
    parser.add_argument("--tls-key", default=None, help="TLS: this client's private key.")
    parser.add_argument("--quiet", "-q", action="store_true", help="No progress output.")


#: RunOptions fields whose command-line flag is not the field's own name
_CLI_FLAGS = {"noise_frac": "--smoothgrad-noise"}


def run_cli(args):
    """Run ``survey-bars process``; returns the exit code."""
    if not args.input and not args.catalogue:
        print("survey-bars process: give --input PATH... or --catalogue TABLE.", file=sys.stderr)
        return 2
    try:
        options = RunOptions(
            model=args.model,
            smoothgrad_samples=args.smoothgrad_samples,
            noise_frac=args.smoothgrad_noise,
            method=args.method,
            pixel_scale=args.pixel_scale,
            band=args.band,
            max_pixels=args.max_pixels,
            save_saliency=args.save_saliency,
            cosmology=args.cosmology,
            threads=1,
            p_bar_min=args.p_bar_min,
            saliency_all=args.saliency_all,
            length_frame=args.length_frame,
        )
    except OptionError as exc:  # an option out of range: the message names it by its flag
        flag = _CLI_FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))
        msg = str(exc)
        msg = flag + msg[len(exc.option):] if msg.startswith(exc.option) else f"{flag}: {msg}"
        print(f"survey-bars process: {msg}", file=sys.stderr)
        return 2
    try:
        security = make_security(args.tls_ca_file, args.tls_cert, args.tls_key)
        summary = process(
            args.input,
            args.out,
            scheduler=args.scheduler,
            scheduler_file=args.scheduler_file,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            memory_limit=args.memory_limit,
            partition_size=args.partition_size,
            catalogue=args.catalogue,
            options=options,
            resume=args.resume,
            overwrite=args.overwrite,
            keep_parts=args.keep_parts,
            timeout=args.timeout,
            progress=not args.quiet,
            security=security,
        )
    except JobError as exc:
        print(f"survey-bars process: {exc}", file=sys.stderr)
        return 1
    print(summary)
    if args.fail_on_error and summary["errors"]:
        print(f"survey-bars process: {summary['errors']} inputs gave error rows (--fail-on-error).", file=sys.stderr)
        return 3
    return 0
