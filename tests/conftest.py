"""Fixtures every suite may use: the real Redis engine (``tests/redis_fixtures.py``)."""

pytest_plugins = ["tests.redis_fixtures"]
