"""The tenants spec: every app on the shared server, its stack (fuse), pool budget and settings.

One loader for ``bootstrap`` and ``check-pool``. The built-in default (``default-spec.yaml``)
reproduces the seed plan's platform. Validation happens before any connection and reports every
problem at once, each naming the tenant and the key.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from sharedpg_tools.errors import ConfigError
from sharedpg_tools.names import check_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sharedpg_tools.tenant import TenantSpec

STACKS = ("backstage", "cicd", "policies", "observability")
_TOP_KEYS = {"server", "admin_headroom", "connection_limit_margin", "vault", "tenants", "monitoring"}
_MONITORING_KEYS = {"role", "connection_limit", "vault_path", "password_file", "password_env"}
_SERVER_KEYS = {"max_connections", "superuser_reserved_connections", "reserved_connections"}
_VAULT_KEYS = {"mount"}
_TENANT_KEYS = {"name", "stack", "role", "database", "pool", "replicas", "pool_multiplier", "connection_limit",
                "settings", "extensions", "encoding", "vault_path", "password_file", "password_env",
                "adopt_database_from"}  # fmt: skip
_POOL_KEYS = {"max", "min"}


def default_text() -> str:
    """The built-in spec, as YAML with its comments."""
    return resources.files("sharedpg_tools").joinpath("default-spec.yaml").read_text()


class Capacity:
    """The server's connection slots."""

    def __init__(self, max_connections: int, superuser_reserved: int = 3, reserved: int = 0):
        self.max_connections = max_connections
        self.superuser_reserved = superuser_reserved
        self.reserved = reserved

    @property
    def usable(self) -> int:
        """Slots ordinary roles can use: max_connections - superuser_reserved - reserved (16+)."""
        return self.max_connections - self.superuser_reserved - self.reserved

    def describe(self) -> str:
        return (
            f"max_connections {self.max_connections} - superuser_reserved {self.superuser_reserved} "
            f"- reserved {self.reserved}"
        )


class Tenant:
    """One app's entry in the spec."""

    def __init__(self, raw: dict[str, Any], margin: int, mount: str):
        self.name: str = raw["name"]
        self.stack: str = raw["stack"]
        self.role: str = raw.get("role", self.name)
        self.database: str = raw.get("database", self.name)
        self.pool_max: int = raw["pool"]["max"]
        self.pool_min: int = raw["pool"].get("min", 0)
        self.replicas: int = raw.get("replicas", 1)
        self.pool_multiplier: int = raw.get("pool_multiplier", 1)
        self.explicit_limit: int | None = raw.get("connection_limit")
        self.margin = margin
        self.settings: dict[str, str] = {str(k): str(v) for k, v in (raw.get("settings") or {}).items()}
        self.extensions: tuple[str, ...] = tuple(raw.get("extensions") or ())
        self.encoding: str = raw.get("encoding", "UTF8")
        self.vault_mount = mount
        self.vault_path: str = raw.get("vault_path", f"{self.stack}/{self.name}/postgres")
        self.password_file: str | None = raw.get("password_file")
        self.password_env: str | None = raw.get("password_env")
        self.adopt_database_from: str | None = raw.get("adopt_database_from")

    @property
    def budget(self) -> int:
        """The most connections the app opens: pool max x replicas x pool multiplier."""
        return self.pool_max * self.replicas * self.pool_multiplier

    @property
    def connection_limit(self) -> int:
        return self.explicit_limit if self.explicit_limit is not None else self.budget + self.margin

    @property
    def vault_location(self) -> str:
        return f"{self.vault_mount}/{self.vault_path}"

    @property
    def vault_fields(self) -> dict[str, str]:
        """What the Vault secret holds beside the password (the ExternalSecrets template from them)."""
        return {"username": self.role, "database": self.database}

    def tenant_spec(self, password: str | None) -> TenantSpec:
        from sharedpg_tools.tenant import TenantSpec  # psycopg: only where tenants are ensured

        return TenantSpec(self.name, self.role, self.database, password, self.connection_limit, self.settings,
                          self.encoding, self.extensions, self.adopt_database_from)  # fmt: skip


class MonitoringLogin:
    """The login serve-metrics connects as: a member of pg_monitor, with no database of its own. Its one
    connection comes out of the spec's admin_headroom; ``connection_limit`` caps it."""

    def __init__(self, raw: dict[str, Any], mount: str):
        self.role: str = raw["role"]
        self.name = self.role  # a password directory's file is named after it, as a tenant's
        self.connection_limit: int = raw.get("connection_limit", 2)
        self.vault_mount = mount
        self.vault_path: str = raw.get("vault_path", "database/shared-postgresql/monitoring")
        self.password_file: str | None = raw.get("password_file")
        self.password_env: str | None = raw.get("password_env")

    @property
    def vault_location(self) -> str:
        return f"{self.vault_mount}/{self.vault_path}"

    @property
    def vault_fields(self) -> dict[str, str]:
        return {"username": self.role}


class Spec:
    def __init__(self, raw: dict[str, Any]):
        server = raw.get("server")
        self.capacity = None
        if server:
            reserved = (server.get("superuser_reserved_connections", 3), server.get("reserved_connections", 0))
            self.capacity = Capacity(server["max_connections"], *reserved)
        self.admin_headroom: int = raw.get("admin_headroom", 0)
        margin: int = raw.get("connection_limit_margin", 2)
        mount: str = (raw.get("vault") or {}).get("mount", "secret")
        self.tenants = [Tenant(t, margin, mount) for t in raw["tenants"]]
        self.monitoring = MonitoringLogin(raw["monitoring"], mount) if raw.get("monitoring") else None

    @property
    def total_budget(self) -> int:
        return sum(t.budget for t in self.tenants)

    @property
    def total_limit(self) -> int:
        return sum(t.connection_limit for t in self.tenants)

    def overflow(self, capacity: Capacity) -> int:
        """By how many connections the budgets plus the admin headroom exceed the usable slots (<= 0: fits)."""
        return self.total_budget + self.admin_headroom - capacity.usable

    def limit_overflow(self, capacity: Capacity) -> int:
        """By how many the CONNECTION LIMITs plus the admin headroom exceed the usable slots (<= 0: fits).

        The limits are what the server enforces: with every tenant at its limit, only what is left of the
        usable slots remains for the admin (the bootstrap Job, a CREATEROLE admin, serve-metrics)."""
        return self.total_limit + self.admin_headroom - capacity.usable

    def stacks(self) -> list[str]:
        return sorted({t.stack for t in self.tenants})


def load(path: str | None, check_capacity: bool = True) -> Spec:
    """The spec in ``path`` (YAML), or the built-in default.

    ``check_capacity=False`` accepts budgets that do not fit the server: ``check-pool`` reports that
    itself, as its finding rather than as invalid input.

    :raises ConfigError: listing every problem, each naming the tenant and the key.
    """
    source = path or "the built-in spec"
    try:
        text = default_text() if path is None else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--spec {path!r} cannot be read ({exc.strerror}): mount the ConfigMap there or fix the path"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"--spec {path!r} is not UTF-8 text: save it as UTF-8") from None
    raw = _strict_yaml(text, source)
    problems = validate(raw, check_capacity)
    if problems:
        raise ConfigError(f"{source}: {problems[0]}", problems=[f"{source}: {p}" for p in problems])
    return Spec(raw)


def _strict_yaml(text: str, source: str) -> Any:
    """YAML as a spec needs it: a key given twice is an error (not "the last wins"), and anchors and aliases
    are refused (a spec has no use for them, and nested aliases expand to gigabytes).

    :raises ConfigError: naming the line.
    """
    import yaml  # not on check-pool's live path without a spec

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.constructor.ConstructorError(None, None, "aliases are not allowed in a tenants spec",
                                                        self.peek_event().start_mark)  # type: ignore[no-untyped-call]  # fmt: skip
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
            if duplicates:
                raise yaml.constructor.ConstructorError(None, None, f"key {duplicates[0]!r} is given twice",
                                                        node.start_mark)  # fmt: skip
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader, stricter)
    except RecursionError:  # the parser recurses per level: thousands of nested [ or { exhaust the stack
        raise ConfigError(
            f"{source} nests lists or maps thousands of levels deep, which no spec does: fix it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f" ({problem})" if problem else ""
        raise ConfigError(f"{source} is not valid YAML for a spec{where}{detail}: fix it") from None


# Far above any real pool, far below what overflows PostgreSQL's integers.
_MAX_COUNT = 100_000


def _int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= _MAX_COUNT


def validate(raw: Any, check_capacity: bool = True) -> list[str]:
    """Every problem with a raw spec, one message each, naming the tenant and the key."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants"), list) or not raw["tenants"]:
        return ["needs a 'tenants' list with at least one tenant"]
    problems, _ = _unknown_keys("", raw, _TOP_KEYS)
    server = raw.get("server")
    if server is not None and not isinstance(server, dict):
        problems.append("server must be a map: {max_connections: N, superuser_reserved_connections: N, ...}")
    elif server is not None:
        unknown, meant = _unknown_keys("server.", server, _SERVER_KEYS)
        problems += unknown
        if not _int(server.get("max_connections"), 1) and ("max_connections" in server or not meant):
            problems.append("server.max_connections must be a whole number >= 1")
        problems += [f"server.{k} must be a whole number >= 0" for k in _SERVER_KEYS - {"max_connections"}
                     if k in server and not _int(server[k])]  # fmt: skip
    for key in ("admin_headroom", "connection_limit_margin"):
        if key in raw and not _int(raw[key]):
            problems.append(f"{key} must be a whole number >= 0")
    vault = raw.get("vault")
    if vault is not None and (not isinstance(vault, dict) or set(vault) - _VAULT_KEYS):
        problems.append(f"vault may only hold {', '.join(sorted(_VAULT_KEYS))}")
    seen: dict[str, set[str]] = {"name": set(), "role": set(), "database": set()}
    for index, tenant in enumerate(raw["tenants"]):
        problems += _tenant_problems(index, tenant, seen)
    if raw.get("monitoring") is not None:
        problems += _monitoring_problems(raw["monitoring"], seen["role"])
    if not problems and server and check_capacity:
        spec = Spec(raw)
        assert spec.capacity is not None
        overflow = spec.overflow(spec.capacity)
        if overflow > 0:
            problems.append(
                f"pool budgets total {spec.total_budget} plus admin_headroom {spec.admin_headroom} = "
                f"{spec.total_budget + spec.admin_headroom} exceed the {spec.capacity.usable} usable slots "
                f"({spec.capacity.describe()}): lower pools or raise max_connections"
            )
        elif spec.limit_overflow(spec.capacity) > 0:
            problems.append(
                f"CONNECTION LIMITs total {spec.total_limit} plus admin_headroom {spec.admin_headroom} = "
                f"{spec.total_limit + spec.admin_headroom} exceed the {spec.capacity.usable} usable slots "
                f"({spec.capacity.describe()}): tenants at their limits would lock the admin out; lower "
                "connection_limit_margin or the pools, or raise max_connections"
            )
    return problems


def _monitoring_problems(monitoring: Any, tenant_roles: set[str]) -> list[str]:
    if not isinstance(monitoring, dict) or not isinstance(monitoring.get("role"), str):
        return ["monitoring needs a 'role' (the login serve-metrics uses), e.g. monitoring: {role: sharedpg_monitor}"]
    problems = [f"monitoring: unknown key {k!r} (known: {', '.join(sorted(_MONITORING_KEYS))})"
                for k in monitoring if k not in _MONITORING_KEYS]  # fmt: skip
    try:
        check_name("monitoring role", monitoring["role"])
    except ConfigError as exc:
        problems.append(f"monitoring: {exc}")
    if monitoring["role"] in tenant_roles:
        problems.append(f"monitoring: role {monitoring['role']!r} is a tenant's: the monitoring login needs its own")
    if "connection_limit" in monitoring and not _int(monitoring["connection_limit"], 1):
        problems.append("monitoring: connection_limit must be a whole number >= 1")
    for key in ("vault_path", "password_file", "password_env"):
        if key in monitoring and not isinstance(monitoring[key], str):
            problems.append(f"monitoring: {key} must be a string, not {monitoring[key]!r}")
    return problems


def _unknown_keys(where: str, given: Any, known: set[str]) -> tuple[list[str], set[str]]:
    """One problem per key of ``given`` not in ``known``, naming the close known one and all the known ones;
    and the known keys those were probably meant as (their own "missing" problem would only repeat it)."""
    problems, meant = [], set()
    for key in given:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
        meant.update(close)
        guess = f", did you mean {where}{close[0]}?" if close else ""
        problems.append(f"unknown key {where}{key}{guess} (known: {', '.join(sorted(known))})")
    return problems, meant


def _tenant_problems(index: int, tenant: Any, seen: dict[str, set[str]]) -> list[str]:
    if not isinstance(tenant, dict) or not isinstance(tenant.get("name"), str):
        return [f"tenants[{index}] needs a 'name'"]
    name = tenant["name"]
    where = f"tenant {name!r}"
    unknown, meant = _unknown_keys("", tenant, _TENANT_KEYS)
    problems = [f"{where}: {problem}" for problem in unknown]
    for key in ("name", "role", "database"):
        value = tenant.get(key, name)  # role and database default to the name, and collide like it
        if not isinstance(value, str):
            problems.append(f"{where}: {key} must be a name, not {value!r}")
            continue
        try:
            check_name("tenant" if key == "name" else key, value)
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if value in seen[key]:
            problems.append(f"{where}: {key} {value!r} is used by another tenant: each needs its own")
        seen[key].add(value)
    if "stack" in tenant and tenant["stack"] not in STACKS:
        problems.append(f"{where}: stack must be one of {', '.join(STACKS)} (the fuses), not {tenant['stack']!r}")
    elif "stack" not in tenant and "stack" not in meant:
        problems.append(f"{where}: needs a stack, one of {', '.join(STACKS)} (the fuse that activates it)")
    pool = tenant.get("pool")
    pool_unknown, _ = _unknown_keys("pool.", pool, _POOL_KEYS) if isinstance(pool, dict) else ([], set())
    problems += [f"{where}: {problem}" for problem in pool_unknown]
    if (pool is None and "pool" in meant) or pool_unknown:
        pass  # the unknown key's line says what is wrong
    elif not isinstance(pool, dict) or not _int(pool.get("max"), 1):
        problems.append(f"{where}: pool must be {{max: N, min: N}}, whole numbers from 1 (min: 0) to {_MAX_COUNT}")
    elif not _int(pool.get("min", 0)) or pool.get("min", 0) > pool["max"]:
        problems.append(f"{where}: pool.min must be a whole number between 0 and pool.max ({pool['max']})")
    for key in ("replicas", "pool_multiplier"):
        if key in tenant and not _int(tenant[key], 1):
            problems.append(f"{where}: {key} must be a whole number >= 1")
    limit = tenant.get("connection_limit")
    if limit is not None and not problems:
        budget = tenant["pool"]["max"] * tenant.get("replicas", 1) * tenant.get("pool_multiplier", 1)
        if not _int(limit) or limit < budget:
            problems.append(
                f"{where}: connection_limit {limit!r} is below its pool budget {budget}: the app would get 53300"
            )
    settings = tenant.get("settings", {})
    if not isinstance(settings, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool) for k, v in settings.items()
    ):
        problems.append(f"{where}: settings must be a map of PARAM: VALUE (a string or a number)")
    extensions = tenant.get("extensions", [])
    if not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
        problems.append(f"{where}: extensions must be a list of names")
    for key in ("encoding", "vault_path", "password_file", "password_env", "adopt_database_from"):
        if key in tenant and not isinstance(tenant[key], str):
            problems.append(f"{where}: {key} must be a string, not {tenant[key]!r}")
    if tenant.get("password_file") and tenant.get("password_env"):
        problems.append(f"{where}: password_file and password_env both given: keep one")
    return problems
