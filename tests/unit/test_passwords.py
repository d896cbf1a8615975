"""Password files under ``--password-dir``: many writers at once, one password per tenant, never an empty read."""

from __future__ import annotations

import threading
from pathlib import Path

from sharedpg_tools import passwords
from sharedpg_tools.errors import ConfigError


def test_concurrent_writers_never_expose_an_empty_file(tmp_path: Path) -> None:
    tenants = [f"tenant{i}" for i in range(40)]
    seen: dict[str, set[str]] = {t: set() for t in tenants}
    failures: list[str] = []
    start = threading.Barrier(16)

    def writer() -> None:
        start.wait()
        for tenant in tenants:
            try:
                password, _ = passwords.in_directory(str(tmp_path), tenant, create=True)
            except ConfigError as exc:  # "is empty": a reader saw the name before the password
                failures.append(str(exc))
                continue
            assert password is not None
            seen[tenant].add(password)

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(len(found) == 1 for found in seen.values()), "two writers ended with different passwords"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(tenants), "temporary files left behind"
    assert all((tmp_path / t).stat().st_mode & 0o077 == 0 for t in tenants)
