"""Does a stored password verifier match a plaintext password? (Superuser admins read pg_authid.)

Used to decide whether a tenant's password has drifted without setting it again on every run
(which would change the salt and write DDL to the server log each time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def matches(verifier: str | None, password: str, role: str) -> bool:
    """True when ``verifier`` (``pg_authid.rolpassword``) was made from ``password``.

    >>> v = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$" + _keys("pw", b"saltsalt", 4096)
    >>> matches(v, "pw", "r"), matches(v, "other", "r")
    (True, False)
    >>> matches("md5" + hashlib.md5(b"pwr").hexdigest(), "pw", "r")
    True
    >>> matches(None, "pw", "r")
    False
    """
    if not verifier:
        return False
    if verifier.startswith("md5"):
        expected = "md5" + hashlib.md5((password + role).encode()).hexdigest()  # noqa: S324 - PostgreSQL's md5 format
        return hmac.compare_digest(verifier, expected)
    if not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$", 1)
        iterations, salt = head.split(":", 1)
        return hmac.compare_digest(keys, _keys(password, base64.b64decode(salt), int(iterations)))
    except ValueError:
        return False


def _keys(password: str, salt: bytes, iterations: int) -> str:
    """``StoredKey:ServerKey`` of RFC 5802 for this password, base64 as PostgreSQL stores them."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"{base64.b64encode(stored_key).decode()}:{base64.b64encode(server_key).decode()}"
