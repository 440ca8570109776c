"""TLS between the client, the scheduler and the workers, with certificates made in the test.

A CA and two certificates signed by it (one for the cluster, one for the client, both valid for
127.0.0.1 and localhost) are made with ``cryptography``. A ``dask scheduler`` on
``tls://127.0.0.1`` and one ``dask worker`` run as separate processes with
``--tls-ca-file/--tls-cert/--tls-key``. ``survey-bars process --scheduler tls://...`` with the
client certificate writes a complete catalogue; a client without TLS, and one whose
certificate another CA signed, are refused with exit code 1 and a message.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from survey_bars.testing import galaxy_image, model_for_tests, write_cutout

pytestmark = [pytest.mark.cluster]

N_FILES = 6


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "survey-bars tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_pem(path, obj):
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "private_bytes"):
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    else:
        data = obj.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    if hasattr(obj, "private_bytes"):
        os.chmod(path, 0o600)
    return str(path)


def make_ca(cn="survey-bars test CA"):
    """A self-signed CA certificate and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca_cert, ca_key, cn):
    """A certificate for 127.0.0.1 and localhost, for servers and clients, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca()
    out = {"ca": _write_pem(d / "ca.pem", ca)}
    for who in ("cluster", "client"):
        cert, key = make_leaf(ca, ca_key, f"survey-bars {who}")
        out[f"{who}_cert"] = _write_pem(d / f"{who}.pem", cert)
        out[f"{who}_key"] = _write_pem(d / f"{who}.key", key)
    rogue, rogue_key = make_ca("rogue CA")
    cert, key = make_leaf(rogue, rogue_key, "intruder")
    out["rogue_cert"] = _write_pem(d / "rogue.pem", cert)
    out["rogue_key"] = _write_pem(d / "rogue.key", key)
    return out


def _wait_for(predicate, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    """A TLS scheduler and one TLS worker as separate processes; yields the scheduler address."""
    d = tmp_path_factory.mktemp("tls_cluster")
    sched_file = d / "scheduler.json"
    tls = ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cluster_cert"], "--tls-key", certs["cluster_key"]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "True"}
    log = open(d / "dask.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "tls://127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file), *tls], stdout=log, stderr=subprocess.STDOUT, env=env)]
    try:
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 60, "the scheduler file")
        _wait_for(lambda: "address" in json.loads(sched_file.read_text() or "{}"), 10, "the scheduler address")
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--no-nanny", "--memory-limit", "2GiB", "--host", "127.0.0.1", "--no-dashboard", *tls],
                                      stdout=log, stderr=subprocess.STDOUT, env=env))
        from distributed import Client, Security

        sec = Security(tls_ca_file=certs["ca"], tls_client_cert=certs["client_cert"], tls_client_key=certs["client_key"], require_encryption=True)
        with Client(address, security=sec, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
            workers = list(c.scheduler_info()["workers"])
        yield {"address": address, "workers": workers, "log": d / "dask.log"}
    finally:
        for p in procs[::-1]:  # the worker first, so that it does not wait to reconnect
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls_inputs")
    for i in range(N_FILES):
        write_cutout(d / f"g{i}.fits", galaxy_image(seed=200 + i, bar_len=20 if i % 2 else None), objid=f"T{i}")
    return d


def _cli(args, timeout=180):
    model = model_for_tests()
    cmd = [sys.executable, "-m", "survey_bars.cli", "process", *args, "--smoothgrad-samples", "8", "--quiet"]
    if model:
        cmd += ["--model", model]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_cluster_speaks_only_tls(tls_cluster):
    assert tls_cluster["address"].startswith("tls://127.0.0.1:")
    assert tls_cluster["workers"] and all(w.startswith("tls://") for w in tls_cluster["workers"])


def test_process_over_tls_writes_complete_catalogue(tls_cluster, certs, inputs, tmp_path):
    out = tmp_path / "tls.parquet"
    r = _cli(["--input", str(inputs), "--out", str(out), "--scheduler", tls_cluster["address"], "--partition-size", "2",
              "--tls-ca-file", certs["ca"], "--tls-cert", certs["client_cert"], "--tls-key", certs["client_key"]])
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_parquet(out)
    assert len(df) == N_FILES and df.file.is_unique
    assert sorted(df.object_id) == [f"T{i}" for i in range(N_FILES)]
    assert (df.status == "ok").all(), df.error.tolist()


def test_plain_tcp_client_is_refused(tls_cluster, inputs, tmp_path):
    tcp = tls_cluster["address"].replace("tls://", "tcp://")
    out = tmp_path / "plain.parquet"
    r = _cli(["--input", str(inputs), "--out", str(out), "--scheduler", tcp, "--timeout", "3s"], timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Cannot reach the Dask scheduler" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not out.exists()


def test_tls_address_without_certificates_is_refused(tls_cluster, inputs, tmp_path):
    out = tmp_path / "nocert.parquet"
    r = _cli(["--input", str(inputs), "--out", str(out), "--scheduler", tls_cluster["address"], "--timeout", "3s"], timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "survey-bars process:" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not out.exists()


def test_certificate_from_another_ca_is_refused(tls_cluster, certs, inputs, tmp_path):
    out = tmp_path / "rogue.parquet"
    r = _cli(["--input", str(inputs), "--out", str(out), "--scheduler", tls_cluster["address"], "--timeout", "3s",
              "--tls-ca-file", certs["ca"], "--tls-cert", certs["rogue_cert"], "--tls-key", certs["rogue_key"]], timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Cannot reach the Dask scheduler" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not out.exists()
