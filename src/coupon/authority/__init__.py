"""The Coupon Authority service."""
