"""The one rule every sub-coupon obeys: it only ever narrows its parent.

Used by the minting side (refuse to sign a widening request) and by the verifier (refuse a
chain whose links widen); one function, so the two can never disagree.
"""

from __future__ import annotations

from ._claims import Claims
from ._scope import purpose_covers

__all__ = ["widening"]


def widening(parent: Claims, child: Claims) -> str | None:
    """Return why ``child`` is not a valid narrowing of ``parent``, or None if it is.

    The depth limit is the caller's: it differs between issuer and verifier settings.
    """
    if child.tid != parent.tid:
        return f"tenant {child.tid!r} differs from the parent's {parent.tid!r}"
    if child.lin != parent.lin:
        return "lineage differs from the parent's"
    if child.dep != parent.dep + 1:
        return f"depth {child.dep} does not follow the parent's {parent.dep}"
    if not set(child.aud) <= set(parent.aud):
        return f"audience {list(child.aud)} is not within {list(parent.aud)}"
    if not parent.res.covers(child.res):
        return f"resource {child.res} is not nested in {parent.res}"
    if not child.act <= parent.act:
        return f"actions {sorted(child.act - parent.act)} are not granted by the parent"
    if not purpose_covers(parent.pur, child.pur):
        return f"purpose {child.pur!r} is not within {parent.pur!r}"
    if child.exp > parent.exp:
        return f"expiry {child.exp} is later than the parent's {parent.exp}"
    if child.nbf < parent.nbf:
        return f"not-before {child.nbf} is earlier than the parent's {parent.nbf}"
    if parent.pol is not None and child.pol != parent.pol:
        return "policy version differs from the parent's"
    return None
