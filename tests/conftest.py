"""Fixtures every suite may use: the real Redis engine (``tests/redis_fixtures.py``) and
SoftHSM2 tokens (``tests/softhsm_fixtures.py``)."""

pytest_plugins = [
    "tests.launcher_fixtures",
    "tests.redis_fixtures",
    "tests.softhsm_fixtures",
]
