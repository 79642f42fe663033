"""Errors of the training layer: bad encoded inputs, ids outside their table, diverged training.

Example:
    >>> str(IdOutOfRangeError("C1", 12, 10, "encoded/train"))
    "encoded/train: feature 'C1' has id 12 but its table has 10 rows (ids 0..9); rebuild the plan from the same vocab stage"
"""

from __future__ import annotations

from features.errors import DataError, UserError


class EncodedDataError(DataError):
    """Encoded splits / schema.json / embedding_plan.json that do not fit together."""


class IdOutOfRangeError(DataError):
    """A categorical id outside its embedding table (checked before any kernel sees it)."""

    def __init__(self, feature: str, value: int, rows: int, source: str) -> None:
        self.feature, self.value, self.rows, self.source = feature, value, rows, source
        super().__init__(f"{source}: feature '{feature}' has id {value} but its table has {rows} rows "
                         f"(ids 0..{rows - 1}); rebuild the plan from the same vocab stage")

    def __reduce__(self):  # pickled with its constructor arguments: a Ray worker sends it to the driver intact
        return (type(self), (self.feature, self.value, self.rows, self.source))


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite; the offending batch is saved beside the run."""


class CheckpointMismatchError(UserError):
    """A checkpoint to resume from was written for another model or embedding plan."""
