"""User-facing errors shared by every layer.

A `UserError` is a mistake the user can fix (a bad config key, a missing column, a wrong path).
The CLI prints its message as one line and exits with status 2; it never shows a traceback.
Layers above `features` (embeddings, models, pipelines, jobs) subclass it for their own errors,
so one `except UserError` in the CLI covers them all.

Example:
    >>> raise UserError("configs/run.yaml: key 'dataset.kind': expected one of ctr|sessions|interactions, got 'ctrr'")
    Traceback (most recent call last):
    ...
    features.errors.UserError: configs/run.yaml: key 'dataset.kind': expected one of ctr|sessions|interactions, got 'ctrr'
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in input or configuration; its message names the file, the field and the fix."""


class ConfigError(UserError):
    """A configuration file that cannot be used as written."""


class DataError(UserError):
    """Input data that cannot be processed (missing column, empty file, single-class label...)."""
