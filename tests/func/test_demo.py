"""``sharedpg demo``: the README's first command must work, as root too (the server then runs as nobody)."""

from __future__ import annotations

from tests.conftest import Cli


def test_demo_runs_every_step_and_cleans_up(cli: Cli) -> None:
    result = cli("demo", timeout=180)
    assert result.code == 0, result
    assert "9 of 9 steps behaved as shown" in result.stdout
    assert result.stdout.count("(as expected)") == 9
    assert "bootstrap: 6 of 6 tenants ready" in result.stdout
    assert "ready: grafana@" in result.stdout
    assert "sonarqube: created" in result.stdout and "sonarqube: unchanged" in result.stdout
    assert "the server is stopped and its files removed" in result.stdout
