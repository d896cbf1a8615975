"""The exit codes every sharedpg command shares (``check-pool`` declares its own Nagios codes)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    NOT_READY = 1  # not ready / check failed, e.g. the single attempt of --once
    USAGE = 2  # bad flag, unreadable password file, invalid value
    PERMANENT = 3  # retrying cannot fix it: version out of range, privilege, TLS (--fail-fast)
    ADMIN_LOGIN = 4  # the shared server rejected the admin's own login (password, role, pg_hba.conf)
    TIMEOUT = 124  # deadline exceeded, as coreutils `timeout` and wait4x
    SIGINT = 130
    SIGTERM = 143


EPILOG = """exit codes:
  0    success
  1    not ready / check failed (e.g. the single attempt of --once failed)
  2    usage or configuration error (one line names the input and the fix)
  3    permanent error that retrying cannot fix (server version out of range,
       insufficient privilege, TLS verification; auth failures with --fail-fast)
  4    the admin's own login was rejected (ensure-tenant, bootstrap, copy-tenant:
       wrong admin password, no such role, no pg_hba.conf entry; bootstrap
       retries it for 30 s first, a Secret being rotated)
  124  deadline (--timeout) exceeded
  130  interrupted by SIGINT
  143  terminated by SIGTERM"""
