"""``godel serve`` refuses to hand the machine to the network: a non-loopback bind with authentication off is
refused at start with a clear message; with ``--tls-cert/--tls-key`` it serves HTTPS (and nothing in clear)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.serverproc import ServerProcess, free_port


def test_a_public_bind_without_authentication_is_refused(fast_tmp: Path) -> None:
    env = {**os.environ, "GODEL_HOME": str(fast_tmp / "home"), "GODEL_AUTH_ENABLED": "false"}
    result = subprocess.run([sys.executable, "-m", "godel", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 with authentication off" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    argv = [sys.executable, "-m", "godel", "serve", "--tls-cert", "x.pem", "--port", str(free_port())]
    half = subprocess.run(argv, env={**env, "GODEL_AUTH_ENABLED": "true"}, capture_output=True, text=True, timeout=60)
    assert half.returncode == 1 and "--tls-cert and --tls-key go together" in half.stderr


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_tls_serves_https_only(fast_tmp: Path) -> None:
    cert, key = _self_signed(fast_tmp)
    port = free_port()
    server = ServerProcess(fast_tmp / "home", port, GODEL_TLS_CERT=str(cert), GODEL_TLS_KEY=str(key),
                           GODEL_URL=f"https://localhost:{port}")  # fmt: skip
    server.url = f"https://localhost:{port}"
    try:
        server.start_tls(cert)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as c:
            r = c.get(f"https://localhost:{port}/auth/me", headers=server.headers)
            assert r.status_code == 200 and r.json()["data"]["id"] == "user:admin"
        try:
            plain = httpx.get(f"http://localhost:{port}/health", timeout=5)
            assert plain.status_code != 200
        except httpx.HTTPError:
            pass  # the TLS listener does not speak plain HTTP at all
    finally:
        server.stop()
