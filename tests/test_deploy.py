"""Checks of the deployment recipes in ``deploy/`` that need no Docker, Kubernetes or SLURM.

The Compose file and the Kubernetes manifests are parsed and cross-checked (service names,
ports, volumes); the Dockerfile is read; the SLURM job script is generated with
dask-jobqueue, which does not need SLURM to do so. Images are never built here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "kubernetes"
SLURM = DEPLOY / "slurm"

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value, env=None):
    """Substitute Compose ``${VAR}`` / ``${VAR:-default}`` like ``docker compose config``."""
    env = env or {}
    if isinstance(value, str):
        value = _VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose():
    with open(DOCKER / "compose.yaml") as fh:
        return _interpolate(yaml.safe_load(fh))


def _command(service):
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


# --------------------------------------------------------------------------------- docker


def test_compose_services(compose):
    services = compose["services"]
    assert {"scheduler", "worker", "job"} <= set(services)
    for name in ("scheduler", "worker", "job"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        # the build context is the repository root, so `pip install .` sees pyproject.toml
        context = (DOCKER / svc["build"]["context"]).resolve()
        assert (context / "pyproject.toml").exists()
        assert (context / svc["build"]["dockerfile"]).exists()
    images = {services[n]["image"] for n in ("scheduler", "worker", "job")}
    assert len(images) == 1, f"all services must share one image, got {images}"


def test_compose_ports_are_consistent(compose):
    services = compose["services"]
    sched = _command(services["scheduler"])
    assert sched[:2] == ["dask", "scheduler"]
    port = sched[sched.index("--port") + 1]
    assert any(str(p).endswith(f":{port}") for p in services["scheduler"]["ports"])
    address = f"tcp://scheduler:{port}"

    worker = _command(services["worker"])
    assert worker[:2] == ["dask", "worker"]
    assert address in worker
    assert worker[worker.index("--nthreads") + 1] == "1"
    assert "--memory-limit" in worker
    assert int(services["worker"]["deploy"]["replicas"]) >= 1
    assert services["worker"]["depends_on"]["scheduler"]["condition"] == "service_healthy"

    script = " ".join(_command(services["job"]))
    assert "survey-bars simulate --out /data/fits -n 200" in script
    assert "survey-bars process --input /data/fits --out /data/catalogue.parquet" in script
    assert f"--scheduler {address}" in script
    assert "scheduler" in services["job"]["depends_on"]


def test_compose_shared_volume(compose):
    services = compose["services"]
    mounts = {}
    for name in ("worker", "job"):
        vols = services[name]["volumes"]
        mounts[name] = {v.split(":")[1]: v.split(":")[0] for v in vols}
    # workers read the cutouts and write parts where the job put / reads them
    assert mounts["worker"].get("/data") == mounts["job"].get("/data")
    volume = mounts["job"]["/data"]
    assert volume in compose["volumes"]


def test_dockerfile():
    text = (DOCKER / "Dockerfile").read_text()
    lower = text.lower()
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "torch" not in lower
    assert "[train" not in lower and "train]" not in lower
    # the package is built from the repository root (copied to /src), then installed
    assert 'spec="/src"' in text and re.search(r"pip wheel[^\n]*\$\{spec\}", text)
    assert 'req="survey-bars"' in text and re.search(r"pip install[^\n]*\$\{req\}", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "COPY . /src" in text
    # a Dockerfile-specific ignore file keeps .git out of the repository-root context
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ".git" in ignore


# ----------------------------------------------------------------------------- kubernetes


def _manifests():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        with open(path) as fh:
            docs += [(path.name, d) for d in yaml.safe_load_all(fh) if d]
    return docs


def _by_kind(kind):
    return [d for _, d in _manifests() if d["kind"] == kind]


def _pod_specs():
    cluster = _by_kind("DaskCluster")[0]
    specs = [cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"]]
    specs += [j["spec"]["template"]["spec"] for j in _by_kind("Job")]
    return specs


def test_k8s_kinds_and_api_versions():
    kinds = {(d["apiVersion"], d["kind"]) for _, d in _manifests()}
    assert ("kubernetes.dask.org/v1", "DaskCluster") in kinds
    assert ("batch/v1", "Job") in kinds
    assert ("v1", "PersistentVolumeClaim") in kinds
    for _, d in _manifests():
        if d["apiVersion"].startswith("kubernetes.dask.org"):
            assert d["apiVersion"] == "kubernetes.dask.org/v1"
            assert d["kind"] in {"DaskCluster", "DaskWorkerGroup", "DaskAutoscaler", "DaskJob"}


def test_k8s_scheduler_service_matches_job():
    cluster = _by_kind("DaskCluster")[0]
    name = cluster["metadata"]["name"]
    service = cluster["spec"]["scheduler"]["service"]
    comm = next(p for p in service["ports"] if p["name"] == "tcp-comm")
    assert service["selector"]["dask.org/cluster-name"] == name
    sched = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert any(p["name"] == comm["targetPort"] for p in sched["ports"])
    # the operator names the scheduler Service "<cluster>-scheduler"
    address = f"tcp://{name}-scheduler:{comm['port']}"
    process_jobs = [
        j for j in _by_kind("Job")
        if j["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["survey-bars", "process"]
    ]
    assert process_jobs
    for job in process_jobs:
        pod = job["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert args[args.index("--scheduler") + 1] == address
        assert "--input" in args and "--out" in args
        for init in pod.get("initContainers", []):
            script = " ".join(init["command"])
            assert f'"{name}-scheduler", {comm["port"]}' in script
    for scaler in _by_kind("DaskAutoscaler") + _by_kind("DaskWorkerGroup"):
        assert scaler["spec"]["cluster"] == name


def test_k8s_volumes_consistent():
    claim = _by_kind("PersistentVolumeClaim")[0]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    specs = _pod_specs()
    for pod in specs[:1] + specs[2:]:  # workers and jobs (the scheduler needs no data)
        vols = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            for m in c["volumeMounts"]:
                assert m["mountPath"] == "/data"
                assert vols[m["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    for pod in specs:
        assert pod["securityContext"]["runAsNonRoot"] is True
    worker = _by_kind("DaskCluster")[0]["spec"]["worker"]["spec"]["containers"][0]
    assert worker["command"] == ["dask", "worker"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"


def test_kustomization_lists_existing_files():
    with open(K8S / "kustomization.yaml") as fh:
        kust = yaml.safe_load(fh)
    for res in kust["resources"]:
        assert (K8S / res).exists(), res


# ---------------------------------------------------------------------------------- slurm


@pytest.fixture(scope="module")
def run_slurm():
    pytest.importorskip("dask_jobqueue")
    spec = importlib.util.spec_from_file_location("run_slurm", SLURM / "run_slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_slurm_job_script(run_slurm):
    with run_slurm.build_cluster(
        cores=16,
        memory="64GB",
        walltime="02:00:00",
        account="astro42",
        queue="cpu-short",
        job_extra=["--constraint=cpu"],
        prologue=["source /opt/venv/bin/activate"],
        local_directory="$TMPDIR",
        dashboard_address=":0",
    ) as cluster:
        script = cluster.job_script()
    lines = script.splitlines()
    for expected in (
        "#SBATCH -A astro42",
        "#SBATCH -p cpu-short",
        "#SBATCH -t 02:00:00",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --constraint=cpu",
        "#SBATCH -J survey-bars",
    ):
        assert expected in lines, f"{expected!r} missing from\n{script}"
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    worker = next(line for line in lines if "dask_worker" in line or "dask worker" in line)
    assert "distributed.cli.dask_worker" in worker
    assert "--nthreads 1" in worker and "--nworkers 16" in worker
    assert "--lifetime 115m" in worker  # 5 min before the 2 h walltime
    assert "--local-directory $TMPDIR" in worker
    assert lines.index("source /opt/venv/bin/activate") < lines.index(worker)


def test_slurm_dry_run_from_env(run_slurm, monkeypatch, capsys):
    monkeypatch.setenv("SBATCH_ACCOUNT", "envacct")
    monkeypatch.setenv("SBATCH_PARTITION", "envq")
    monkeypatch.setenv("SURVEY_BARS_SLURM_WALLTIME", "1-00:00:00")
    assert run_slurm.main(["--dry-run", "--cores", "4", "--memory", "8GB", "--processes", "2"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -A envacct" in out and "#SBATCH -p envq" in out
    assert "#SBATCH -t 1-00:00:00" in out
    assert "--nworkers 2" in out and "--nthreads 2" in out


def test_slurm_arguments(run_slurm):
    assert run_slurm.walltime_minutes("04:00:00") == 240
    assert run_slurm.walltime_minutes("1-02") == 26 * 60
    assert run_slurm.walltime_minutes("90") == 90
    with pytest.raises(ValueError, match="walltime"):
        run_slurm.walltime_minutes("four hours")
    with pytest.raises(SystemExit):
        run_slurm.parse_args(["--account", "a"])  # no --input/--out and no --dry-run
    with pytest.raises(ValueError, match="processes"):
        run_slurm.build_cluster(cores=2, processes=4)


def test_slurm_calls_the_process_api(run_slurm, tmp_path):
    """The recipe's keyword arguments bind to the real survey_bars.cluster.process."""
    import inspect

    cluster = pytest.importorskip("survey_bars.cluster")
    args = run_slurm.parse_args(
        ["--input", "cutouts/", "--out", "cat.parquet", "--model", "bundle/", "--save-saliency", "sal/", "--partition-size", "50", "--resume"]
    )
    kwargs = run_slurm.process_kwargs(args, cluster.process)
    inspect.signature(cluster.process).bind(args.input, args.out, client=None, **kwargs)
    assert kwargs["resume"] is True and kwargs["partition_size"] == 50
    opts = kwargs.get("options")
    model = kwargs.get("model", getattr(opts, "model", None))
    saliency = kwargs.get("save_saliency", getattr(opts, "save_saliency", None))
    assert model == os.path.abspath("bundle/") and saliency == os.path.abspath("sal/")

    def new_style(inputs, out, *, client=None, model=None, partition_size=64, resume=False, overwrite=False, save_saliency=None):
        pass

    kwargs = run_slurm.process_kwargs(args, new_style)
    inspect.signature(new_style).bind(args.input, args.out, client=None, **kwargs)


@pytest.mark.skipif(os.environ.get("SURVEY_BARS_DOCKER_BUILD") != "1", reason="set SURVEY_BARS_DOCKER_BUILD=1 to build the image (needs a Docker daemon)")
def test_docker_build():  # pragma: no cover - opt-in, needs Docker
    import subprocess

    subprocess.run(
        ["docker", "build", "-f", "deploy/docker/Dockerfile", "-t", "survey-bars:test", "."],
        cwd=ROOT,
        check=True,
    )


def test_worker_profiler_disabled_everywhere(compose, run_slurm):
    """Every recipe starts workers with Dask's profiler off, as survey-bars' LocalCluster does."""
    from survey_bars.cluster import WORKER_CONFIG

    assert WORKER_CONFIG["distributed.worker.profile.enabled"] is False
    env = compose["services"]["worker"]["environment"]
    assert env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    workers = [
        c
        for _, d in _manifests()
        if d["kind"] == "DaskCluster"
        for c in d["spec"]["worker"]["spec"]["containers"]
    ]
    assert workers
    for c in workers:
        assert {"name": "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "value": "False"} in c["env"]
    with run_slurm.build_cluster(cores=2, memory="4GB", walltime="00:10:00", dashboard_address=":0") as cluster:
        assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in cluster.job_script().splitlines()
