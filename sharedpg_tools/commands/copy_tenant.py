"""``sharedpg copy-tenant NAME --from-dsn …``: move an app's data from its old PostgreSQL into its tenant.

Preflight first, nothing written: both servers reachable, source version <= target's, a pg_dump and
pg_restore new enough (which, and where, is reported), the tenant exists (run ensure-tenant or
bootstrap first) and logs in with ``--tenant-password-file``, its database is empty (unless
``--into-nonempty``), encodings match, and no other client is connected to the old database (its app
stopped; ``--allow-source-sessions`` copies anyway). Then the copy, then the verification. The source is never modified.

Who does what: the admin only reads the maintenance database's catalog (does the tenant exist). The
restore and the verification run logged in *as the tenant* (``db.tenant``): whatever the old database's
functions, triggers, defaults, checks or policies do while the data loads or is counted, they do as the
tenant, in its own database, with no admin session to return to. The old server is reached with the
``--from-*`` credentials alone (``db.source``): nothing of the shared server's (PGPASSWORD, PGPASSFILE,
PGSERVICE, a client certificate) is offered to it, and it may not ask for a cleartext password unless
``--from-dsn`` sets ``require_auth``. Interrupted: the restore runs in one
transaction, so nothing is left behind; re-run. After a restore without that guarantee (an earlier
tool, by hand), ``--into-nonempty --clean`` redoes it over what is there.

``--copy-id ID``: the copy runs once under that id: after it verified, the admin records it in
``sharedpg_lock`` (``copy_record``: no tenant can connect there, so none can forge or erase the record), and
a later run with the same id does nothing and exits 0 — the cutover Job re-run by every sync of its
Application never touches what the app wrote since. A run that failed records nothing.

``--from-sqlite FILE``: Grafana's SQLite database is imported into a tenant that Grafana of the same
version initialised (``grafana_import`` has the rules), as the tenant, in one transaction; Dex's and Policy
Reporter's files are refused with what not moving them costs (``sqlite_apps``). The file is only read.

Exit codes: 0 copied and verified · 1 a server unreachable, a tool failed, or the verification found a
mismatch (the tables are named) · 2 invalid input · 3 refused: versions, tools, tenant missing, target
not empty, encodings differ; for --from-sqlite, another app's file, another Grafana version, a
tenant Grafana has not initialised or that holds users' data, Grafana still connected, a value its column
cannot hold.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import psycopg
from psycopg.conninfo import make_conninfo

from sharedpg_tools import (
    copy,
    copy_record,
    db,
    grafana_import,
    libpq,
    logs,
    output,
    plugin_copy,
    sqlite_apps,
    sqlite_source,
)
from sharedpg_tools.classify import CLASSES
from sharedpg_tools.errors import ConfigError, PermanentError, SharedpgError
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.libpq import bound_connect
from sharedpg_tools.names import check_name
from sharedpg_tools.settings import Context, EnvDefaults, read_password_file, seconds, target_from_args

NAME = "copy-tenant"
USES_STRUCTLOG = True


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    parser.add_argument("name", metavar="NAME", help="the tenant, e.g. sonarqube")
    opts = EnvDefaults(parser, environ)
    opts.add("--from-dsn", metavar="CONNINFO", help="the old server, e.g. 'host=sonarqube-postgresql user=sonarUser "
             "dbname=sonarDB'; a password only in the environment variable")  # fmt: skip
    opts.add("--from-password-file", metavar="PATH", help="the old server's password, from a file")
    opts.add("--from-sqlite", metavar="FILE", help="an app's SQLite file: Grafana's is imported into a "
             "tenant its own first start initialised; Dex's and Policy Reporter's are refused, saying why")  # fmt: skip
    opts.add("--tenant-password-file", metavar="PATH",
             help="the tenant's password, from a file: the restore and the checks log in as the tenant")  # fmt: skip
    opts.add("--plugins", metavar="IDS", help="Backstage: the plugin ids whose databases (database mode) become "
             "schemas of the tenant's database (schema mode), e.g. catalog,auth,scaffolder,search; ID=DB names a "
             "database")  # fmt: skip
    opts.add("--plugin-database-prefix", default=plugin_copy.DEFAULT_PREFIX, metavar="PREFIX",
             help="with --plugins: Backstage's backend.database.prefix [%(default)s]")  # fmt: skip
    opts.add("--schema-prefix", default="", metavar="PREFIX",
             help="with --plugins: Backstage's schemaPrefix for schema mode [none]")  # fmt: skip
    opts.add("--role", help="the tenant's role [NAME]")
    opts.add("--database", help="the tenant's database [NAME]")
    opts.add("--into-nonempty", action="store_true", default=False, help="allow a target database with tables")
    opts.add("--clean", action="store_true", default=False, help="with --into-nonempty: drop what the dump recreates")
    opts.add("--dry-run", action="store_true", default=False, help="preflight and list what would be copied")
    opts.add("--allow-source-sessions", action="store_true", default=False,
             help="copy even while other clients are connected to the old database (what they write after the "
             "copy begins is lost)")  # fmt: skip
    opts.add("--source-idle-wait", type=seconds, default=0.0, metavar="SECONDS",
             help="wait up to SECONDS for the old database's other sessions to end (its app's pods stopping) "
             "before refusing [%(default)s]")  # fmt: skip
    opts.add("--copy-id", metavar="ID", help="copy once under this id: the admin records the finished copy where "
             "tenants cannot write, and a later run with the same id does nothing and exits 0 (a re-synced cutover "
             "Job); a run that failed records nothing")  # fmt: skip
    opts.add("--maintenance-db", default="postgres", help="where the admin connects first")
    opts.add("--attempt-timeout", type=seconds, default=10.0, metavar="SECONDS",
             help="limit of each connection attempt, to either server (connect_timeout)")  # fmt: skip


def _source_params(args: argparse.Namespace, ctx: Context) -> dict[str, str]:
    if not args.from_dsn:
        raise ConfigError("--from-dsn / SHAREDPG_FROM_DSN is required: the old server's conninfo")
    try:
        params = libpq.parse_conninfo(args.from_dsn)
    except ValueError as exc:
        raise ConfigError(f"--from-dsn is not a valid conninfo string or URI ({exc}): fix it") from None
    if "password" in params:
        logs.register_secret(params["password"])
        if ctx.flag_given("--from-dsn"):
            raise ConfigError("--from-dsn contains a password: use --from-password-file or SHAREDPG_FROM_DSN")
    if not (params.get("host") or params.get("hostaddr")):
        raise ConfigError("--from-dsn names no host: give the old server's, e.g. host=sonarqube-postgresql (the "
                          "shared server's PGHOST is never used for it)")  # fmt: skip
    if args.from_password_file:
        params["password"] = read_password_file(args.from_password_file, "--from-password-file")
    params.setdefault("fallback_application_name", ctx.app_name)
    bound_connect(params, args.attempt_timeout, os.environ)
    return params


# What the tools need of a connection; only keywords every libpq since 10 knows (pg_dump 15 would reject
# e.g. sslcertmode, which psycopg's newer libpq reports).
_TOOL_KEYWORDS = ("host", "hostaddr", "port", "user", "dbname", "passfile", "sslmode", "sslrootcert", "sslcert",
                  "sslkey", "sslcrl", "connect_timeout", "target_session_attrs")  # fmt: skip


def _tool_conninfo(conn: psycopg.Connection[Any]) -> str:
    """Where a connection went (host, port, user, dbname, sslmode…), without its password.

    Read from libpq's own conninfo: psycopg's ``info.get_parameters()`` looks up the home directory, which a
    container's user may not have (UID 65532 with no passwd entry and no HOME)."""
    options = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val is not None}
    return make_conninfo(**{k: v for k, v in options.items() if k in _TOOL_KEYWORDS})


class Outcome(NamedTuple):
    status: str
    code: int
    result: dict[str, Any]
    lines: list[str]
    fingerprint: dict[str, dict[str, int | None]] | None = None  # with --copy-id: the tenant after the copy


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.copy_id is not None and not _COPY_ID.fullmatch(args.copy_id):
        raise ConfigError(f"--copy-id {args.copy_id!r}: use 1 to 63 letters, digits, '.', '_' or '-', e.g. the "
                          "cutover's attempt number")  # fmt: skip
    done = None
    if args.copy_id and not args.dry_run:
        target = target_from_args(args, ctx)
        if (done := copy_record.find(target, args.maintenance_db, args.name)) and done.copy_id == args.copy_id:
            fields = {"tenant": args.name, "copy_id": done.copy_id, "source": done.source, "tables": done.tables,
                      "rows": done.rows, "copied_at": done.copied_at}  # fmt: skip
            output.result(args.output, NAME, "already_copied", ExitCode.OK, fields,
                          [f"already copied as {done.copy_id} at {done.copied_at} from {done.source} "
                           f"({done.tables} tables, {done.rows} rows): nothing done; the tenant's data since is the "
                           "app's"])  # fmt: skip
            return ExitCode.OK
    outcome = _copy(args, ctx, done)
    if args.copy_id and outcome.status == "copied" and outcome.fingerprint is not None:
        source = args.from_sqlite or _where(libpq.parse_conninfo(args.from_dsn), args.plugins)
        copy_record.save(target_from_args(args, ctx), args.maintenance_db, args.name,
                         copy_record.Copied(args.copy_id, source, int(outcome.result["tables"]),
                                            int(outcome.result["rows"]), outcome.fingerprint, ""))  # fmt: skip
        outcome.result["copy_id"] = args.copy_id
        if done is not None:
            outcome.result["replaced_copy"] = done.copy_id
            outcome.lines.insert(0, f"replaced copy {done.copy_id} of {done.copied_at}, which nobody had changed")
    output.result(args.output, NAME, outcome.status, outcome.code, outcome.result, outcome.lines)
    return outcome.code


_COPY_ID = re.compile(r"[A-Za-z0-9._-]{1,63}")


def _where(params: dict[str, str], plugins: str | None) -> str:
    """The old server as the record names it: host, port and database (or the plugins), never a secret."""
    where = f"{params.get('host') or params.get('hostaddr')}:{params.get('port', '5432')}"
    return f"{where} plugins {plugins}" if plugins else f"{where}/{params.get('dbname') or params.get('user', '')}"


def _copy(args: argparse.Namespace, ctx: Context, replacing: copy_record.Copied | None) -> Outcome:
    """The copy; ``replacing``: a copy recorded under another --copy-id, replaced if the tenant still holds it."""
    role, database = args.role or args.name, args.database or args.name
    check_name("role", role)
    check_name("database", database)
    if args.from_sqlite:
        if args.from_dsn:
            raise ConfigError("--from-sqlite and --from-dsn both given: the old data is in one or the other")
        return _from_sqlite(args, ctx, role, database)
    if args.clean and not args.into_nonempty:
        raise ConfigError("--clean only makes sense with --into-nonempty: add it, or drop --clean")
    source_params = _source_params(args, ctx)
    target = target_from_args(args, ctx)
    tenant_password = _tenant_password(args, "the restore")
    log = logs.get_logger(command=NAME, tenant=args.name)
    if args.plugins:
        return _from_plugin_databases(args, role, database, source_params, target, tenant_password, log, replacing)
    started = time.monotonic()
    with _connect_source(source_params) as src, db.admin(target, args.maintenance_db) as admin:
        src_major, tgt_major = src.info.server_version // 10000, admin.info.server_version // 10000
        if src.info.server_version > admin.info.server_version:
            raise PermanentError(
                f"the source is PostgreSQL {src_major}, newer than the shared server's {tgt_major}: "
                "a dump cannot be restored into an older server"
            )
        _check_tenant(admin, role, database)
        tools = copy.find_tools(src_major, tgt_major)
        log.info("tools", pg_dump=tools.pg_dump, major=tools.major)
        tenant_params = target.params(user=role, password=tenant_password, dbname=database)
        with _connect_tenant(tenant_params) as tdb:
            existing = copy.user_tables(tdb)
            if existing and replacing is not None:
                copy_record.check_unchanged(tdb, replacing, database)
            elif existing and not args.into_nonempty:
                raise PermanentError(
                    f"database {database} already has {len(existing)} tables (e.g. {'.'.join(existing[0])}): "
                    "sharedpg never overwrites data silently; add --into-nonempty (and --clean to replace them)"
                )
            _check_extensions(src, admin, tdb, database)
            copy.refuse_if_source_in_use(src, str(src.info.dbname), args.allow_source_sessions, *_idle(args, log))
            src_encoding, tgt_encoding = _encoding(src), _encoding(tdb)
            if src_encoding != tgt_encoding:
                raise PermanentError(f"the source database is {src_encoding}, the tenant's {tgt_encoding}: "
                                     "recreate the tenant with --encoding to match")  # fmt: skip
            tables = copy.user_tables(src)
            counts = copy.row_counts(src, tables)
            result: dict[str, Any] = {
                "tenant": args.name,
                "source_version": src_major,
                "target_version": tgt_major,
                "tools": tools.where,
                "tables": len(tables),
                "rows": sum(counts.values()),
            }
            if args.dry_run:
                result |= {"dry_run": True, "would_copy": counts}
                lines = [f"would copy {t}: {n} rows" for t, n in counts.items()]
                return Outcome("dry_run", ExitCode.OK, result, lines)
            if existing and replacing is not None:
                copy_record.clear(tdb)
            copied = _pipeline(tools, src, tdb, source_params, tenant_password, log, args.clean)()
            problems = _verify(src, tdb, tables, counts, role,
                               lambda: _connect_tenant(tenant_params, own_search_path=True))  # fmt: skip
            after = copy_record.fingerprint(tdb) if args.copy_id else None
    duration = time.monotonic() - started
    result |= {"bytes": copied, "duration_s": round(duration, 3), "mismatches": problems}
    for problem in problems:
        log.error("verification failed", problem=problem)
    summary = f"copied {len(tables)} tables, {result['rows']} rows, {copied} bytes in {duration:.1f} s"
    lines = [f"{summary} (pg_dump/pg_restore {tools.major} from {tools.where})"]
    lines += [f"MISMATCH: {p}" for p in problems]
    code = ExitCode.NOT_READY if problems else ExitCode.OK
    return Outcome("mismatch" if problems else "copied", code, result, lines, after)


def _idle(args: argparse.Namespace, log: Any) -> tuple[float, Callable[[int], None]]:
    """--source-idle-wait as a deadline, and the log line while sessions remain."""
    return time.monotonic() + args.source_idle_wait, lambda n: log.info("waiting for the old app to stop",
                                                                       sessions=n)  # fmt: skip


def _tenant_password(args: argparse.Namespace, what: str) -> str:
    """The tenant's password from --tenant-password-file, which every copy needs: ``what`` logs in as it."""
    if not args.tenant_password_file:
        raise ConfigError(f"--tenant-password-file is required: {what} logs in as the tenant, never as the admin "
                          "(the file the tenant's Secret or bootstrap --password-dir holds)")  # fmt: skip
    return read_password_file(args.tenant_password_file, "--tenant-password-file")


def _from_plugin_databases(args: argparse.Namespace, role: str, database: str, source_params: dict[str, str],
                           target: Any, tenant_password: str, log: Any,
                           replacing: copy_record.Copied | None) -> Outcome:  # fmt: skip
    """Backstage's database per plugin on the old server into a schema per plugin in the tenant's database."""
    plugins = plugin_copy.parse(args.plugins, args.plugin_database_prefix, args.schema_prefix)
    if args.into_nonempty or args.clean:
        raise ConfigError("--plugins copies into schemas that must be empty: drop --into-nonempty / --clean")
    if source_params.get("dbname"):
        raise ConfigError("--from-dsn names a database, but with --plugins each plugin's database comes from its id: "
                          "drop dbname from --from-dsn (or name one per plugin: --plugins catalog=DB,…)")  # fmt: skip
    started = time.monotonic()
    with db.admin(target, args.maintenance_db) as admin:
        _check_tenant(admin, role, database)
        target_version = admin.info.server_version
    tenant_params = target.params(user=role, password=tenant_password, dbname=database)
    with _connect_tenant(tenant_params) as tdb, contextlib.ExitStack() as stack:
        if plugin_copy.repair(tdb):
            log.warning("repaired", detail=f"an interrupted run had left public as {plugin_copy.HELD}: put back")
        copy.refuse_if_in_use(tdb, database, "Backstage")
        held = replacing is not None and bool(copy.user_tables(tdb))  # a recorded copy to replace
        if replacing is not None and held:
            copy_record.check_unchanged(tdb, replacing, database)
        else:
            plugin_copy.check_targets(tdb, plugins, database)
        sources = {p: stack.enter_context(_connect_plugin_database(source_params, p)) for p in plugins}
        newest = max(src.info.server_version for src in sources.values())
        if newest > target_version:
            raise PermanentError(
                f"the source is PostgreSQL {newest // 10000}, newer than the shared server's "
                f"{target_version // 10000}: a dump cannot be restored into an older server"
            )
        tools = copy.find_tools(newest // 10000, target_version // 10000)
        tenant_encoding = _encoding(tdb)
        idle = _idle(args, log)  # one deadline for every plugin database
        for plugin, src in sources.items():
            plugin_copy.check_source(src, plugin)
            copy.refuse_if_source_in_use(src, plugin.database, args.allow_source_sessions, *idle)
            if (source_encoding := _encoding(src)) != tenant_encoding:
                raise PermanentError(f"plugin database {plugin.database} is {source_encoding}, the tenant's "
                                     f"{tenant_encoding}: recreate the tenant with --encoding to match")  # fmt: skip
        report: dict[str, Any] = {}
        if args.dry_run:
            for plugin, src in sources.items():
                counts = copy.row_counts(src, copy.user_tables(src))
                report[plugin.id] = {"database": plugin.database, "schema": plugin.schema, "tables": len(counts),
                                     "rows": sum(counts.values())}  # fmt: skip
            lines = [f"would copy {p['database']} into schema {p['schema']}: {p['tables']} tables, {p['rows']} rows"
                     for p in report.values()]  # fmt: skip
            return Outcome("dry_run", ExitCode.OK, {"tenant": args.name, "dry_run": True, "plugins": report}, lines)
        if held:
            copy_record.clear(tdb)
        copied, done, problems = 0, [], []
        try:
            for plugin, src in sources.items():
                src_params = {**source_params, "dbname": plugin.database}
                copied += plugin_copy.copy_into_schema(tdb, plugin, _pipeline(tools, src, tdb, src_params,
                                                                              tenant_password, log))  # fmt: skip
                done.append(plugin)
                log.info("copied", plugin=plugin.id, schema=plugin.schema)
            with _connect_tenant(tenant_params, own_search_path=True) as own:
                for plugin, src in sources.items():
                    tables, rows, found = plugin_copy.verify(src, tdb, own, plugin)
                    report[plugin.id] = {"database": plugin.database, "schema": plugin.schema, "tables": tables,
                                         "rows": rows}  # fmt: skip
                    problems += found
            after = copy_record.fingerprint(tdb) if args.copy_id else None
        except BaseException:
            plugin_copy.drop(tdb, done)
            raise
    duration = time.monotonic() - started
    for problem in problems:
        log.error("verification failed", problem=problem)
    result = {"tenant": args.name, "plugins": report, "tables": sum(p["tables"] for p in report.values()),
              "rows": sum(p["rows"] for p in report.values()), "bytes": copied, "duration_s": round(duration, 3),
              "tools": tools.where, "mismatches": problems}  # fmt: skip
    lines = [f"copied {p['database']} into schema {p['schema']}: {p['tables']} tables, {p['rows']} rows"
             for p in report.values()]  # fmt: skip
    lines += [f"copied {len(report)} plugin databases, {result['rows']} rows, {copied} bytes in {duration:.1f} s "
              f"(pg_dump/pg_restore {tools.major} from {tools.where})"]  # fmt: skip
    lines += [f"MISMATCH: {p}" for p in problems]
    code = ExitCode.NOT_READY if problems else ExitCode.OK
    return Outcome("mismatch" if problems else "copied", code, result, lines, after)


def _pipeline(tools: copy.Tools, src: psycopg.Connection[Any], tdb: psycopg.Connection[Any],
              source_params: dict[str, str], tenant_password: str, log: Any,
              clean: bool = False) -> Callable[[], int]:  # fmt: skip
    """``pg_dump`` of ``src``'s database into ``pg_restore`` logged in as the tenant (``tdb``'s login), in one
    transaction, with progress in the log; run it to copy (it returns the bytes copied)."""
    dump = [tools.pg_dump, "-Fc", "--no-owner", "--no-privileges", "-d", _tool_conninfo(src)]
    restore = [tools.pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
               "-d", _tool_conninfo(tdb), *(["--clean", "--if-exists"] if clean else [])]  # fmt: skip

    def run() -> int:
        return copy.stream(dump, restore, copy.source_env(source_params), copy.child_env(tenant_password),
                           lambda n: log.info("copying", bytes=n, mb=round(n / 1e6, 1)))  # fmt: skip

    return run


@contextlib.contextmanager
def _connect_plugin_database(params: dict[str, str], plugin: plugin_copy.Plugin) -> Iterator[psycopg.Connection[Any]]:
    """A plugin's database on the old server; one that does not exist is named as the plugin's."""
    try:
        conn = _connect_source({**params, "dbname": plugin.database})
    except SharedpgError as exc:
        if "does not exist" in str(exc):
            raise PermanentError(f"plugin {plugin.id}: database {plugin.database} does not exist on the old server",
                                 "check --plugins and --plugin-database-prefix (Backstage's backend.database.prefix): "
                                 "list the plugins whose databases exist there") from None  # fmt: skip
        raise
    with conn:
        yield conn


def _from_sqlite(args: argparse.Namespace, ctx: Context, role: str, database: str) -> Outcome:
    """An app's SQLite file: Grafana's imported into its tenant (``grafana_import``), any other refused."""
    with sqlite_source.snapshot(args.from_sqlite) as src:
        sqlite_apps.check_grafana(src, args.from_sqlite)
        target = target_from_args(args, ctx)
        tenant_password = _tenant_password(args, "the import")
        log = logs.get_logger(command=NAME, tenant=args.name)
        with db.admin(target, args.maintenance_db) as admin:
            _check_tenant(admin, role, database)
        tenant_params = target.params(user=role, password=tenant_password, dbname=database)
        with _connect_tenant(tenant_params) as tdb:
            planned = grafana_import.plan(src, tdb, database)
            result: dict[str, Any] = {"tenant": args.name, "source": "sqlite", "app": "grafana",
                                      "grafana_migrations": planned.migrations, "tables": len(planned.tables),
                                      "rows": sum(planned.counts.values())}  # fmt: skip
            if args.dry_run:
                result |= {"dry_run": True, "would_copy": planned.counts, "would_replace": planned.seeded}
                lines = [f"would copy {t}: {n} rows" for t, n in planned.counts.items()]
                lines += [f"would replace what Grafana seeded in {t}: {n} rows" for t, n in planned.seeded.items()]
                return Outcome("dry_run", ExitCode.OK, result, lines)
            report = grafana_import.load(src, tdb, planned, lambda t, n: log.info("copied", table=t, rows=n))
            after = copy_record.fingerprint(tdb) if args.copy_id else None
    result |= {"copied": report.copied, "replaced": report.replaced, "sequences": report.sequences,
               "encrypted": report.encrypted, "duration_s": report.duration_s}  # fmt: skip
    lines = [f"imported Grafana's SQLite into {database}: {len(report.copied)} tables, {result['rows']} rows, "
             f"{report.sequences} sequences set, in {report.duration_s:.1f} s (both at the same "
             f"{planned.migrations} Grafana migrations)"]  # fmt: skip
    if report.replaced:
        seeded = ", ".join(f"{t} ({n})" for t, n in report.replaced.items())
        lines.append(f"replaced what Grafana seeded in the tenant with the file's: {seeded}")
    if report.encrypted:
        where = ", ".join(f"{t} ({n})" for t, n in report.encrypted.items())
        lines.append(
            f"NOTE: values encrypted with the old Grafana's secret_key were copied as they are: {where}; "
            "start Grafana on the tenant with the same [security] secret_key, or they will not decrypt"
        )
        log.warning("encrypted values copied", where=where,
                    hint="start Grafana on the tenant with the same [security] secret_key")  # fmt: skip
    return Outcome("copied", ExitCode.OK, result, lines, after)


def _encoding(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    return str(row[0]) if row else "unknown"


# The shared server's hints for a failed login name its ExternalSecret and the bootstrap Job; for the old
# server the credentials come from --from-dsn and --from-password-file.
_SOURCE_HINTS = {
    CLASSES["auth_failed"][1]: "the old server rejected the password (28P01): check --from-password-file (or the "
    "password in SHAREDPG_FROM_DSN) and the user in --from-dsn",
    CLASSES["password_missing"][1]: "the old server asks for a password: give --from-password-file",
    CLASSES["not_authorized"][1]: "the old server has no such role, or no pg_hba.conf entry for this client "
    "(28000): check the user and sslmode in --from-dsn",
}


def _connect_source(params: dict[str, str]) -> psycopg.Connection[Any]:
    """The old server, with errors that say it is the old server and point at the --from-* inputs."""
    try:
        return db.source(params)
    except SharedpgError as exc:
        exc.args = (f"the old server (--from-dsn): {exc}",)
        exc.hint = _SOURCE_HINTS.get(exc.hint or "", exc.hint)
        if "require_auth" in str(exc):
            exc.hint = ("the old server asks for its password in cleartext, which sharedpg does not send by default: "
                        "use TLS (sslmode=verify-full) and add require_auth=password to --from-dsn")  # fmt: skip
        raise


def _connect_tenant(params: dict[str, str], own_search_path: bool = False) -> psycopg.Connection[Any]:
    """The tenant's own login into its database, with errors that point at --tenant-password-file."""
    try:
        return db.tenant(params, own_search_path)
    except SharedpgError as exc:
        exc.args = (f"the tenant's login ({params.get('user')} into {params.get('dbname')}): {exc}",)
        exc.hint = ("check --tenant-password-file: it must hold the password bootstrap or ensure-tenant gave the "
                    "tenant, and pg_hba.conf must admit the tenant into its database")  # fmt: skip
        raise


def _check_extensions(src: psycopg.Connection[Any], admin: psycopg.Connection[Any], tdb: psycopg.Connection[Any],
                      database: str) -> None:  # fmt: skip
    """Every extension of the source must be installed in the tenant's database already: the restore runs as
    the tenant, which may not create one (and none the shared server lacks)."""
    query = "SELECT extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"
    wanted = [str(name) for (name,) in src.execute(query).fetchall()]
    if not wanted:
        return
    installed = {str(name) for (name,) in tdb.execute(query).fetchall()}
    available = {str(n) for (n,) in admin.execute("SELECT name FROM pg_catalog.pg_available_extensions").fetchall()}
    absent = [e for e in wanted if e not in available]
    if absent:
        raise PermanentError(f"the source uses extensions the shared server does not have: {', '.join(absent)}",
                             "install them on the shared server's image, or drop them from the source")  # fmt: skip
    missing = [e for e in wanted if e not in installed]
    if missing:
        flags = " ".join(f"--extension {e}" for e in missing)
        raise PermanentError(f"the source uses extensions not installed in database {database}: {', '.join(missing)}",
                             f"add them to the tenant first: sharedpg ensure-tenant ... {flags} (or the spec's "
                             "extensions)")  # fmt: skip


def _check_tenant(admin: psycopg.Connection[Any], role: str, database: str) -> None:
    row = admin.execute(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %s), "
        "(SELECT count(*) FROM pg_database WHERE datname = %s)",
        [role, database],
    ).fetchone()
    if row is None or not row[0] or not row[1]:
        raise PermanentError(
            f"the tenant {role}/{database} does not exist on the shared server: "
            "run sharedpg ensure-tenant (or the bootstrap Job) first"
        )


def _verify(src: psycopg.Connection[Any], tdb: psycopg.Connection[Any], tables: list[tuple[str, str]],
            counts: dict[str, int], role: str,
            counting: Callable[[], psycopg.Connection[Any]]) -> list[str]:  # fmt: skip
    """Tables, exact row counts, sequences' last values and owners: source against target. The catalog is read
    in ``tdb`` (pinned to it); the rows are counted in a session of ``counting`` (the tenant's own settings)."""
    problems = []
    target_tables = copy.user_tables(tdb)
    missing = sorted(set(map(".".join, tables)) - set(map(".".join, target_tables)))
    problems += [f"table {t} is missing on the target" for t in missing]
    with counting() as own:
        target_counts = copy.row_counts(own, [t for t in tables if ".".join(t) not in missing])
    problems += [f"table {t}: {counts[t]} rows in the source, {n} in the target"
                 for t, n in target_counts.items() if n != counts[t]]  # fmt: skip
    src_seq, tgt_seq = copy.sequences(src), copy.sequences(tdb)
    problems += [f"sequence {s}: last value {v} in the source, {tgt_seq.get(s)} in the target"
                 for s, v in src_seq.items() if tgt_seq.get(s) != v]  # fmt: skip
    others = tdb.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%%' AND pg_get_userbyid(c.relowner) <> %s",
        [role],
    ).fetchall()
    problems += [f"{name} is owned by {owner}, not {role}" for name, owner in others]
    return problems
