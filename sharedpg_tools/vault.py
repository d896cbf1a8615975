"""Tenant credentials in HashiCorp Vault's KV v2 engine, through hvac.

Vault is the source of truth: a password found there is used; a missing one is generated and written
create-only (``cas=0``), so two bootstrap Jobs racing cannot end with different passwords — the
loser re-reads and uses the winner's. Sealed, forbidden or unreachable Vaults are retried with
backoff until the deadline. hvac (and requests under it) is imported only here, only when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sharedpg_tools import logs
from sharedpg_tools.errors import ConfigError, SharedpgError

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
    def from_environ(cls, environ: Mapping[str, str], mount: str, timeout: float) -> VaultSettings:
        """``VAULT_ADDR``, ``VAULT_TOKEN`` / ``SHAREDPG_VAULT_TOKEN_FILE``, ``SHAREDPG_VAULT_K8S_ROLE``, ...

        :raises ConfigError: when VAULT_ADDR is unset or no way to log in is given.
        """
        addr = environ.get("VAULT_ADDR")
        if not addr:
            raise ConfigError("VAULT_ADDR is not set: point it at Vault, or pass --no-vault to use password files")
        token = environ.get("VAULT_TOKEN")
        token_file = environ.get("SHAREDPG_VAULT_TOKEN_FILE")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise ConfigError(f"SHAREDPG_VAULT_TOKEN_FILE {token_file!r} cannot be read ({exc.strerror})") from None
        role = environ.get("SHAREDPG_VAULT_K8S_ROLE")
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
        return "permission denied: the token or Kubernetes role needs read, create and update on the tenant paths"
    if isinstance(exc, hvac.exceptions.VaultError):
        return "Vault answered with an error: see the message"
    return "Vault is unreachable: check VAULT_ADDR, VAULT_CACERT and NetworkPolicies"


class Vault:
    """The KV v2 operations bootstrap needs, each retried until the deadline."""

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

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying Vault and network failures with backoff until the deadline."""
        import hvac.exceptions
        import requests

        delay, attempt = 0.2, 0
        while True:
            attempt += 1
            try:
                return operation()
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
                raise  # answers, not failures: the caller decides
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                remaining = self.deadline - time.monotonic()
                message = logs.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                if remaining <= 0:
                    raise SharedpgError(f"Vault: could not {what}: {message}", _hint(exc)) from None
                self.log.warning("vault not ready", attempt=attempt, action=what, error=message, hint=_hint(exc))
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)

    def read(self, path: str) -> tuple[dict[str, Any] | None, int]:
        """The secret's data and version at ``path``, or (None, 0) when it does not exist."""
        import hvac.exceptions

        def operation() -> tuple[dict[str, Any] | None, int]:
            try:
                response = self.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.settings.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None, 0
            data = response["data"]
            return dict(data["data"] or {}), int(data["metadata"]["version"])

        result = self._retry(f"read {self.settings.mount}/{path}", operation)
        if result[0] and result[0].get("password"):
            logs.register_secret(str(result[0]["password"]))
        return result

    def write(self, path: str, data: dict[str, str], cas: int) -> bool:
        """Write ``data`` if the secret is still at version ``cas`` (0: does not exist yet).

        :returns: False when another writer got there first (Vault's check-and-set refused it).
        """
        import hvac.exceptions

        def operation() -> bool:
            try:
                self.client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=data, cas=cas, mount_point=self.settings.mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" in str(exc):
                    return False
                raise SharedpgError(f"Vault refused the write to {self.settings.mount}/{path}: {exc}") from None
            return True

        return self._retry(f"write {self.settings.mount}/{path}", operation)
