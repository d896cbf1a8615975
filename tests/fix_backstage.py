"""The real Backstage backend as a process (tests/backstage: @backstage/backend-defaults with the catalog, auth,
scaffolder and search backends, pinned by package-lock.json, installed by scripts/test.sh with npm ci), for
the cutover test and the cutover's downtime benchmark."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from sharedpg_tools.localserver import free_port
from tests.conftest import ROOT

BACKSTAGE = ROOT / "tests" / "backstage"
TOKEN = secrets.token_urlsafe(24)
ENTITIES = """
apiVersion: backstage.io/v1alpha1
kind: System
metadata: {name: plataforma, description: "Plataforma común – ünïcode"}
spec: {owner: platform-team}
"""
ENTITIES += "".join(f"""---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {{name: service-{n}, title: "Servicio {n} ✓"}}
spec: {{type: service, lifecycle: production, owner: platform-team, system: plataforma}}
""" for n in range(1, 9))  # fmt: skip


class Backstage:
    """The backend as a process: ``node index.js --config …`` with the given environment."""

    def __init__(self, workdir: Path, configs: list[dict[str, Any]], env: dict[str, str]):
        self.port = free_port()
        files = []
        for n, config in enumerate([self._base(workdir), *configs]):
            path = workdir / f"app-config-{n}.yaml"
            path.write_text(yaml.safe_dump(config))
            files += ["--config", str(path)]
        self.log = (workdir / f"backstage-{self.port}.log").open("w")
        self.proc = subprocess.Popen(["node", "index.js", *files], cwd=BACKSTAGE, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"],
                                                                    "NODE_ENV": "production", **env})  # fmt: skip
        self.logfile = Path(self.log.name)

    def _base(self, workdir: Path) -> dict[str, Any]:
        (workdir / "entities.yaml").write_text(ENTITIES)
        return {
            "app": {"baseUrl": "http://127.0.0.1:3000"},
            "backend": {
                "baseUrl": f"http://127.0.0.1:{self.port}",
                "listen": {"port": self.port, "host": "127.0.0.1"},
                "auth": {"externalAccess": [{"type": "static", "options": {"token": TOKEN, "subject": "test"}}]},
            },
            "catalog": {"locations": [{"type": "file", "target": str(workdir / "entities.yaml"),
                                       "rules": [{"allow": ["Component", "System"]}]}]},
        }  # fmt: skip

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (http to the test's own port)
            return json.loads(answer.read())

    def wait(self, ready: Any, timeout: float = 180) -> Any:
        """Poll ``ready()`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"Backstage exited: {self.logfile.read_text()[-3000:]}"
            try:
                found = ready()
                if found:
                    return found
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Backstage not ready: {self.logfile.read_text()[-3000:]}"
            time.sleep(0.5)

    def ready(self) -> None:
        self.wait(lambda: self.get("/.backstage/health/v1/readiness").get("status") == "ok")

    def entities(self) -> dict[str, str]:
        """entity ref -> metadata.uid, of what the catalog serves."""
        items = self.get("/api/catalog/entities/by-query?filter=kind=component,kind=system&limit=100")["items"]
        return {f"{e['kind'].lower()}:{e['metadata']['name']}": e["metadata"]["uid"] for e in items}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def not_installed() -> str | None:
    """Why the backend cannot run here, or None."""
    if shutil.which("node") is None or not (BACKSTAGE / "node_modules" / "@backstage" / "backend-defaults").exists():
        return "the Backstage backend is not installed: scripts/test.sh runs npm ci in tests/backstage"
    return None
