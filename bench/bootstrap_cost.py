"""What a bootstrap run costs: the six seed tenants from empty and re-run, then 50/200/500 generated ones.

Starts its own server (PostgreSQL 15 from Debian when present), runs ``sharedpg bootstrap --no-vault``
(a regular install, as in the image) and prints wall and CPU time per run and per tenant, so the
growth with the number of tenants can be read off. Run from the checkout's root::

    .venv/bin/python -m bench.bootstrap_cost [--sizes 50 200 500]

Targets (issue 4): six tenants from empty <= 2 s, no-op re-run <= 0.3 s, cost linear in tenants.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

from bench import common
from bench.common import measure, tool
from sharedpg_tools import localserver, spec


def spec_file(directory: Path, count: int | None) -> Path:
    """The built-in spec (count None), or ``count`` generated tenants with no capacity section."""
    if count is None:
        raw = yaml.safe_load(spec.default_text())
    else:
        raw = {"tenants": [{"name": f"app_{i:04d}", "stack": "cicd", "pool": {"max": 1}} for i in range(count)]}
    path = directory / f"spec-{count or 'seed'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _psql_floor(server: localserver.LocalServer, env: dict[str, str], tmp: Path) -> tuple[float, float, float]:
    """The server's own cost for six tenants: the same CREATEs by psql, nothing checked (then dropped)."""
    names = [f"floor_{i}" for i in range(6)]
    create = tmp / "floor.sql"
    create.write_text(
        "".join(f"CREATE ROLE {n} LOGIN;\nCREATE DATABASE {n} OWNER {n} TEMPLATE template0;\n" for n in names)
    )
    drop = tmp / "drop.sql"
    drop.write_text("".join(f"DROP DATABASE {n};\nDROP ROLE {n};\n" for n in names))
    psql = tool("psql", server.bindir)
    cost = measure([psql, server.conninfo(), "-Xq", "-v", "ON_ERROR_STOP=1", "-f", str(create)], env)
    measure([psql, server.conninfo(), "-Xq", "-v", "ON_ERROR_STOP=1", "-f", str(drop)], env)
    return cost


def main() -> int:
    parser = common.parser_for(__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 200, 500])
    args = parser.parse_args()
    installation, sharedpg = common.subjects(args)
    password = secrets.token_urlsafe(18)
    settings = {"max_connections": "200", "shared_buffers": "128MB"}  # PostgreSQL's default, not the tests' 16MB
    with localserver.LocalServer(installation, password, settings=settings) as server, TemporaryDirectory() as tmp:
        env = common.client_env(password)
        print(f"PostgreSQL {server.major} ({installation.source}), sharedpg bootstrap --no-vault, 2-core machine")
        print(f"{'run':<34} {'tenants':>7} {'wall s':>8} {'CPU s':>7} {'wall ms/tenant':>15}")
        cpu, wall, _ = _psql_floor(server, env, Path(tmp))
        print(f"{'psql: 6 x CREATE ROLE + DATABASE':<34} {6:>7} {wall:>8.2f} {cpu:>7.2f} {wall * 1000 / 6:>15.1f}")
        for count in [None, *args.sizes]:
            path = spec_file(Path(tmp), count)
            command = [sharedpg, "bootstrap", "--spec", str(path), "--dsn", server.conninfo(), "--no-vault",
                       "--password-dir", str(Path(tmp) / "passwords"), "--log-level", "warning"]  # fmt: skip
            tenants = len(yaml.safe_load(path.read_text())["tenants"])
            label = "six seed tenants" if count is None else f"{count} generated tenants"
            for run in ("from empty", "re-run (no-op)"):
                cpu, wall, _ = measure(command, env)
                print(f"{label + ', ' + run:<34} {tenants:>7} {wall:>8.2f} {cpu:>7.2f} {wall * 1000 / tenants:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
