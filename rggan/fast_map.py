"""Fast correlation-via-synthesis map: kept importable from ``rggan.fast_map``.

The code is :mod:`rggan.radiogenomic.fast` (the map linearised in the gene embedding).
"""

from rggan.radiogenomic.fast import (
    _encoder_parts,  # noqa: F401 (the former private helper, still importable here)
    embedding_shifts,
    fast_synthesis_map,
    shift_directions,
)

__all__ = ["embedding_shifts", "shift_directions", "fast_synthesis_map"]
