"""Options that may arrive from the command line as strings."""

from __future__ import annotations

from typing import Any

__all__ = ["as_flag"]

#: spellings of "off" accepted for a boolean option (compared lower-case, stripped)
FALSE_SPELLINGS = ("false", "0", "no", "none", "null", "")


def as_flag(value: Any) -> bool:
    """A boolean option that may arrive from the command line as a string.

    Unlike ``monai.utils.str2bool`` any other value (e.g. ``"yes"``, ``"on"``, ``2``) counts as true
    instead of raising, as the bundle configs have always accepted it.

    Args:
        value: a bool, a number or a string.

    Returns:
        False for ``False``, ``0``, ``None`` and the strings of :data:`FALSE_SPELLINGS`; True otherwise.
    """
    return str(value).strip().lower() not in FALSE_SPELLINGS
