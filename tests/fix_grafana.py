"""Grafana's database, SQLite and PostgreSQL, as Grafana's own migrations make it — for tests and benchmarks.

**What it stands in for.** No registry reachable here ships a Grafana server, so nothing can run Grafana's
migrations. This fixture gives both databases the schema Grafana's migrator would: the tables that hold
user-made state (dashboards, their versions and tags, folders, data sources, users, organisations, teams,
API keys and service accounts, preferences, stars, annotations, library panels, alert rules and their
versions) plus what Grafana seeds or keeps itself (``migration_log``, ``role``, ``kv_store``, ``data_keys``).

**Source, transcribed.** Columns, order, nullability and defaults are Grafana's schema snapshot
``pkg/services/sqlstore/migrator/snapshot/00-schema.sql`` at commit
4478d9189780d4eacf81c05c951a03b2f8f31523 of github.com/grafana/grafana (AGPL-3.0; a dump of the migrated
schema, written in MySQL's types), each column written back as the migrator's type and rendered through the
migrator's two dialects as ``sqlite_dialect.go`` and ``postgres_dialect.go`` do (``SQLType``): an
auto-increment ``BIGINT`` key is ``SERIAL`` in PostgreSQL and ``INTEGER PRIMARY KEY AUTOINCREMENT`` in
SQLite; ``BOOL`` is ``BOOL`` and ``INTEGER``; ``DATETIME`` is ``TIMESTAMP`` and ``DATETIME``; every text
type is ``VARCHAR(n)``/``TEXT`` and ``TEXT``; blobs are ``BYTEA`` and ``BLOB``. The migration ids are real
ones, from ``snapshot/99-migration_log.sql`` at commit 10bf0db22d003df73c81936edbea8e5408f0e815 (abridged:
the ids of these tables); ``OLDER_MIGRATIONS`` lacks the two newest, as a Grafana before them would.

**One deliberate device**: in SQLite, Grafana rebuilds tables to change them (SQLite cannot alter a column),
so a table's column order there need not be PostgreSQL's; the fixture writes ``SQLITE_REORDERED`` tables'
columns in reverse, so that anything copying by position is caught.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# table: "column type[?][=default]; …"   ? = NULL allowed; pk = BIGINT auto-increment primary key.
TABLES: dict[str, str] = {
    "migration_log": "id pk; migration_id varchar(255); sql text; success bool; error text; timestamp datetime",
    "org": "id pk; version int; name varchar(190); address1 varchar(255)?; address2 varchar(255)?; "
           "city varchar(255)?; state varchar(255)?; zip_code varchar(50)?; country varchar(255)?; "
           "billing_email varchar(255)?; created datetime; updated datetime",
    "user": "id pk; version int; login varchar(190); email varchar(190); name varchar(255)?; "
            "password varchar(255)?; salt varchar(50)?; rands varchar(50)?; company varchar(255)?; org_id bigint; "
            "is_admin bool; email_verified bool?; theme varchar(255)?; created datetime; updated datetime; "
            "help_flags1 bigint=0; last_seen_at datetime?; is_disabled bool=0; is_service_account bool?=0; "
            "uid varchar(190)?; is_provisioned bool=0",
    "org_user": "id pk; org_id bigint; user_id bigint; role varchar(20); created datetime; updated datetime",
    "team": "id pk; name varchar(190); org_id bigint; created datetime; updated datetime; uid varchar(40)?; "
            "external_uid varchar(256)?; is_provisioned bool?; email varchar(190)?",
    "team_member": "id pk; org_id bigint; team_id bigint; user_id bigint; created datetime; updated datetime; "
                   "external bool?; permission smallint?",
    "api_key": "id pk; org_id bigint; name varchar(190); key varchar(190); role varchar(255); created datetime; "
               "updated datetime; expires bigint?; service_account_id bigint?; last_used_at datetime?; "
               "is_revoked bool?=0",
    "dashboard": "id pk; version int; slug varchar(189); title varchar(189); data mediumtext; org_id bigint; "
                 "created datetime; updated datetime; updated_by int?; created_by int?; gnet_id bigint?; "
                 "plugin_id varchar(189)?; folder_id bigint=0; is_folder bool=0; has_acl bool=0; uid varchar(40)?; "
                 "is_public bool=0; deleted datetime?; api_version varchar(16)?; folder_uid varchar(40)?",
    "dashboard_tag": "id pk; dashboard_id bigint; term varchar(50); dashboard_uid varchar(40)?; org_id bigint?=1",
    "dashboard_version": "id pk; dashboard_id bigint; parent_version int; restored_from int; version int; "
                         "created datetime; created_by bigint; message text; data mediumtext?; "
                         "api_version varchar(16)?",
    "folder": "id pk; uid varchar(40); org_id bigint; title varchar(189); description varchar(255)?; "
              "parent_uid varchar(40)?; created datetime; updated datetime",
    "data_source": "id pk; org_id bigint; version int; type varchar(255); name varchar(190); access varchar(255); "
                   "url varchar(255); password varchar(255)?; user varchar(255)?; database varchar(255)?; "
                   "basic_auth bool; basic_auth_user varchar(255)?; basic_auth_password varchar(255)?; "
                   "is_default bool; json_data text?; created datetime; updated datetime; with_credentials bool=0; "
                   "secure_json_data mediumtext?; read_only bool?; uid varchar(40)='0'; is_prunable bool?=0; "
                   "api_version varchar(20)?",
    "star": "id pk; user_id bigint; dashboard_id bigint; dashboard_uid varchar(40)?; org_id bigint?=1; "
            "updated datetime?",
    "preferences": "id pk; org_id bigint; user_id bigint; version int; home_dashboard_id bigint; "
                   "timezone varchar(50); theme varchar(20); created datetime; updated datetime; team_id bigint?; "
                   "week_start varchar(10)?; json_data mediumtext?",
    "annotation": "id pk; org_id bigint; alert_id bigint?; user_id bigint?; dashboard_id bigint?; panel_id bigint?; "
                  "category_id bigint?; type varchar(25); title text; text text; metric varchar(255)?; "
                  "prev_state varchar(40); new_state varchar(40); data text; epoch bigint; region_id bigint?=0; "
                  "tags varchar(4096)?; created bigint?=0; updated bigint?=0; epoch_end bigint=0",
    "annotation_tag": "id pk; annotation_id bigint; tag_id bigint",
    "library_element": "id pk; org_id bigint; folder_id bigint; uid varchar(40); name varchar(150); kind bigint; "
                       "type varchar(40); description varchar(2048); model mediumtext; created datetime; "
                       "created_by bigint; updated datetime; updated_by bigint; version bigint; "
                       "folder_uid varchar(40)?",
    "alert_rule": "id pk; org_id bigint; title varchar(190); condition varchar(190); data mediumtext?; "
                  "updated datetime; interval_seconds bigint=60; version int=0; uid varchar(40)='0'; "
                  "namespace_uid varchar(40); rule_group varchar(190); no_data_state varchar(15)='NoData'; "
                  "exec_err_state varchar(15)='Alerting'; for bigint=0; annotations text?; labels text?; "
                  "dashboard_uid varchar(40)?; panel_id bigint?; rule_group_idx int=1; is_paused bool=0; "
                  "notification_settings text?; record text?; metadata text?; updated_by varchar(40)?; "
                  "guid varchar(36)=''; keep_firing_for bigint=0; missing_series_evals_to_resolve smallint?",
    "alert_rule_version": "id pk; rule_org_id bigint; rule_uid varchar(40)='0'; rule_namespace_uid varchar(40); "
                          "rule_group varchar(190); parent_version int; restored_from int; version int; "
                          "created datetime; title varchar(190); condition varchar(190); data mediumtext?; "
                          "interval_seconds bigint; no_data_state varchar(15)='NoData'; "
                          "exec_err_state varchar(15)='Alerting'; for bigint=0; annotations text?; labels text?; "
                          "rule_group_idx int=1; is_paused bool=0; notification_settings text?; record text?; "
                          "metadata text?; created_by varchar(40)?; rule_guid varchar(36)=''; "
                          "keep_firing_for bigint=0; missing_series_evals_to_resolve smallint?",
    "role": "id pk; name varchar(190); description text?; version bigint; org_id bigint; uid varchar(40); "
            "created datetime; updated datetime; display_name varchar(190)?; group_name varchar(190)?; "
            "hidden bool=0",
    "kv_store": "id pk; org_id bigint; namespace varchar(190); key varchar(190); value longtext; created datetime; "
                "updated datetime",
    "data_keys": "name varchar(100) key; active bool; scope varchar(30); provider varchar(50); encrypted_data blob; "
                 "created datetime; updated datetime; label varchar(100)?",
}  # fmt: skip
SQLITE_REORDERED = ("dashboard", "data_source", "user")

# Real migration ids of these tables, in Grafana's order (abridged); the last two are the newest.
MIGRATIONS = [
    "create migration_log table", "create user table", "add unique index user.login", "add unique index user.email",
    "create user table v2", "Add column help_flags1 to user table", "Add last_seen_at column to user",
    "Add is_disabled column to user", "Add is_service_account column to user", "Add uid column to user",
    "Add is_provisioned column to user", "create star table", "add unique index star.user_id_dashboard_id",
    "Add column dashboard_uid in star", "Add column org_id in star", "Add column updated in star",
    "create org table v1", "create index UQE_org_name - v1", "create org_user table v1",
    "create index UQE_org_user_org_id_user_id - v1", "create dashboard table", "create dashboard v2",
    "create dashboard_tag table", "create data_source table v2", "create api_key table v2",
    "create dashboard_version table v1", "create team table", "create team member table", "create folder table",
    "create annotation table v5", "create library_element table v1", "create alert_rule table",
    "create alert_rule_version table", "create preferences table v3", "create kv_store table v1",
    "create data_keys table", "create role table", "Expand user.uid length to 190",
    "Prefix SCIM uid for provisioned users",
]  # fmt: skip
OLDER_MIGRATIONS = MIGRATIONS[:-2]
EPOCH = dt.datetime(2024, 3, 1, 9, 30, 0)


def columns(table: str) -> list[tuple[str, str, bool, str | None]]:
    """(name, migrator type, nullable, default) of each column, in PostgreSQL's order."""
    found = []
    for spec in TABLES[table].split(";"):
        name, kind = spec.split()[:2]
        default = kind.split("=", 1)[1] if "=" in kind else None
        kind = kind.split("=", 1)[0]
        nullable = kind.endswith("?")
        found.append((name, kind.rstrip("?"), nullable, default))
    return found


def _sqlite_type(kind: str) -> str:
    if kind.startswith(("varchar", "char")) or kind.endswith("text"):
        return "TEXT"
    return {"datetime": "DATETIME", "blob": "BLOB", "float": "REAL"}.get(kind, "INTEGER")


def _pg_type(kind: str) -> str:
    if kind.startswith("varchar"):
        return kind.upper()
    if kind.endswith("text"):
        return "TEXT"
    return {"bigint": "BIGINT", "int": "INTEGER", "smallint": "SMALLINT", "bool": "BOOL", "datetime": "TIMESTAMP",
            "blob": "BYTEA", "float": "REAL"}[kind]  # fmt: skip


def _pg_default(kind: str, default: str) -> str:
    if kind == "bool":
        return "TRUE" if default == "1" else "FALSE"
    return default


def sqlite_ddl(table: str) -> str:
    cols = columns(table)
    if table in SQLITE_REORDERED:
        cols = cols[::-1]
    parts = []
    for name, kind, nullable, default in cols:
        if kind == "pk":
            parts.append(f"`{name}` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL")
            continue
        text = f"`{name}` {_sqlite_type(kind)}"
        text += " NULL" if nullable else " NOT NULL"
        text += f" DEFAULT {default}" if default is not None else ""
        parts.append(text)
    return f"CREATE TABLE `{table}` ({', '.join(parts)})"


def pg_ddl(table: str) -> str:
    parts = []
    for name, kind, nullable, default in columns(table):
        if kind == "pk":
            parts.append(f'"{name}" SERIAL PRIMARY KEY NOT NULL')
            continue
        text = f'"{name}" {_pg_type(kind)}' + (" NULL" if nullable else " NOT NULL")
        text += f" DEFAULT {_pg_default(kind, default)}" if default is not None else ""
        parts.append(text)
    if table == "data_keys":
        parts.append('PRIMARY KEY ("name")')
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({", ".join(parts)})'


def initialise_tenant(conn: psycopg.Connection[Any], migrations: list[str] = MIGRATIONS) -> None:
    """What Grafana's first start does to an empty PostgreSQL database: its migrations (the schema and their
    log) and its seed: the main organisation, the admin user and their membership, its built-in roles and a
    kv_store entry. Run as the tenant, as Grafana logs in."""
    with conn.transaction():
        for table in TABLES:
            conn.execute(pg_ddl(table))
        with conn.cursor() as cur:
            cur.executemany('INSERT INTO "migration_log" (migration_id, sql, success, error, timestamp) '
                            "VALUES (%s, '', true, '', now())", [(m,) for m in migrations])  # fmt: skip
            cur.execute("INSERT INTO org (version, name, created, updated) VALUES (0, 'Main Org.', now(), now())")
            cur.execute('INSERT INTO "user" (version, login, email, name, org_id, is_admin, created, updated, uid) '
                        "VALUES (0, 'admin', 'admin@localhost', '', 1, true, now(), now(), 'fresh-admin')")  # fmt: skip
            cur.execute("INSERT INTO org_user (org_id, user_id, role, created, updated) VALUES (1, 1, 'Admin', now(), "
                        "now())")  # fmt: skip
            cur.executemany(
                "INSERT INTO role (name, version, org_id, uid, created, updated) VALUES (%s, 1, 0, %s, now(), now())",
                [(f"basic:{r}", f"basic_{r}") for r in ("viewer", "editor", "admin")],
            )
            cur.execute("INSERT INTO kv_store (org_id, namespace, key, value, created, updated) VALUES "
                        "(0, 'datasource', 'secretMigrationStatus', 'compatible', now(), now())")  # fmt: skip


def make_sqlite(path: Path, migrations: list[str] = MIGRATIONS, dashboards: int = 30, versions: int = 3,
                dashboard_kb: int = 40, annotations: int = 40, seed: int = 7) -> dict[str, Any]:  # fmt: skip
    """A grafana.db as a Grafana of ``migrations`` leaves it after some use, with what real files hold:
    booleans set both ways, NULLs, unicode titles, large dashboard JSON, ids with gaps (deleted rows), times
    in the formats Grafana's SQLite drivers write. Returns facts the tests check against."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as db:
        for table in TABLES:
            db.execute(sqlite_ddl(table) if table != "data_keys" else
                       "CREATE TABLE `data_keys` (`name` TEXT PRIMARY KEY NOT NULL, `active` INTEGER NOT NULL, "
                       "`scope` TEXT NOT NULL, `provider` TEXT NOT NULL, `encrypted_data` BLOB NOT NULL, "
                       "`created` DATETIME NOT NULL, `updated` DATETIME NOT NULL, `label` TEXT NULL)")  # fmt: skip
        db.executemany("INSERT INTO migration_log (migration_id, sql, success, error, timestamp) VALUES "
                       "(?, '', 1, '', '2024-03-01 09:00:00')", [(m,) for m in migrations])  # fmt: skip
        times = _time_formats()
        db.execute("INSERT INTO org (id, version, name, created, updated) VALUES (1, 3, 'Main Org.', ?, ?)",
                   (times[0], times[1]))  # fmt: skip
        db.execute("INSERT INTO org (id, version, name, city, created, updated) VALUES (4, 0, 'Équipe Ω', 'Zürich', "
                   "?, ?)", (times[2], times[3]))  # fmt: skip
        users = [(1, "admin", 1, 1, None), (2, "maría", 0, 0, 1), (5, "sa-1-ci-bot", 0, 1, 0), (6, "李雷", 0, 0, None)]
        for uid, login, admin, service, verified in users:
            db.execute(
                "INSERT INTO user (id, version, login, email, org_id, is_admin, email_verified, created, "
                "updated, is_disabled, is_service_account, uid, help_flags1) VALUES (?, 0, ?, ?, 1, ?, ?, ?, ?, "
                "?, ?, ?, ?)",
                (
                    uid,
                    login,
                    f"{login}@example.org",
                    admin,
                    verified,
                    times[uid % 4],
                    times[(uid + 1) % 4],
                    uid == 6,
                    service,
                    f"u{uid:09d}",
                    2**40 + uid,
                ),
            )
        for oid, uid, role in ((1, 1, "Admin"), (1, 2, "Editor"), (4, 2, "Viewer"), (1, 5, "Viewer"), (1, 6, "Editor")):
            db.execute("INSERT INTO org_user (org_id, user_id, role, created, updated) VALUES (?, ?, ?, ?, ?)",
                       (oid, uid, role, times[0], times[1]))  # fmt: skip
        db.execute("INSERT INTO team (id, name, org_id, created, updated, uid, is_provisioned) VALUES "
                   "(3, 'Plattform 🚀', 1, ?, ?, 'team-a', 0)", (times[0], times[2]))  # fmt: skip
        db.execute(
            "INSERT INTO team_member (org_id, team_id, user_id, created, updated, external, permission) VALUES "
            "(1, 3, 2, ?, ?, 1, 4), (1, 3, 6, ?, ?, 0, NULL)",
            (times[0], times[1], times[2], times[3]),
        )
        db.execute(
            "INSERT INTO api_key (id, org_id, name, key, role, created, updated, expires, service_account_id, "
            "is_revoked) VALUES (9, 1, 'ci', 'glsa_hash', 'Editor', ?, ?, NULL, 5, 0)",
            (times[1], times[2]),
        )
        db.execute("INSERT INTO folder (id, uid, org_id, title, created, updated) VALUES (2, 'f-ops', 1, 'Opérations', "
                   "?, ?)", (times[0], times[1]))  # fmt: skip
        dash_ids = sorted(rng.sample(range(1, dashboards * 3), dashboards))  # gaps: deleted dashboards
        for n, did in enumerate(dash_ids):
            body = _dashboard_json(rng, did, dashboard_kb)
            db.execute("INSERT INTO dashboard (id, version, slug, title, data, org_id, created, updated, folder_id, "
                       "is_folder, has_acl, uid, is_public, deleted, folder_uid, gnet_id) VALUES (?, ?, ?, ?, ?, 1, ?, "
                       "?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (did, versions, f"dash-{did}", f"Tableau de bord {did} – ünïcode ✓", body, times[n % 4],
                        times[(n + 1) % 4], 2 if n % 2 else 0, 0, n % 3 == 0, f"d{did}", n % 5 == 0,
                        times[2] if n % 7 == 6 else None, "f-ops" if n % 2 else None,
                        None if n % 2 else 1860))  # fmt: skip
            db.execute("INSERT INTO dashboard_tag (dashboard_id, term, dashboard_uid, org_id) VALUES (?, ?, ?, 1)",
                       (did, f"tag-{n % 4}", f"d{did}"))  # fmt: skip
            for v in range(1, versions + 1):
                db.execute("INSERT INTO dashboard_version (dashboard_id, parent_version, restored_from, version, "
                           "created, created_by, message, data) VALUES (?, ?, 0, ?, ?, 2, ?, ?)",
                           (did, v - 1, v, times[v % 4], "" if v % 2 else "müde", body))  # fmt: skip
        db.execute("INSERT INTO data_source (id, org_id, version, type, name, access, url, basic_auth, is_default, "
                   "json_data, created, updated, with_credentials, secure_json_data, read_only, uid, is_prunable) "
                   "VALUES (3, 1, 1, 'prometheus', 'Prometheus', 'proxy', 'http://prometheus:9090', 0, 1, "
                   "'{\"httpMethod\":\"POST\"}', ?, ?, 0, NULL, 1, 'prom', 0), (7, 1, 2, 'postgres', 'Inventaire', "
                   "'proxy', 'db:5432', 1, 0, '{}', ?, ?, 1, '{\"password\":\"I1rW…enc\"}', 0, 'pg', NULL)",
                   (times[0], times[1], times[2], times[3]))  # fmt: skip
        db.execute("INSERT INTO star (user_id, dashboard_id, dashboard_uid, org_id, updated) VALUES (2, ?, ?, 1, NULL)",
                   (dash_ids[0], f"d{dash_ids[0]}"))  # fmt: skip
        db.execute("INSERT INTO preferences (org_id, user_id, version, home_dashboard_id, timezone, theme, created, "
                   "updated, week_start, json_data) VALUES (1, 2, 0, ?, 'Europe/Madrid', 'dark', ?, ?, 'monday', "
                   "'{\"language\":\"es-ES\"}')", (dash_ids[0], times[0], times[1]))  # fmt: skip
        db.executemany(
            "INSERT INTO annotation (org_id, dashboard_id, panel_id, type, title, text, prev_state, new_state, data, "
            "epoch, epoch_end, tags, created, updated) VALUES (1, ?, 2, 'annotation', '', ?, '', '', '{}', ?, ?, NULL, "
            "?, ?)",
            ((dash_ids[a % len(dash_ids)], f"déploiement {a}", 1709285400000 + a, 1709285400000 + a,
              1709285400000 + a, 1709285400000 + a) for a in range(annotations)),
        )  # fmt: skip
        db.execute(
            "INSERT INTO library_element (org_id, folder_id, uid, name, kind, type, description, model, "
            "created, created_by, updated, updated_by, version, folder_uid) VALUES (1, 2, 'lib-1', 'CPU', 1, "
            "'timeseries', '', '{\"type\":\"timeseries\"}', ?, 2, ?, 2, 1, 'f-ops')",
            (times[0], times[1]),
        )
        db.execute("INSERT INTO alert_rule (id, org_id, title, condition, data, updated, uid, namespace_uid, "
                   "rule_group, is_paused, labels) VALUES (11, 1, 'Disque plein', 'C', '[]', ?, 'rule-1', 'f-ops', "
                   "'infra', 1, '{\"sev\":\"page\"}')", (times[3],))  # fmt: skip
        db.execute("INSERT INTO alert_rule_version (rule_org_id, rule_uid, rule_namespace_uid, rule_group, "
                   "parent_version, restored_from, version, created, title, condition, data, interval_seconds, "
                   "is_paused) VALUES (1, 'rule-1', 'f-ops', 'infra', 0, 0, 1, ?, 'Disque plein', 'C', '[]', 60, 0)",
                   (times[3],))  # fmt: skip
        for r in ("viewer", "editor", "admin", "grafana_admin"):
            db.execute("INSERT INTO role (name, version, org_id, uid, created, updated) VALUES (?, 2, 0, ?, ?, ?)",
                       (f"basic:{r}", f"basic_{r}", times[0], times[0]))  # fmt: skip
        db.execute("INSERT INTO kv_store (org_id, namespace, key, value, created, updated) VALUES (0, 'datasource', "
                   "'secretMigrationStatus', 'compatible', ?, ?)", (times[0], times[0]))  # fmt: skip
        db.execute("INSERT INTO data_keys (name, active, scope, provider, encrypted_data, created, updated, label) "
                   "VALUES ('k1', 1, 'root', 'secretKey.v1', ?, ?, ?, '2024-03-01/root@secretKey.v1')",
                   (bytes(range(256)) * 2, times[0], times[0]))  # fmt: skip
    return {"dashboards": dash_ids, "users": [u[0] for u in users]}


def _time_formats() -> list[Any]:
    """The ways a time reaches Grafana's SQLite: xorm's text, with a fraction and offset (mattn/go-sqlite3's
    default), RFC 3339 with ``Z``, and epoch seconds — each the same moment in UTC, one apart."""
    moments = [EPOCH + dt.timedelta(days=d) for d in range(4)]
    return [
        moments[0].strftime("%Y-%m-%d %H:%M:%S"),
        (moments[1] + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.123456") + "+02:00",
        moments[2].strftime("%Y-%m-%dT%H:%M:%SZ"),
        int(moments[3].replace(tzinfo=dt.UTC).timestamp()),
    ]


EXPECTED_TIMES = [EPOCH, EPOCH + dt.timedelta(days=1, microseconds=123456), EPOCH + dt.timedelta(days=2),
                  EPOCH + dt.timedelta(days=3)]  # fmt: skip


def _dashboard_json(rng: random.Random, did: int, kb: int) -> str:
    panels: list[dict[str, Any]] = []
    while len(json.dumps(panels)) < kb * 1024:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "timeseries",
                "title": f"Panneau {len(panels)} – ✓",
                "targets": [{"expr": f'rate(http_requests_total{{job="{rng.randrange(10**6)}"}}[5m])'}],
            }
        )
    return json.dumps({"uid": f"d{did}", "title": f"Tableau de bord {did}", "panels": panels}, ensure_ascii=False)


def rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """A table's rows in the tenant, ordered by its first column."""
    query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier("public", table))
    return [tuple(r) for r in conn.execute(query).fetchall()]
