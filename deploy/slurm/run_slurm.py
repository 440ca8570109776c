#!/usr/bin/env python
"""Run ``survey-bars process`` on a SLURM cluster through dask-jobqueue.

The script starts a Dask scheduler where it runs (a login node, or better a small
allocation of its own), submits SLURM jobs that each start ``--processes`` Dask workers of
one thread, and calls the survey-bars Python API with a client connected to them.

Examples
--------
Print the job script that would be submitted, without submitting anything::

    python deploy/slurm/run_slurm.py --dry-run --account astro --queue cpu \\
        --cores 32 --memory 120GB --walltime 04:00:00

Process a directory of cutouts on up to 20 nodes::

    python deploy/slurm/run_slurm.py --account astro --queue cpu --jobs 4 --max-jobs 20 \\
        --input /scratch/survey/cutouts --out /scratch/survey/catalogue.parquet --resume

Every option also has an environment variable (``SURVEY_BARS_SLURM_*``, and the standard
``SBATCH_ACCOUNT`` / ``SBATCH_PARTITION`` / ``SBATCH_TIMELIMIT``); see ``--help``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

__all__ = ["build_cluster", "parse_args", "process_kwargs", "main", "walltime_minutes"]

#: option -> environment variables consulted for its default, first match wins
ENV = {
    "account": ("SURVEY_BARS_SLURM_ACCOUNT", "SBATCH_ACCOUNT"),
    "queue": ("SURVEY_BARS_SLURM_QUEUE", "SBATCH_PARTITION"),
    "walltime": ("SURVEY_BARS_SLURM_WALLTIME", "SBATCH_TIMELIMIT"),
    "cores": ("SURVEY_BARS_SLURM_CORES",),
    "memory": ("SURVEY_BARS_SLURM_MEMORY",),
    "processes": ("SURVEY_BARS_SLURM_PROCESSES",),
    "local_directory": ("SURVEY_BARS_SLURM_LOCAL_DIR",),
    "interface": ("SURVEY_BARS_SLURM_INTERFACE",),
    "log_directory": ("SURVEY_BARS_SLURM_LOG_DIR",),
    "python": ("SURVEY_BARS_SLURM_PYTHON",),
}


def _env(name, default=None):
    for var in ENV.get(name, ()):
        value = os.environ.get(var)
        if value not in (None, ""):
            return value
    return default


def walltime_minutes(walltime):
    """Convert a SLURM time limit to minutes.

    Parameters
    ----------
    walltime : str
        ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``.

    Returns
    -------
    float
        The time limit in minutes.

    Raises
    ------
    ValueError
        If ``walltime`` is not in one of those forms.
    """
    text = str(walltime).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        msg = f"Cannot read the walltime {walltime!r}; use SLURM's form, e.g. 04:00:00 or 1-00:00:00."
        raise ValueError(msg)
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        return int(days) * 1440 + hours * 60 + minutes + seconds / 60
    if c is not None:  # HH:MM:SS
        return int(a) * 60 + int(b) + int(c) / 60
    if b is not None:  # MM:SS
        return int(a) + int(b) / 60
    return float(a)  # MM


def build_cluster(
    *,
    cores=8,
    memory="32GB",
    walltime="04:00:00",
    account=None,
    queue=None,
    processes=None,
    job_name="survey-bars",
    local_directory=None,
    interface=None,
    log_directory=None,
    python=None,
    prologue=(),
    job_extra=(),
    lifetime_margin_minutes=5.0,
    dashboard_address=":8787",
):
    """Build (but do not scale) a ``dask_jobqueue.SLURMCluster`` for survey-bars.

    Each SLURM job runs ``processes`` Dask worker processes of one thread each: the ONNX
    model is loaded once per process and inference is single-threaded, so processes, not
    threads, give throughput. Workers retire themselves ``lifetime_margin_minutes`` before
    the walltime (``--lifetime``) so that a job ending never kills a task half-way; with
    ``cluster.adapt`` new jobs replace them.

    Nothing is submitted and SLURM need not be installed: ``cluster.job_script()`` shows the
    script that ``cluster.scale`` / ``cluster.adapt`` would pass to ``sbatch``.

    Parameters
    ----------
    cores : int
        CPU cores per job (``--cpus-per-task``).
    memory : str
        Memory per job, e.g. ``"120GB"``; shared among the job's worker processes.
    walltime : str
        SLURM time limit per job, e.g. ``"04:00:00"``.
    account : str, optional
        SLURM account (``-A``).
    queue : str, optional
        SLURM partition (``-p``).
    processes : int, optional
        Worker processes per job (default: ``cores``, i.e. one thread per process).
    job_name : str
        SLURM job name.
    local_directory : str, optional
        Node-local scratch for worker spill files, e.g. ``"$TMPDIR"``.
    interface : str, optional
        Network interface for scheduler and workers, e.g. ``"ib0"``.
    log_directory : str, optional
        Directory for the jobs' stdout/stderr files.
    python : str, optional
        Python executable on the compute nodes (default: this interpreter).
    prologue : sequence of str
        Shell lines run before the workers start, e.g. ``"module load python/3.11"``,
        ``"source ~/venvs/survey-bars/bin/activate"``.
    job_extra : sequence of str
        Extra ``#SBATCH`` directives, e.g. ``"--constraint=cpu"`` or ``"--qos=normal"``.
    lifetime_margin_minutes : float
        Retire workers this long before the walltime; ``0`` disables ``--lifetime``.
    dashboard_address : str
        Scheduler dashboard address (``":0"`` for a free port).

    Returns
    -------
    dask_jobqueue.SLURMCluster
        The cluster; close it (or use it as a context manager) when done.

    Raises
    ------
    ValueError
        If ``cores``, ``processes`` or ``walltime`` are invalid.
    """
    from dask_jobqueue import SLURMCluster

    cores = int(cores)
    processes = cores if processes is None else int(processes)
    if cores < 1:
        msg = f"cores must be at least 1, got {cores}."
        raise ValueError(msg)
    if not 1 <= processes <= cores:
        msg = f"processes must be between 1 and cores ({cores}), got {processes}."
        raise ValueError(msg)
    worker_extra_args = []
    limit = walltime_minutes(walltime)
    if lifetime_margin_minutes and lifetime_margin_minutes > 0:
        life = limit - float(lifetime_margin_minutes)
        if life <= 1:
            msg = (
                f"The walltime {walltime} leaves no time after the {lifetime_margin_minutes} min "
                "lifetime margin; raise --walltime or lower --lifetime-margin."
            )
            raise ValueError(msg)
        stagger = min(4.0, max(1.0, 0.05 * life))
        worker_extra_args += ["--lifetime", f"{int(life)}m", "--lifetime-stagger", f"{int(stagger)}m"]

    kwargs = dict(
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=walltime,
        job_name=job_name,
        account=account,
        queue=queue,
        job_extra_directives=list(job_extra),
        job_script_prologue=[
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
            "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",  # survey_bars.cluster.WORKER_CONFIG
            *prologue,
        ],
        worker_extra_args=worker_extra_args,
        scheduler_options={"dashboard_address": dashboard_address},
    )
    if python:
        kwargs["python"] = python
    if local_directory:
        kwargs["local_directory"] = local_directory
    if interface:
        kwargs["interface"] = interface
    if log_directory:
        kwargs["log_directory"] = log_directory
    return SLURMCluster(**kwargs)


def parse_args(argv=None):
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
    """
    p = argparse.ArgumentParser(
        prog="run_slurm.py",
        description="Run survey-bars process on SLURM through dask-jobqueue.",
        epilog="Defaults come from SURVEY_BARS_SLURM_* variables, then SBATCH_ACCOUNT, "
        "SBATCH_PARTITION and SBATCH_TIMELIMIT.",
    )
    g = p.add_argument_group("SLURM jobs (each runs --processes Dask workers of one thread)")
    g.add_argument("--account", "-A", default=_env("account"), help="SLURM account [SBATCH_ACCOUNT].")
    g.add_argument("--queue", "-p", default=_env("queue"), help="SLURM partition [SBATCH_PARTITION].")
    g.add_argument("--walltime", "-t", default=_env("walltime", "04:00:00"), help="Time limit per job (default 04:00:00) [SBATCH_TIMELIMIT].")
    g.add_argument("--cores", type=int, default=int(_env("cores", 8)), help="Cores per job (default 8).")
    g.add_argument("--memory", default=_env("memory", "32GB"), help="Memory per job (default 32GB).")
    g.add_argument("--processes", type=int, default=_env("processes"), help="Worker processes per job (default: --cores).")
    g.add_argument("--jobs", type=int, default=2, help="SLURM jobs to keep running (default 2).")
    g.add_argument("--max-jobs", type=int, default=None, help="Scale adaptively between --jobs and this many jobs.")
    g.add_argument("--job-name", default="survey-bars")
    g.add_argument("--job-extra", action="append", default=[], metavar="DIRECTIVE", help="Extra #SBATCH directive, e.g. --constraint=cpu (repeatable).")
    g.add_argument("--prologue", action="append", default=[], metavar="LINE", help="Shell line run before the workers, e.g. 'module load python' (repeatable).")
    g.add_argument("--python", default=_env("python"), help="Python on the compute nodes (default: this interpreter).")
    g.add_argument("--local-directory", default=_env("local_directory"), help="Node-local scratch for spilling, e.g. '$TMPDIR'.")
    g.add_argument("--interface", default=_env("interface"), help="Network interface, e.g. ib0.")
    g.add_argument("--log-directory", default=_env("log_directory"), help="Directory for the jobs' output files.")
    g.add_argument("--lifetime-margin", type=float, default=5.0, metavar="MIN", help="Retire workers this many minutes before the walltime (default 5; 0 disables).")
    g.add_argument("--dashboard-address", default=":8787")
    g.add_argument("--wait-timeout", type=float, default=None, metavar="S", help="Give up if no worker has started after S seconds (default: wait for the queue).")
    g.add_argument("--dry-run", action="store_true", help="Print the generated job script and exit; submits nothing.")

    s = p.add_argument_group("survey-bars process")
    s.add_argument("--input", nargs="+", default=[], metavar="PATH", help="Directories, globs or files of FITS cutouts.")
    s.add_argument("--out", help="Output catalogue (.parquet file, or a directory).")
    s.add_argument("--model", default=None, help="Model bundle (default: the shipped bundle).")
    s.add_argument("--partition-size", type=int, default=None, help="Files per partition.")
    s.add_argument("--save-saliency", default=None, metavar="DIR", help="Write saliency FITS maps for QA.")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="Skip partitions finished by an earlier run.")
    mode.add_argument("--overwrite", action="store_true", help="Replace an existing catalogue.")
    args = p.parse_args(argv)
    if not args.dry_run and (not args.input or not args.out):
        p.error("--input and --out are required (or use --dry-run to only print the job script).")
    if args.max_jobs is not None and args.max_jobs < args.jobs:
        p.error(f"--max-jobs ({args.max_jobs}) must be at least --jobs ({args.jobs}).")
    return args


def _cluster_from_args(args, *, dashboard_address=None):
    return build_cluster(
        cores=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        account=args.account,
        queue=args.queue,
        processes=args.processes,
        job_name=args.job_name,
        local_directory=args.local_directory,
        interface=args.interface,
        log_directory=args.log_directory,
        python=args.python,
        prologue=args.prologue,
        job_extra=args.job_extra,
        lifetime_margin_minutes=args.lifetime_margin,
        dashboard_address=dashboard_address or args.dashboard_address,
    )


def main(argv=None):
    """Run the recipe.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0 on success, 1 when no worker started in time.
    """
    args = parse_args(argv)
    if args.dry_run:
        with _cluster_from_args(args, dashboard_address=":0") as cluster:
            print(cluster.job_script())
        return 0

    from dask.distributed import Client

    from survey_bars.cluster import process

    with _cluster_from_args(args) as cluster:
        # adapt with minimum == maximum keeps `--jobs` jobs alive: a job that reaches its
        # walltime (workers retire via --lifetime) is replaced by a new submission.
        cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.max_jobs or args.jobs)
        print(f"Dashboard: {cluster.dashboard_link}", file=sys.stderr)
        with Client(cluster) as client:
            try:
                client.wait_for_workers(1, timeout=args.wait_timeout)
            except TimeoutError:
                print(
                    f"No Dask worker started within {args.wait_timeout:g} s. Check the queue "
                    "(squeue --me) and the job output files; raise --wait-timeout for busy queues.",
                    file=sys.stderr,
                )
                return 1
            summary = process(args.input, args.out, client=client, **process_kwargs(args, process))
            print(f"survey-bars: {summary}", file=sys.stderr)
    return 0


def process_kwargs(args, process):
    """Keyword arguments for ``survey_bars.cluster.process`` from the parsed options.

    Model and saliency settings go in directly when ``process`` takes them as keywords,
    otherwise in a ``survey_bars.pipeline.RunOptions`` (``options=``).

    Parameters
    ----------
    args : argparse.Namespace
        Output of :func:`parse_args`.
    process : callable
        The ``process`` function (its signature decides where the settings go).

    Returns
    -------
    dict
    """
    import inspect

    params = inspect.signature(process).parameters
    kwargs = {"resume": args.resume, "overwrite": args.overwrite}
    if args.partition_size is not None:
        kwargs["partition_size"] = args.partition_size
    run = {}
    if args.model is not None:
        run["model"] = os.path.abspath(args.model)
    if args.save_saliency is not None:
        run["save_saliency"] = os.path.abspath(args.save_saliency)
    if all(k in params for k in run):
        kwargs.update(run)
    else:
        from survey_bars.pipeline import RunOptions

        kwargs["options"] = RunOptions(**run)
    return kwargs


if __name__ == "__main__":
    sys.exit(main())
