"""The six apps' database work, shaped like each app's, for the soak (bench/soak.py): a schema per tenant and
one transaction at a time, run as the tenant in its own database.

Shapes (from what each app does with its database): Backstage short catalog reads and writes; SonarQube
bulk inserts and long analysis transactions (each analysis replaces its project's older issues, as
SonarQube's housekeeping bounds its database by projects, not by time); Argo Workflows archive inserts
with TTL deletes; Policy Reporter upserts; Grafana dashboard reads; Dex token writes and expiry.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import psycopg

Work = Callable[[psycopg.Connection[Any], random.Random], None]

SCHEMAS = {
    "backstage": """
        CREATE TABLE IF NOT EXISTS entities (id int PRIMARY KEY, kind text, spec jsonb, updated timestamptz);
        INSERT INTO entities SELECT g, 'Component', jsonb_build_object('owner', 'team-' || g % 20), now()
          FROM generate_series(1, 5000) g ON CONFLICT DO NOTHING;""",
    "dex": """
        CREATE TABLE IF NOT EXISTS tokens (id bigserial PRIMARY KEY, subject text, token text,
                                           expiry timestamptz NOT NULL);
        CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expiry);""",
    "sonarqube": """
        CREATE TABLE IF NOT EXISTS issues (id bigserial PRIMARY KEY, project int, rule text, line int,
                                           message text, created timestamptz DEFAULT now());
        CREATE INDEX IF NOT EXISTS issues_project ON issues (project);
        CREATE TABLE IF NOT EXISTS analyses (id bigserial PRIMARY KEY, project int, issues int,
                                             finished timestamptz);""",
    "argo_workflows": """
        CREATE TABLE IF NOT EXISTS archived_workflows (id bigserial PRIMARY KEY, name text, workflow jsonb,
                                                       finished timestamptz NOT NULL DEFAULT now());
        CREATE INDEX IF NOT EXISTS archived_finished ON archived_workflows (finished);""",
    "policyreporter": """
        CREATE TABLE IF NOT EXISTS results (policy text, resource text, result text, seen timestamptz,
                                            PRIMARY KEY (policy, resource));""",
    "grafana": """
        CREATE TABLE IF NOT EXISTS dashboard (id int PRIMARY KEY, title text, data jsonb);
        INSERT INTO dashboard SELECT g, 'dashboard ' || g,
          jsonb_build_object('panels', (SELECT jsonb_agg(jsonb_build_object('id', p, 'expr', md5(p::text)))
                                        FROM generate_series(1, 30) p))
          FROM generate_series(1, 200) g ON CONFLICT DO NOTHING;""",
}


def backstage(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    with conn.transaction():
        for _ in range(3):
            conn.execute("SELECT kind, spec FROM entities WHERE id = %s", [rnd.randint(1, 5000)]).fetchone()
        if rnd.random() < 0.3:
            conn.execute("UPDATE entities SET updated = now(), spec = spec || %s WHERE id = %s",
                         [json.dumps({"rev": rnd.randint(1, 10**6)}), rnd.randint(1, 5000)])  # fmt: skip


def sonarqube(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    project = rnd.randint(1, 50)
    with conn.transaction():
        if rnd.random() < 0.2:  # an analysis: its project's issues replaced in one longer transaction
            conn.execute("SELECT count(*) FROM issues WHERE project = %s", [project]).fetchone()
            conn.execute("DELETE FROM issues WHERE project = %s AND created < now() - interval '60 seconds'",
                         [project])  # fmt: skip
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO issues (project, rule, line, message) VALUES (%s, %s, %s, %s)",
                                [(project, f"S{rnd.randint(100, 999)}", rnd.randint(1, 5000), "x" * 80)
                                 for _ in range(200)])  # fmt: skip
            conn.execute("SELECT pg_sleep(0.3)")  # the analysis' own work, inside its transaction
            conn.execute("INSERT INTO analyses (project, issues, finished) VALUES (%s, 200, now())", [project])
        else:
            conn.execute("SELECT rule, count(*) FROM issues WHERE project = %s GROUP BY rule", [project]).fetchall()


def argo_workflows(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    with conn.transaction():
        node = {"phase": "Succeeded", "nodes": {f"n{i}": {"phase": "Succeeded"} for i in range(20)}}
        conn.execute("INSERT INTO archived_workflows (name, workflow) VALUES (%s, %s)",
                     [f"wf-{rnd.randint(1, 10**9)}", json.dumps(node)])  # fmt: skip
        if rnd.random() < 0.1:  # the archive's TTL
            conn.execute("DELETE FROM archived_workflows WHERE finished < now() - interval '30 seconds'")


def policyreporter(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO results (policy, resource, result, seen) VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (policy, resource) DO UPDATE SET result = excluded.result, seen = excluded.seen",
            [(f"policy-{rnd.randint(1, 40)}", f"pod-{rnd.randint(1, 500)}", rnd.choice(["pass", "fail"]))
             for _ in range(20)],
        )  # fmt: skip


def grafana(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    with conn.transaction():
        conn.execute("SELECT title, data FROM dashboard WHERE id = %s", [rnd.randint(1, 200)]).fetchone()
        conn.execute("SELECT id, title FROM dashboard ORDER BY title LIMIT 50").fetchall()


def dex(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO tokens (subject, token, expiry) VALUES (%s, %s, now() + interval '20 seconds')",
                     [f"user-{rnd.randint(1, 300)}", f"{rnd.getrandbits(128):032x}"])  # fmt: skip
        if rnd.random() < 0.2:  # garbage collection of expired tokens
            conn.execute("DELETE FROM tokens WHERE expiry < now()")


WORK: dict[str, Work] = {"backstage": backstage, "dex": dex, "sonarqube": sonarqube, "argo_workflows": argo_workflows,
                         "policyreporter": policyreporter, "grafana": grafana}  # fmt: skip
# seconds between one worker's transactions (an app's pooled connection is idle most of the time)
THINK = {"backstage": 0.2, "dex": 0.5, "sonarqube": 0.5, "argo_workflows": 0.5, "policyreporter": 0.5, "grafana": 0.2}
# the table a long transaction locks in the lock event
LOCKED_TABLE = {"sonarqube": "issues"}
