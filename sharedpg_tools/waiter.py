"""Repeat an attempt until it succeeds, bounded by a total deadline (tenacity does the loop).

The delay after a failure depends on what failed:
- nothing listens (connection refused, no socket): a login attempt would be wasted, so the port itself is
  polled with a TCP (or Unix socket) connect every ``PORT_POLL_S`` for up to ``max_interval``, and the
  wait ends the moment it answers: readiness is seen within a poll of the server opening its port, with
  no failed login in the server's log meanwhile;
- the server is starting (57P03): ``STARTING_S`` (or ``interval`` if shorter), it is a matter of moments;
- the login was rejected (auth classes): ``max_interval``: each such attempt is a line in the server's log;
- anything else: exponential backoff with jitter from ``interval`` to ``max_interval``.
The deadline is sharedpg's own clock: the last sleep is clamped to it and no attempt starts after it. A
``stable`` window asks for the server to stay ready that long, which guards against the official image's
init phase (the server accepts, then restarts).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sharedpg_tools.classify import Failure
from sharedpg_tools.errors import ConfigError, DeadlineExceeded, PermanentError, SharedpgError
from sharedpg_tools.probe import AttemptFailed, Ready, where

# The probe path must not import typing (~3 ms of CPU per probe): names for annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The smallest attempt a nearly spent deadline still allows, so the last attempt is not empty.
MIN_ATTEMPT_S = 0.1
# While nothing listens: how often the port is polled (a connect and close, no login).
PORT_POLL_S = 0.1
NOT_LISTENING = ("refused", "no_socket")
# A server that answers "starting up" (recovery after a restart) is retried this soon.
STARTING_S = 0.1


def port_answers(target: dict[str, str]) -> bool:
    """Does anything accept a connection at the target's host and port (or Unix socket)?"""
    import socket

    host, port = target.get("host") or "localhost", target.get("port") or "5432"
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(PORT_POLL_S)
                sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            with socket.create_connection((host, int(port)), timeout=PORT_POLL_S):
                pass
    except (OSError, ValueError):
        return False
    return True


class Policy:
    def __init__(
        self,
        timeout: float = 300.0,
        attempt_timeout: float = 5.0,
        interval: float = 0.2,
        max_interval: float = 2.0,
        stable: float = 0.0,
        fail_fast: bool = False,
    ):
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.interval = interval
        self.max_interval = max_interval
        self.stable = stable
        self.fail_fast = fail_fast


class NotReadyYet(SharedpgError):
    """A failure worth another attempt; carries the classified failure for logs and the report."""

    def __init__(self, failure: Failure, target: dict[str, str] | None = None):
        super().__init__(failure.message, failure.hint)
        self.failure = failure
        self.target = target or {}


class Stabilizing(SharedpgError):
    """Ready, but not yet for the whole ``--stable`` window."""


def escalate(exc: AttemptFailed, fail_fast: bool) -> SharedpgError:
    """Turn a failed attempt into the error the policy says: retry, exit 2 or exit 3."""
    failure = exc.failure
    if failure.kind == "config":
        return ConfigError(f"{failure.message}: {failure.hint}")
    if failure.kind == "permanent" or (failure.kind == "auth" and fail_fast):
        error = PermanentError(failure.message, failure.hint)
        error.failure = failure  # type: ignore[attr-defined]
        return error
    return NotReadyYet(failure, exc.target)


class Waiter:
    """Runs ``attempt(timeout)`` under a policy, logging each failure as an operator needs it:
    at warning the first time and whenever it changes, at debug while it repeats."""

    def __init__(self, attempt: Callable[[float], Ready], policy: Policy, log: Any):
        self.attempt = attempt
        self.policy = policy
        self.log = log
        self.attempts = 0
        self.last: NotReadyYet | None = None
        self.started = time.monotonic()
        self._stable_since: float | None = None

    def on_failure(self, error: NotReadyYet, next_delay: float) -> None:
        changed = self.last is None or not error.failure.same_as(self.last.failure)
        self.last = error
        emit = self.log.warning if changed else self.log.debug
        emit(
            "not ready",
            attempt=self.attempts,
            elapsed_s=round(self.elapsed(), 3),
            next_delay_s=round(next_delay, 3),
            target=where(error.target),
            **error.failure.fields(),
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.policy.timeout - self.elapsed() if self.policy.timeout else float("inf")

    def once(self) -> Ready:
        """Exactly one attempt.

        :raises NotReadyYet: when it failed in a way a later attempt might not.
        """
        try:
            return self._one()
        except NotReadyYet as exc:
            self.last = exc
            raise

    def _one(self) -> Ready:
        self.attempts += 1
        timeout = min(self.policy.attempt_timeout, max(self.remaining(), MIN_ATTEMPT_S))
        try:
            return self.attempt(timeout)
        except AttemptFailed as exc:
            raise escalate(exc, self.policy.fail_fast) from None

    def _one_stable(self) -> Ready:
        try:
            ready = self._one()
        except NotReadyYet:
            self._stable_since = None
            raise
        if not self.policy.stable:
            return ready
        now = time.monotonic()
        if self._stable_since is None:
            self._stable_since = now
        held = now - self._stable_since
        if held >= self.policy.stable:
            return ready
        self.log.debug("ready, holding for --stable", held_s=round(held, 3), stable_s=self.policy.stable)
        raise Stabilizing(f"ready for {held:.1f} s of the --stable {self.policy.stable:g} s")

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; after a refused connection, poll the port meanwhile and stop when it answers."""
        end = time.monotonic() + seconds
        listening = self.last is not None and self.last.failure.error_class in NOT_LISTENING
        while (left := end - time.monotonic()) > 0:
            if listening and port_answers(self.last.target):  # type: ignore[union-attr]
                return
            time.sleep(min(PORT_POLL_S, left))

    def until_ready(self) -> Ready:
        """Attempt until ready or the deadline.

        :raises DeadlineExceeded: with the last failure when ``timeout`` runs out.
        :raises PermanentError, ConfigError: at once, without retrying.
        """
        import tenacity

        backoff = tenacity.wait_exponential_jitter(
            initial=self.policy.interval, max=self.policy.max_interval, jitter=self.policy.interval
        )

        def next_delay(state: Any) -> float:
            error = state.outcome.exception()
            failed = error.failure.error_class if isinstance(error, NotReadyYet) else None
            if isinstance(error, Stabilizing):
                delay = self.policy.interval
            elif failed == "starting":
                delay = min(STARTING_S, self.policy.interval)
            elif failed in NOT_LISTENING or (isinstance(error, NotReadyYet) and error.failure.kind == "auth"):
                delay = self.policy.max_interval  # NOT_LISTENING: the port poll usually ends it early
            else:
                delay = backoff(state)
            return max(0.0, min(delay, self.remaining()))

        def report(state: Any) -> None:
            error = state.outcome.exception()
            if isinstance(error, NotReadyYet):
                self.on_failure(error, state.upcoming_sleep)

        retrying = tenacity.Retrying(
            stop=lambda state: self.remaining() <= 0,  # sharedpg's clock: tenacity's starts later
            wait=next_delay,
            sleep=self._sleep,
            retry=tenacity.retry_if_exception_type((NotReadyYet, Stabilizing)),
            before_sleep=report,
            reraise=True,
        )
        try:
            return retrying(self._one_stable)
        except NotReadyYet as exc:
            self.on_failure(exc, 0.0)
            raise DeadlineExceeded(
                f"not ready after {self.elapsed():.1f} s and {self.attempts} attempts: {exc.failure.message}",
                exc.failure.hint,
            ) from exc
        except Stabilizing as exc:
            raise DeadlineExceeded(f"ready but not stable before --timeout: {exc}") from exc
