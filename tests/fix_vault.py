"""A strict stand-in for HashiCorp Vault's KV v2 engine and Kubernetes auth, on loopback.

No Vault server can be installed here, so this implements exactly the endpoints sharedpg uses, as
Vault documents them: ``GET`` and ``POST /v1/<mount>/data/<path>`` with check-and-set (``options.cas``:
0 = only if absent, N = only if the current version is N; otherwise 400 "check-and-set parameter did
not match the current version"), ``POST /v1/auth/kubernetes/login``, ``X-Vault-Token`` checked on every
KV request (403 "permission denied" for an unknown token or a path outside its policy), 404 with an
empty ``errors`` list for a missing secret, and 503 "Vault is sealed" while sealed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class FakeVault:
    def __init__(self, mount: str = "secret"):
        self.mount = mount
        self.root_token = secrets.token_urlsafe(16)
        self.tokens: dict[str, str] = {self.root_token: ""}  # token -> path prefix it may use ("" = all)
        self.k8s_roles: dict[str, str] = {}  # role -> the service-account JWT it accepts
        self.store: dict[str, list[dict[str, Any]]] = {}  # path -> versions (data dicts)
        self.sealed = False
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def token_for(self, prefix: str) -> str:
        token = secrets.token_urlsafe(16)
        self.tokens[token] = prefix
        return token

    def latest(self, path: str) -> dict[str, Any] | None:
        versions = self.store.get(path)
        return versions[-1] if versions else None

    def put(self, path: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.store.setdefault(path, []).append(dict(data))

    def writes(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST" and "/data/" in _)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _kv_path(self) -> str | None:
                prefix = f"/v1/{vault.mount}/data/"
                path = self.path.split("?", 1)[0]
                return path[len(prefix) :] if path.startswith(prefix) else None

            def _authorized(self, path: str) -> bool:
                token = self.headers.get("X-Vault-Token")
                return token in vault.tokens and path.startswith(vault.tokens[token])

            def do_GET(self) -> None:
                vault.requests.append(("GET", self.path))
                if vault.sealed:
                    return self._send(503, {"errors": ["Vault is sealed"]})
                path = self._kv_path()
                if path is None:
                    return self._send(404, {"errors": [f'no handler for route "{self.path}". route entry not found.']})
                if not self._authorized(path):
                    return self._send(403, {"errors": ["permission denied"]})
                with vault.lock:
                    versions = vault.store.get(path)
                    if not versions:
                        return self._send(404, {"errors": []})
                    meta = _metadata(len(versions))
                    return self._send(200, _envelope({"data": dict(versions[-1]), "metadata": meta}))

            def do_POST(self) -> None:
                vault.requests.append(("POST", self.path))
                if vault.sealed:
                    return self._send(503, {"errors": ["Vault is sealed"]})
                if self.path == "/v1/auth/kubernetes/login":
                    return self._login(self._body())
                path = self._kv_path()
                if path is None:
                    return self._send(404, {"errors": [f'no handler for route "{self.path}". route entry not found.']})
                if not self._authorized(path):
                    return self._send(403, {"errors": ["permission denied"]})
                body = self._body()
                if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
                    return self._send(400, {"errors": ["no data provided"]})
                cas = (body.get("options") or {}).get("cas")
                with vault.lock:
                    versions = vault.store.setdefault(path, [])
                    if cas is not None and cas != len(versions):
                        return self._send(
                            400, {"errors": ["check-and-set parameter did not match the current version"]}
                        )
                    versions.append(dict(body["data"]))
                    return self._send(200, _envelope(_metadata(len(versions))))

            def _login(self, body: Any) -> None:
                role, jwt = (body or {}).get("role"), (body or {}).get("jwt")
                if role not in vault.k8s_roles:
                    return self._send(400, {"errors": [f'invalid role name "{role}"']})
                if jwt != vault.k8s_roles[role]:
                    return self._send(403, {"errors": ["permission denied"]})
                token = vault.token_for("")
                auth = {"client_token": token, "accessor": secrets.token_hex(8), "policies": ["default", role],
                        "token_policies": ["default", role], "metadata": {"role": role}, "lease_duration": 3600,
                        "renewable": True, "entity_id": "", "token_type": "service", "orphan": True}  # fmt: skip
                return self._send(200, {**_envelope(None), "auth": auth})

        return Handler


def _metadata(version: int) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return {"created_time": now, "custom_metadata": None, "deletion_time": "", "destroyed": False, "version": version}


def _envelope(data: Any) -> dict[str, Any]:
    return {"request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": data, "wrap_info": None, "warnings": None, "auth": None, "mount_type": "kv"}  # fmt: skip


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    fake = FakeVault()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
