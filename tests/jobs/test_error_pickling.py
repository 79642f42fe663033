"""User errors survive pickling (Ray sends a worker's exception to the driver): message and fields intact."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import pytest

from features.errors import UserError

MODULES = ("features.errors", "embeddings.errors", "embeddings.dsl.tables", "models.errors", "pipelines.runtime.errors",
           "pipelines.sessions.data", "pipelines.sessions.loop", "jobs.pipeline", "jobs.run_lock", "jobs.submit",
           "jobs.trust")

# the errors whose constructor takes more than a message, with arguments to build one
CUSTOM = {
    "IdOutOfRangeError": ("C1", 12, 10, "encoded/train"),
    "StageFailed": ("vocab", "COLUMN_ALREADY_EXISTS", Path("runs/r"), Path("runs/r/logs/vocab.log")),
    "RunLockedError": (Path("runs/r"), {"pid": 7, "host": "h", "started_at": "2026-01-01T00:00:00+00:00"}),
    "UntrustedCheckpointError": (Path("runs/r/.checkpoints/t"), Path("runs/r/.checkpoints/t/.metadata"), 1001),
}


def _all_user_errors() -> list[type]:
    for name in MODULES:
        importlib.import_module(name)
    seen, todo = [], [UserError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted({c for c in seen if c.__module__.split(".")[0] in ("features", "embeddings", "models", "pipelines", "jobs")},
                  key=lambda c: c.__name__)


def test_every_user_error_round_trips_through_pickle():
    classes = _all_user_errors()
    assert {"IdOutOfRangeError", "StageFailed", "DataError", "SubmitError"} <= {c.__name__ for c in classes}
    for cls in classes:
        err = cls(*CUSTOM.get(cls.__name__, (f"{cls.__name__}: something to fix",)))
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err), cls
        assert vars(back) == vars(err), cls


def test_id_out_of_range_keeps_its_fields():
    from pipelines.runtime.errors import IdOutOfRangeError

    err = IdOutOfRangeError("C1", 12, 10, "encoded/train")
    back = pickle.loads(pickle.dumps(err))
    assert (back.feature, back.value, back.rows, back.source) == ("C1", 12, 10, "encoded/train")
    assert str(back) == ("encoded/train: feature 'C1' has id 12 but its table has 10 rows (ids 0..9); "
                         "rebuild the plan from the same vocab stage")


@pytest.mark.ray
def test_user_error_raised_in_a_ray_task_reaches_the_driver_with_its_message(ray_local):
    from jobs.pipeline import StageFailed
    from pipelines.runtime.errors import IdOutOfRangeError

    @ray_local.remote
    def fail(kind: str):
        if kind == "id":
            raise IdOutOfRangeError("C7", 99, 50, "encoded/validation")
        raise StageFailed("train", "worker died", Path("runs/r"), None)

    with pytest.raises(IdOutOfRangeError) as exc:
        ray_local.get(fail.remote("id"))
    assert "feature 'C7' has id 99 but its table has 50 rows" in str(exc.value)
    assert exc.value.feature == "C7" and exc.value.rows == 50
    with pytest.raises(StageFailed) as exc:
        ray_local.get(fail.remote("stage"))
    assert "stage 'train' failed: worker died" in str(exc.value) and exc.value.stage == "train"
