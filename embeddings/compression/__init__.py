"""Compression methods of embedding tables, registered by exact name (see `base.py`).

Importing this package registers every method: dense, drop, hashing, qr, mixed_dim, fp16, int8,
int4, and `pruned` (DSL export) when `prune.py` is present.

Example:
    >>> from embeddings.compression import known_methods
    >>> {"dense", "hashing", "qr", "mixed_dim", "int8", "int4", "fp16", "drop"} <= set(known_methods())
    True
"""

from __future__ import annotations

import importlib
import importlib.util

from embeddings.compression import hashing, mixed_dim, qr, quantize  # noqa: F401  (registration)
from embeddings.compression.base import (CompressionMethod, ExportedTable, PhysicalTable, get_method,
                                         known_methods, register, row_bytes)

if importlib.util.find_spec("embeddings.compression.prune") is not None:
    importlib.import_module("embeddings.compression.prune")

__all__ = ["CompressionMethod", "ExportedTable", "PhysicalTable", "get_method", "known_methods", "register", "row_bytes"]
