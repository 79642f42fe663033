"""Errors of the embedding layer; all are `UserError`s, so the CLI prints them as one line.

Example:
    >>> raise UnknownMethodError("embedding_plan.json: table 't_C1': method 'hashin' is unknown; use one of dense, hashing")
    Traceback (most recent call last):
    ...
    embeddings.errors.UnknownMethodError: embedding_plan.json: table 't_C1': method 'hashin' is unknown; use one of dense, hashing
"""

from __future__ import annotations

from features.errors import UserError


class EmbeddingError(UserError):
    """Base of every embedding-layer mistake the user can fix."""


class UnknownMethodError(EmbeddingError):
    """A compression method name that is not in the registry."""


class MethodParamsError(EmbeddingError):
    """A compression method given parameters it cannot use (missing, wrong type, out of range)."""


class BudgetError(EmbeddingError):
    """A memory budget that no plan can meet (smaller than the minimum representable)."""


class FeatureSpecError(EmbeddingError):
    """A feature_spec.json that cannot be planned from (missing file, field or value)."""


class EmbeddingInputError(EmbeddingError):
    """A sparse batch that does not fit the plan (missing feature, id out of range)."""


class ExportError(EmbeddingError):
    """An inference artifact that cannot be written or read back."""
