"""``sharedpg check-pool``: the connection budget as code — offline plan, live usage, one-tenant probe.

Exit codes differ from the other commands: they follow the Nagios convention in both modes, because
monitoring (a CronJob, a probe, node-exporter's textfile collector) reads them, and the process exits
with the status it prints (the JSON ``exit_code``). See ``EPILOG``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sharedpg_tools import logs, pool, spec
from sharedpg_tools import output as results
from sharedpg_tools.errors import ConfigError
from sharedpg_tools.settings import Context, EnvDefaults, seconds, target_from_args

NAME = "check-pool"
USES_STRUCTLOG = False  # may run as a probe: see sharedpg_tools/logs.py
OUTPUTS = ("text", "json", "prometheus")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


EPILOG = """exit codes (Nagios, live and --offline alike; the JSON exit_code is the same number):
  0    OK
  1    WARNING: a tenant or the server at --warn of its limit (with --spec: and beyond its budget);
       a limit drifted from the spec
  2    CRITICAL: at --crit of a limit (offline: the spec's budgets do not fit the server's slots)
  3    UNKNOWN: cannot tell (no connection, other roles' sessions hidden from this role, an unknown
       --role) or invalid input
  130  interrupted by SIGINT
  143  terminated by SIGTERM"""


def usage_exit_code(argv: Sequence[str]) -> int:
    """Invalid input is UNKNOWN (3), live and offline alike: monitoring reads one scheme."""
    del argv
    return int(pool.Status.UNKNOWN)


def _fraction(text: str) -> float:
    value = seconds(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1, e.g. 0.8")
    return value


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    opts = EnvDefaults(parser, environ)
    opts.add("--offline", action="store_true", default=False, help="no connection: check the spec's budget only")
    opts.add("--spec", metavar="FILE", help="the tenants spec [offline: the built-in one; live: none]")
    opts.add("--role", metavar="NAME", help="check one tenant only (a sidecar's probe, a CronJob)")
    add_threshold_arguments(opts)
    opts.add("--max-connections", type=int, metavar="N", help="offline: the server's max_connections")
    opts.add("--superuser-reserved", type=int, metavar="N", help="offline: superuser_reserved_connections [3]")
    opts.add("--reserved", type=int, metavar="N", help="offline: reserved_connections (16+) [0]")
    opts.add("--attempt-timeout", type=seconds, default=5.0, metavar="SECONDS",
             help="limit of the connection and its queries")  # fmt: skip


def add_threshold_arguments(opts: EnvDefaults) -> None:
    opts.add("--warn", type=_fraction, default=0.8, metavar="FRACTION",
             help="WARNING at this share of a limit (not for a tenant within its --spec budget)")  # fmt: skip
    opts.add("--crit", type=_fraction, default=0.95, metavar="FRACTION", help="CRITICAL at this share of a limit")


def check_thresholds(args: argparse.Namespace) -> None:
    if args.warn > args.crit:
        raise ConfigError(f"--warn {args.warn:g} is above --crit {args.crit:g}: lower --warn")


def run(args: argparse.Namespace, ctx: Context) -> int:
    output = args.output
    check_thresholds(args)
    if args.offline:
        tenants = spec.load(args.spec, check_capacity=False)
        report = pool.offline(tenants, _capacity(args, tenants))
        _emit(output, report)
        return int(report.status)
    tenants_or_none = spec.load(args.spec, check_capacity=False) if args.spec else None
    params = target_from_args(args, ctx).params()
    report = pool.read_live(params, args.attempt_timeout, tenants_or_none, args.warn, args.crit, args.role)
    log = logs.get_logger(command=NAME)
    for finding in report.findings:
        emit = log.warning if finding.status < pool.Status.CRITICAL else log.error
        emit("check-pool finding", status=finding.status.name, finding=finding.message, hint=finding.hint)
    _emit(output, report)
    return int(report.status)


def _capacity(args: argparse.Namespace, tenants: spec.Spec) -> spec.Capacity:
    base = tenants.capacity
    if args.max_connections is None and base is None:
        raise ConfigError(
            "--offline needs the server's capacity: give --max-connections (and --superuser-reserved, --reserved) "
            "or a server section in the spec"
        )
    return spec.Capacity(
        args.max_connections if args.max_connections is not None else base.max_connections,  # type: ignore[union-attr]
        args.superuser_reserved if args.superuser_reserved is not None else (base.superuser_reserved if base else 3),
        args.reserved if args.reserved is not None else (base.reserved if base else 0),
    )


def _emit(output: str, report: pool.Report) -> None:
    if output == "json":
        fields = report.as_dict()
        status, code = fields.pop("status"), fields.pop("exit_code")
        results.result(output, NAME, status, code, fields)
    elif output == "prometheus":
        from sharedpg_tools.metrics import exposition

        results.emit(exposition(report))
    else:
        results.emit(_text(report))


def _text(report: pool.Report) -> str:
    c = report.capacity
    findings = [f"{f.status.name}: {f.message}" + (f" (hint: {f.hint})" if f.hint else "") for f in report.findings]
    if c is None:  # the server was not read: say so, and nothing else
        return "".join(line + "\n" for line in [f"CHECK-POOL {report.status.name} - server not read", *findings])
    what = "connections" if report.mode == "live" else "budgeted connections"
    share = f" ({report.total / c.usable:.0%})" if c.usable > 0 else ""
    headroom = f", +{report.headroom} admin headroom" if report.headroom else ""
    lines = [f"CHECK-POOL {report.status.name} - {report.total} {what} of {c.usable} usable slots{share} "
             f"({c.describe()}){headroom}", *findings]  # fmt: skip
    lines.append(f"{'role':<24} {'conn':>5} {'active':>6} {'idle':>5} {'idle_tx':>7} {'limit':>6} {'budget':>6}")
    live = report.mode == "live"
    for usage in report.roles.values():
        idle_tx = sum(n for s, n in usage.states.items() if s.startswith("idle in transaction"))
        counts = [usage.total, usage.states.get("active", 0), usage.states.get("idle", 0), idle_tx]
        conn, active, idle, in_tx = (str(n) for n in counts) if live else ("-",) * 4
        limit = "-" if usage.limit is None else "none" if usage.limit == -1 else str(usage.limit)
        if not live:
            limit = str(usage.expected_limit)
        budget = str(usage.budget) if usage.budget is not None else "-"
        lines.append(f"{usage.role:<24} {conn:>5} {active:>6} {idle:>5} {in_tx:>7} {limit:>6} {budget:>6}")
    return "".join(line + "\n" for line in lines)
