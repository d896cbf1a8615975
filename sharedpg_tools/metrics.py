"""check-pool's findings as Prometheus metrics: one set of names for the textfile (``check-pool --output
prometheus``) and the scraped endpoint (``serve-metrics``), rendered by the Prometheus client library.

Names follow Prometheus's conventions: the unit (``connections``, ``seconds``) ends the name, ``_total`` only
on counters, and one label names the role (tenants and any other role with sessions). When the server was
not read, only ``sharedpg_up 0`` and the status are exported: a missing series, never an invented zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sharedpg_tools import pool


def families(report: pool.Report) -> Iterator[Metric]:
    """The report's metric families."""
    yield _gauge("sharedpg_up", "1 when the server (offline: the spec) was read, 0 when it could not be",
                 report.capacity is not None)  # fmt: skip
    yield _gauge("sharedpg_pool_status", "check-pool's status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
                 int(report.status))  # fmt: skip
    c = report.capacity
    if c is None:
        return
    yield _gauge("sharedpg_max_connections", "The server's max_connections", c.max_connections)
    reserved = GaugeMetricFamily("sharedpg_reserved_connections", "Slots only superusers (kind=superuser) or "
                                 "pg_use_reserved_connections members (16+) may use", labels=["kind"])  # fmt: skip
    reserved.add_metric(["superuser"], c.superuser_reserved)
    reserved.add_metric(["pg_use_reserved_connections"], c.reserved)
    yield reserved
    yield _gauge("sharedpg_usable_connections", "max_connections minus the reserved slots", c.usable)
    roles = list(report.roles.values())
    if report.mode == "live":
        if report.only_role is not None:  # check-pool --role: the figures are that role's, and say so
            yield _gauge("sharedpg_connections", f"Client connections of role {report.only_role} only "
                         "(check-pool --role): not the server's total", report.total)  # fmt: skip
        else:
            yield _gauge("sharedpg_connections", "Client connections of all roles, those authenticating included",
                         report.total)  # fmt: skip
            stalled = "Client connections still authenticating (no role yet): each holds a slot"
            yield _gauge("sharedpg_authenticating_connections", stalled, report.authenticating)
    budgets = [u.budget for u in roles if u.budget is not None]
    if budgets:
        yield _gauge("sharedpg_budget_connections", "The spec's pool budgets, all tenants", sum(budgets))
    if report.headroom is not None:
        yield _gauge("sharedpg_admin_headroom_connections", "Slots the spec keeps free for admins", report.headroom)
    if report.hidden:  # the per-role counts would be low: not exported, and this says why
        yield _gauge("sharedpg_hidden_sessions", "Other roles' sessions this login cannot see (grant it pg_monitor)",
                     report.hidden)  # fmt: skip
    elif report.mode == "live":
        by_state = GaugeMetricFamily("sharedpg_role_connections", "Client connections by role and state",
                                     labels=["role", "state"])  # fmt: skip
        for usage in roles:
            for state in dict.fromkeys([*pool.STATES, *usage.states]):
                by_state.add_metric([usage.role, state], usage.states.get(state, 0))
        yield by_state
    yield _per_role("sharedpg_role_connection_limit", "The role's CONNECTION LIMIT on the server (-1: none)",
                    [(u.role, u.limit) for u in roles])  # fmt: skip
    yield _per_role("sharedpg_role_connection_budget", "The role's pool budget in the spec (max x replicas x "
                    "multiplier)", [(u.role, u.budget) for u in roles])  # fmt: skip
    yield _per_role("sharedpg_role_expected_connection_limit", "The CONNECTION LIMIT the spec sets for the role",
                    [(u.role, u.expected_limit) for u in roles])  # fmt: skip


def exporter_families(reads: Mapping[str, int], duration: float | None) -> Iterator[Metric]:
    """serve-metrics' own: its reads of the server by result, and how long the last one took."""
    counter = CounterMetricFamily("sharedpg_exporter_reads", "Reads of the server, by result (ok, error)",
                                  labels=["result"])  # fmt: skip
    for result, count in reads.items():
        counter.add_metric([result], count)
    yield counter
    if duration is not None:
        yield _gauge("sharedpg_exporter_read_duration_seconds", "How long the last read of the server took", duration)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _per_role(name: str, documentation: str, values: Iterable[tuple[str, int | None]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["role"])
    for role, value in values:
        if value is not None:
            family.add_metric([role], value)
    return family


class _Once(Collector):
    def __init__(self, report: pool.Report):
        self.report = report

    def collect(self) -> Iterator[Metric]:
        return families(self.report)


def exposition(report: pool.Report) -> str:
    """The text exposition format of the report (node-exporter's textfile collector reads it)."""
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(report))
    return generate_latest(registry).decode()
