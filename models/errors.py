"""Errors of the model layer: a model that cannot be built from the given plan and data.

Example:
    >>> raise ModelError("embedding_plan.json: tables have dims [8, 16]; DLRM needs one dim, set embeddings.default_dim")
    Traceback (most recent call last):
    ...
    models.errors.ModelError: embedding_plan.json: tables have dims [8, 16]; DLRM needs one dim, set embeddings.default_dim
"""

from __future__ import annotations

from features.errors import UserError


class ModelError(UserError):
    """A model configuration that does not fit the embedding plan or the data."""
