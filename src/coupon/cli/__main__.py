"""``python -m coupon.cli``: the same as the ``coupon`` console script."""

from coupon.cli import main

raise SystemExit(main())
