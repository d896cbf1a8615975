"""Tenant credentials in HashiCorp Vault's KV v2 engine, through hvac.

Vault is the source of truth: a password found there is used; a missing one is generated and written
create-only (``cas=0``), so two bootstrap Jobs racing cannot end with different passwords — the
loser re-reads and uses the winner's. An existing secret is never updated (the policy grants only
``create`` and ``read``): one of another shape is refused, naming the path. Sealed or unreachable Vaults
are retried with backoff until the deadline. hvac (and requests under it) is imported only here, only when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sharedpg_tools import logs
from sharedpg_tools.errors import ConfigError, PermanentError, SharedpgError, Unusable

DEFAULT_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
T = TypeVar("T")


class VaultSettings:
    """Where Vault is and how to log in: a token (``VAULT_TOKEN`` or a file) or Kubernetes auth."""

    def __init__(
        self,
        addr: str,
        mount: str,
        token: str | None = None,
        k8s_role: str | None = None,
        k8s_mount: str = "kubernetes",
        jwt_path: str = DEFAULT_JWT_PATH,
        cacert: str | None = None,
        namespace: str | None = None,
        timeout: float = 300.0,
    ):
        self.addr = addr
        self.mount = mount
        self.token = token
        self.k8s_role = k8s_role
        self.k8s_mount = k8s_mount
        self.jwt_path = jwt_path
        self.cacert = cacert
        self.namespace = namespace
        self.timeout = timeout

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], mount: str, timeout: float,
                     without_vault: str | None = None) -> VaultSettings:  # fmt: skip
        """``VAULT_ADDR``, ``VAULT_TOKEN`` / ``SHAREDPG_VAULT_TOKEN_FILE``, ``SHAREDPG_VAULT_K8S_ROLE``, ...
        ``without_vault``: how the command can run without Vault, for the message, if it can.

        :raises ConfigError: when VAULT_ADDR is unset or no way to log in is given.
        """
        addr = environ.get("VAULT_ADDR")
        if not addr:
            raise ConfigError(f"VAULT_ADDR is not set: point it at Vault (https://…){without_vault or ''}")
        token = environ.get("VAULT_TOKEN")
        token_file = environ.get("SHAREDPG_VAULT_TOKEN_FILE")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise ConfigError(f"SHAREDPG_VAULT_TOKEN_FILE {token_file!r} cannot be read ({exc.strerror})") from None
        role = environ.get("SHAREDPG_VAULT_K8S_ROLE")
        if token and len(token) < 8:
            source = "SHAREDPG_VAULT_TOKEN_FILE" if token_file else "VAULT_TOKEN"
            raise ConfigError(f"{source} holds {len(token)} characters, too few to be a Vault token: check it")
        if not token and not role:
            raise ConfigError(
                "no way to log in to Vault: set VAULT_TOKEN or SHAREDPG_VAULT_TOKEN_FILE, "
                "or SHAREDPG_VAULT_K8S_ROLE for the Kubernetes auth method"
            )
        logs.register_secret(token)
        return cls(
            addr=addr,
            mount=environ.get("SHAREDPG_VAULT_MOUNT", mount),
            token=token,
            k8s_role=role,
            k8s_mount=environ.get("SHAREDPG_VAULT_K8S_MOUNT", "kubernetes"),
            jwt_path=environ.get("SHAREDPG_VAULT_K8S_JWT_FILE", DEFAULT_JWT_PATH),
            cacert=environ.get("VAULT_CACERT"),
            namespace=environ.get("VAULT_NAMESPACE"),
            timeout=timeout,
        )


def _hint(exc: BaseException) -> str:
    import hvac.exceptions

    if isinstance(exc, hvac.exceptions.VaultDown):
        return "Vault is sealed or down: unseal it (vault operator unseal) or wait for it"
    if isinstance(exc, (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized)):
        return ("permission denied: the token expired or was revoked, or its policy lacks create and read on this "
                "path (k8s-snippets/vault/sharedpg-bootstrap.hcl)")  # fmt: skip
    if isinstance(exc, hvac.exceptions.VaultError):
        return "Vault answered with an error: see the message"
    return "Vault is unreachable: check VAULT_ADDR and NetworkPolicies"


def _no_route(exc: BaseException) -> bool:
    """Vault's 404 for a path no engine serves (a mount that does not exist), not KV's "no such secret"."""
    return "no handler for route" in str(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return logs.redact(text.splitlines()[0] if text else type(exc).__name__)


class Vault:
    """The KV v2 operations bootstrap needs: read, and create-only writes. Sealed, unreachable or
    overloaded Vaults are retried until the deadline; TLS verification failures and denied permissions
    are not (retrying cannot fix them), except that a Kubernetes-auth token is renewed once by logging in
    again. Nothing is ever updated or deleted: the policy needs only ``create`` and ``read``."""

    def __init__(self, settings: VaultSettings, deadline: float | None = None):
        import hvac

        self.settings = settings
        self.deadline = deadline if deadline is not None else time.monotonic() + settings.timeout
        self.log = logs.get_logger(component="vault")
        self.client = hvac.Client(
            url=settings.addr, token=settings.token, verify=settings.cacert or True, namespace=settings.namespace
        )
        if settings.k8s_role:
            self._retry("log in", self._kubernetes_login)
        self._retry(f"read the settings of the mount {settings.mount}/", self._check_kv2)

    def _kubernetes_login(self) -> None:
        try:
            with open(self.settings.jwt_path, encoding="utf-8") as handle:
                jwt = handle.read().strip()
        except OSError as exc:
            raise ConfigError(
                f"the service account token {self.settings.jwt_path!r} cannot be read ({exc.strerror}): "
                "mount it (automountServiceAccountToken) or set SHAREDPG_VAULT_K8S_JWT_FILE"
            ) from None
        logs.register_secret(jwt)
        result = self.client.auth.kubernetes.login(self.settings.k8s_role, jwt, mount_point=self.settings.k8s_mount)
        logs.register_secret(result["auth"]["client_token"])

    def _check_kv2(self) -> None:
        """Refuse a mount that is not KV version 2: a v1 mount would store ``data/<path>`` as plain keys that
        the External Secrets store (``version: v2``) never finds."""
        import hvac.exceptions

        mount = self.settings.mount
        try:
            answer = self.client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
        except hvac.exceptions.Forbidden:
            return  # this token sees nothing under the mount; its first read says so, naming the path
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            raise self._no_mount() from None
        data = (answer.get("data") or {}) if isinstance(answer, dict) else {}
        version = (data.get("options") or {}).get("version")
        if data.get("type") != "kv" or version != "2":
            kind = f"KV version {version or 1}" if data.get("type") == "kv" else f"a {data.get('type')!r} engine"
            raise PermanentError(
                f"Vault mount {mount}/ is {kind}, not KV version 2",
                f"enable KV v2 there (bao secrets enable -path={mount} -version=2 kv) or set SHAREDPG_VAULT_MOUNT "
                "to a KV v2 mount",
            )

    def _no_mount(self) -> Unusable:
        mount = self.settings.mount
        return Unusable(
            f"Vault has no secrets engine at {mount}/ ({self.settings.addr})",
            f"enable KV v2 there (bao secrets enable -path={mount} -version=2 kv) or set SHAREDPG_VAULT_MOUNT to "
            "the mount that holds the secrets",
        )

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying Vault and network failures with backoff until the deadline."""
        import hvac.exceptions
        import requests

        delay, attempt, logged_in_again = 0.2, 0, False
        while True:
            attempt += 1
            try:
                return operation()
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
                raise  # answers, not failures: the caller decides
            except requests.exceptions.SSLError as exc:
                raise PermanentError(
                    f"Vault: TLS verification of {self.settings.addr} failed: {_first_line(exc)}",
                    "set VAULT_CACERT to the PEM file of the CA that signed Vault's certificate",
                ) from None
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
                if self.settings.k8s_role and what != "log in" and not logged_in_again:
                    logged_in_again = True  # the Kubernetes-auth token may have expired: one new login
                    self._retry("log in", self._kubernetes_login)
                    continue
                raise PermanentError(f"Vault: could not {what}: permission denied", _hint(exc)) from None
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise SharedpgError(f"Vault: could not {what}: {_first_line(exc)}", _hint(exc)) from None
                self.log.warning("vault not ready", attempt=attempt, action=what, error=_first_line(exc),
                                 hint=_hint(exc))  # fmt: skip
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)

    def read(self, path: str) -> dict[str, Any] | None:
        """The latest version's data at ``path``, or None when there is none."""
        import hvac.exceptions

        def operation() -> dict[str, Any] | None:
            try:
                response = self.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.settings.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath as exc:
                if _no_route(exc):
                    raise self._no_mount() from None
                return None  # KV's own 404: no secret there yet
            return dict(response["data"]["data"] or {})

        data = self._retry(f"read {self.settings.mount}/{path}", operation)
        if data and data.get("password"):
            logs.register_secret(str(data["password"]))
        return data

    def create(self, path: str, data: dict[str, str]) -> bool:
        """Write ``data`` only if nothing is at ``path`` yet (check-and-set 0).

        :returns: False when another writer got there first: Vault's check-and-set refused it, or (a policy
            with ``create`` but no ``update``) denied it because the secret now exists.
        """
        import hvac.exceptions

        def operation() -> bool:
            try:
                self.client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=data, cas=0, mount_point=self.settings.mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" in str(exc):
                    return False
                raise SharedpgError(f"Vault refused the write to {self.settings.mount}/{path}: {exc}") from None
            except hvac.exceptions.Forbidden:
                if self.read(path) is not None:
                    return False
                raise
            except hvac.exceptions.InvalidPath as exc:
                if _no_route(exc):
                    raise self._no_mount() from None
                raise SharedpgError(f"Vault refused the write to {self.settings.mount}/{path}: {exc}") from None
            return True

        return self._retry(f"write {self.settings.mount}/{path}", operation)

    def ensure_password(self, path: str, fields: dict[str, str], generate: Callable[[], str],
                        dry_run: bool = False, endpoint: frozenset[str] = frozenset()) -> tuple[str, str]:  # fmt: skip
        """The password kept at ``path`` with ``fields`` beside it: read it if the secret exists, else
        generate it and create the secret. Never updates: a secret of another shape is refused; one that
        differs only in the ``endpoint`` fields (where the server is: it moved) with the command that carries
        its password to the new endpoint.

        :returns: the password and how it was obtained (for the report; never the password itself).
        :raises PermanentError: when the existing secret lacks the password, has other keys, or other values.
        """
        location = f"{self.settings.mount}/{path}"
        data = self.read(path)
        if data is not None:
            return _checked(data, fields, location, endpoint), "read"
        password = generate()
        if dry_run:
            return password, "would be generated"
        if self.create(path, {"password": password, **fields}):
            return password, "generated"
        data = self.read(path)  # another run created it first: use its password
        if data is None:
            raise SharedpgError(f"vault {location}: a concurrent write left no secret", "re-run")
        return _checked(data, fields, location, endpoint), "read (written by a concurrent run)"


def _checked(data: dict[str, Any], fields: dict[str, str], location: str, endpoint: frozenset[str]) -> str:
    """The password of an existing secret, after checking it has exactly the keys and values expected."""
    problems = []
    if not data.get("password"):
        problems.append("no 'password' key" if "password" not in data else "an empty 'password'")
    extra = sorted(set(data) - {"password", *fields})
    if extra:
        problems.append(f"keys sharedpg does not write: {', '.join(extra)}")
    missing = sorted(k for k in fields if k not in data)
    if missing:
        problems.append(f"no {', '.join(missing)}")
    differ = sorted(k for k, v in fields.items() if k in data and str(data[k]) != v)
    mount, path = location.split("/", 1)
    if not problems and differ and set(differ) <= endpoint:
        moved = ", ".join(f"{k} {data[k]!r} to {fields[k]!r}" for k in differ)
        carried = " ".join(f"{k}={fields[k]}" for k in differ)
        raise PermanentError(
            f"vault {location}: the server moved ({moved}), and the secret still names the old one",
            f"carry the password to the new endpoint, keeping it: bao kv patch -mount={mount} {path} {carried} "
            "(sharedpg may only create and read secrets), then re-run; its ExternalSecret then brings the app the "
            "new endpoint",
        )
    problems += [f"{k}={data[k]!r} where sharedpg expects {fields[k]!r}" for k in differ]
    if problems:
        expected = " ".join(f"{k}=…" if k == "password" else f"{k}={v}" for k, v in {"password": "", **fields}.items())
        raise PermanentError(
            f"vault {location}: the secret has {'; '.join(problems)}",
            f"sharedpg never overwrites a secret: write it whole (bao kv put -mount={mount} {path} {expected}) or "
            "delete it to have one generated",
        )
    return str(data["password"])
