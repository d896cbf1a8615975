"""``sharedpg admin-secret``: the shared server's admin password in Vault, created once, never overwritten.

The database's first start needs its admin password before ``initdb`` (the official image reads
``POSTGRES_PASSWORD`` only then), and the platform keeps it in Vault like every tenant's. This creates
``<mount>/<path>`` with a generated password and the admin's user name, create-only: a secret already
there is kept (and checked for its shape), so a re-run, or two runs at once, leave one password. The
GitOps wiring runs it before the database (k8s-snippets/README.md).

Exit codes: 0 the secret is there (created now, or kept) · 1 Vault not ready before ``--timeout`` · 2
invalid input · 3 refused: the existing secret has another shape, the mount is not KV v2, permission
denied, or TLS verification failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from sharedpg_tools import logs, output, passwords
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Context, EnvDefaults

NAME = "admin-secret"
USES_STRUCTLOG = True
DEFAULT_PATH = "database/shared-postgresql/admin"  # what k8s-snippets/database/externalsecret-admin.yaml reads


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    opts = EnvDefaults(parser, environ)
    opts.add("--vault-path", default=DEFAULT_PATH, metavar="PATH",
             help="the secret's path under the KV v2 mount (SHAREDPG_VAULT_MOUNT, default secret)")  # fmt: skip
    opts.add("--username", default="postgres", help="the admin's user name, stored beside the password")
    opts.add("--timeout", type=float, default=300.0, metavar="SECONDS", help="how long to wait for a sealed Vault")


def run(args: argparse.Namespace, ctx: Context) -> int:
    from sharedpg_tools.vault import Vault, VaultSettings

    settings = VaultSettings.from_environ(ctx.environ, "secret", args.timeout,
                                          ": admin-secret only writes to Vault (there is no file mode)")  # fmt: skip
    vault = Vault(settings)
    _, how = vault.ensure_password(args.vault_path, {"username": args.username}, passwords.generate)
    created = how == "generated"
    location = f"{settings.mount}/{args.vault_path}"
    logs.get_logger(command=NAME).info("admin secret", path=location, created=created)
    line = f"{location}: {'created' if created else 'already there, kept'} (username {args.username})"
    output.result(args.output, NAME, "created" if created else "kept", ExitCode.OK,
                  {"path": location, "username": args.username, "created": created}, [line])  # fmt: skip
    return ExitCode.OK
