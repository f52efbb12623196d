"""Password hashing in the widely used ``pbkdf2_sha256$iterations$salt$hash`` form.

The Data Server's ``sha1$salt$hash`` form is still verified -- the manual's recovery
statement writes one -- and :func:`needs_upgrade` tells the login code to re-hash it.
Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
#: Iterations for new hashes (OWASP's figure for PBKDF2-HMAC-SHA256).
ITERATIONS = 600_000
SALT_CHARS = 22
#: The installation default; a user whose password still is this is sent to change it.
DEFAULT_PASSWORD = "admin"


def make_password(password: str, salt: str | None = None, iterations: int = ITERATIONS) -> str:
    """Hash a password for storage."""
    if salt is None:
        salt = secrets.token_urlsafe(SALT_CHARS)[:SALT_CHARS]
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def check_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the stored hash ``encoded`` (either form)."""
    if not encoded or password is None:
        return False
    algorithm, _, rest = encoded.partition("$")
    if algorithm == ALGORITHM:
        try:
            iterations_text, salt, _ = rest.split("$", 2)
            iterations = int(iterations_text)
        except ValueError:
            return False
        if iterations < 1:
            return False
        return hmac.compare_digest(make_password(password, salt, iterations).encode(), encoded.encode())
    if algorithm == "sha1":
        salt, sep, digest = rest.partition("$")
        if not sep:
            return False
        mine = hashlib.sha1((salt + password).encode("utf-8")).hexdigest()
        return hmac.compare_digest(mine.encode(), digest.lower().encode())
    return False


def needs_upgrade(encoded: str) -> bool:
    """True when the stored hash is of an older form or weaker than today's."""
    algorithm, _, rest = encoded.partition("$")
    if algorithm != ALGORITHM:
        return True
    try:
        return int(rest.split("$", 1)[0]) < ITERATIONS
    except ValueError:
        return True


def is_default_password(encoded: str) -> bool:
    """True when the stored hash is that of the installation default password."""
    return check_password(DEFAULT_PASSWORD, encoded)


def weakness(password: str) -> str | None:
    """A warning for a weak password (it is still allowed, as the manual says), or None."""
    if password == DEFAULT_PASSWORD:
        return "this is the installation default password"
    if len(password) < 8:
        return "it is shorter than 8 characters"
    if password.isdigit() or password.isalpha():
        return "it has only letters or only digits"
    return None
