"""Short listings of gene and patient names for messages."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_LISTED", "listing"]

MAX_LISTED = 20


def listing(items: Sequence[str]) -> str:
    """Comma-separated items, cut after :data:`MAX_LISTED` with a count of the rest.

    Args:
        items: the names.

    Returns:
        The listing.
    """
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")
