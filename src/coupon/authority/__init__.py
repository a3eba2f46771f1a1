"""The Coupon Authority service: ``create_app(settings)`` builds the ASGI app.

Run it with ``coupon up`` (see ``docs/authority.md``).
"""

from .app import create_app

__all__ = ["create_app"]
