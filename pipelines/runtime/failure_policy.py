"""Ray Train's failure policy with one change: a worker's `UserError` ends the run at once instead of being retried.

Ray Train restarts a failed worker group up to `FailureConfig(max_failures)` times whatever the cause, so a bad
id in the data or a budget too small was tried three times (minutes each) before its one-line message was
shown. A worker death (SIGKILL, OOM, a lost node) is still retried as before. Ray offers no public hook for
the policy (ray 2.60), so `user_errors_not_retried()` swaps it in for the duration of `fit()`.

Example::

    with user_errors_not_retried():
        trainer.fit()   # IdOutOfRangeError in a worker: raised after one attempt
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision
from ray.train.v2.api import data_parallel_trainer

from features.errors import UserError


def worker_user_error(err: BaseException) -> BaseException | None:
    """The first `UserError` raised inside a worker, if that is what ended the run."""
    seen: list[BaseException] = [err]
    failures = getattr(err, "worker_failures", None) or {}
    seen.extend(failures.values())
    for e in list(seen):
        cur: BaseException | None = e
        while cur is not None:
            if isinstance(cur, UserError):
                return cur
            cause = getattr(cur, "cause", None)
            cur = cause if isinstance(cause, BaseException) else cur.__cause__
    return None


class UserErrorsFailFast(DefaultFailurePolicy):
    """`DefaultFailurePolicy`, except that a failure caused by a `UserError` in any worker is raised, not retried."""

    def make_decision(self, training_failed_error):  # noqa: ANN001, ANN201 - Ray's signature
        if worker_user_error(training_failed_error) is not None:
            return FailureDecision.RAISE
        return super().make_decision(training_failed_error)


@contextlib.contextmanager
def user_errors_not_retried() -> Iterator[None]:
    """Within the block, a Ray Train `fit()` uses `UserErrorsFailFast` as its failure policy."""
    before = data_parallel_trainer.create_failure_policy
    data_parallel_trainer.create_failure_policy = UserErrorsFailFast
    try:
        yield
    finally:
        data_parallel_trainer.create_failure_policy = before
