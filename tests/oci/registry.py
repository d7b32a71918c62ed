"""Debian's docker-registry on 127.0.0.1 with its own config, optionally behind a token server we run here."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

USER, PASSWORD = "tester", "s3cret"
SERVICE, ISSUER = "test-registry", "test-token-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs registry tokens (RS256, certificate in ``x5c``) with a fresh self-signed key."""

    def __init__(self, work: Path) -> None:
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = work / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 10, "iat": now,
                  "jti": str(uuid.uuid4()), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


@contextmanager
def token_server(issuer: TokenIssuer) -> Iterator[tuple[str, list[str]]]:
    """A token endpoint that wants Basic ``tester:s3cret``; yields its URL and a log of requests."""
    log: list[str] = []
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            authorized = self.headers.get("Authorization") == expected
            log.append(f"{'auth' if authorized else 'anon'} {query.get('scope')}")
            if not authorized:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.token(query.get("scope", []))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", log
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    creds: str | None = None  # for skopeo --dest-creds

    def push(self, source: str, repo_tag: str, *extra: str) -> str:
        args = ["skopeo", "copy", "--dest-tls-verify=false", *extra]
        if self.creds:
            args += ["--dest-creds", self.creds]
        subprocess.run([*args, source, f"docker://{self.host}/{repo_tag}"], check=True, capture_output=True)
        return f"{self.host}/{repo_tag}"


@contextmanager
def registry(work: Path, token_realm: str | None = None, bundle: Path | None = None,
             basic_auth: bool = False) -> Iterator[Registry]:
    """``token_realm``+``bundle``: token auth; ``basic_auth``: htpasswd (bcrypt) with tester:s3cret."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(work / "data")}, "delete": {"enabled": True}},
              "http": {"addr": f"127.0.0.1:{port}"}}
    if token_realm:
        config["auth"] = {"token": {"realm": token_realm, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": str(bundle)}}
    if basic_auth:
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        (work / "htpasswd").write_text(f"{USER}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "test-basic", "path": str(work / "htpasswd")}}
    (work / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (work / "registry.log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
                if resp.status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(work / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", proc, f"{USER}:{PASSWORD}" if token_realm or basic_auth else None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
