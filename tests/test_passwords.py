"""Password hashes: the modern form, the Data Server's legacy SHA-1 form, and upgrades."""

from __future__ import annotations

import hashlib

from txm import passwords

# The manual's recovery statement stores exactly this for the password "admin".
MANUAL_HASH = "sha1$$d033e22ae348aeb5660fc2140aec35850c4da997"


def test_modern_hash_round_trip_and_salting():
    a = passwords.make_password("correct horse")
    b = passwords.make_password("correct horse")
    assert a.startswith("pbkdf2_sha256$600000$") and a != b
    assert passwords.check_password("correct horse", a)
    assert not passwords.check_password("correct horsE", a)
    assert not passwords.needs_upgrade(a)


def test_the_manuals_recovery_hash_is_admin():
    assert passwords.check_password("admin", MANUAL_HASH)
    assert not passwords.check_password("Admin", MANUAL_HASH)
    assert passwords.needs_upgrade(MANUAL_HASH)
    assert passwords.is_default_password(MANUAL_HASH)


def test_salted_legacy_hash():
    encoded = "sha1$ab$" + hashlib.sha1(b"abpw").hexdigest()
    assert passwords.check_password("pw", encoded)
    assert not passwords.check_password("px", encoded)


def test_weaker_iterations_need_upgrade():
    old = passwords.make_password("x", iterations=1000)
    assert passwords.check_password("x", old) and passwords.needs_upgrade(old)


def test_garbage_hashes_never_match():
    for bad in ["", "plain", "pbkdf2_sha256$x$y$z", "pbkdf2_sha256$0$s$h", "sha1$nohash", "md5$$x"]:
        assert not passwords.check_password("admin", bad)


def test_weakness():
    assert passwords.weakness("admin")
    assert passwords.weakness("short1")
    assert passwords.weakness("onlyletters")
    assert passwords.weakness("l0ng-and-mixed") is None
