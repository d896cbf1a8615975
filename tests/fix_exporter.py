"""A running ``sharedpg serve-metrics`` and what its endpoint answers, for the exporter and monitoring tests."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sharedpg_tools.localserver import free_port
from tests.conftest import Cli, Running


class Exporter:
    """A running ``sharedpg serve-metrics`` and what its endpoint answers."""

    def __init__(self, running: Running, port: int):
        self.running = running
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while self.get("/healthz")[0] != 200:
            assert running.proc.poll() is None, running.finish()
            assert time.monotonic() < deadline, "serve-metrics did not start listening"
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as answer:  # noqa: S310 (our own http URL)
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def scrape(self) -> dict[str, list[Any]]:
        status, text = self.get("/metrics")
        assert status == 200, text
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def stop(self) -> str:
        self.running.proc.send_signal(signal.SIGTERM)
        result = self.running.finish(30)
        assert result.code == 143, result
        return result.stderr


Start = Callable[..., Exporter]


@pytest.fixture
def start_exporter(cli: Cli) -> Iterator[Start]:
    started: list[Exporter] = []

    def start(dsn: str, password: str, *args: str) -> Exporter:
        port = free_port()
        running = cli.start("serve-metrics", "--listen", f"127.0.0.1:{port}", "--dsn", dsn, "--log-format", "json",
                            *args, env={"PGPASSWORD": password})  # fmt: skip
        started.append(Exporter(running, port))
        return started[-1]

    yield start
    for exporter in started:
        if exporter.running.proc.poll() is None:
            exporter.stop()
