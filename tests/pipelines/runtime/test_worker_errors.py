"""A user error raised inside a real Ray Train `TorchTrainer` worker reaches the CLI as its own one-line
message (`fit_with_progress` re-raises it as itself; `jobs.cli.main` prints it and exits 2), not as Ray's
traceback or `UnserializableException`.

One real fit (a Ray Train run costs tens of seconds on the shared 2-core machine) carries the error with
fields (`__reduce__`); the path from the worker to the driver is the same for every error, and what differs
between them, pickling (how Ray moves a worker's exception; tests/jobs/test_error_pickling.py sends errors
through a Ray task) and the printed line, is checked for each constructor shape without Ray Train."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from embeddings.errors import BudgetError
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.errors import IdOutOfRangeError, TrainingDivergedError

# one of each constructor shape a worker raises: fields (`__reduce__`), a plain message, an embeddings-layer error
ERRORS = {
    "id": IdOutOfRangeError("C3", 41, 40, "encoded/train"),
    "diverged": TrainingDivergedError("training diverged at step 7 (loss nan); the batch is saved in runs/r/bad_batch"),
    "budget": BudgetError("embeddings.budget_mb: 0.01 MB is below the smallest plan (0.2 MB); raise it"),
}


@pytest.mark.ray
def test_a_workers_user_error_is_the_one_line_the_cli_prints(ray_local, tmp_path: Path, monkeypatch, capsys):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    import jobs.cli
    from pipelines.runtime.ray_driver import fit_with_progress, ray_run_config

    kind = "id"
    error = ERRORS[kind]

    def raise_in_worker(config: dict) -> None:  # nested: Ray pickles it by value (workers cannot import tests/)
        with open(config["attempts"], "a") as fh:
            fh.write("x")
        raise error

    cfg = TrainConfig()
    assert cfg.max_failures == 2  # restarts are allowed, but not for a user error
    attempts = tmp_path / "attempts"
    trainer = TorchTrainer(raise_in_worker, train_loop_config={"attempts": str(attempts)},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=ray_run_config(cfg, tmp_path))
    monkeypatch.setattr(jobs.cli, "app", lambda standalone_mode: fit_with_progress(trainer, cfg, tmp_path / "progress.json"))
    with pytest.raises(SystemExit) as exit_:
        jobs.cli.main()
    assert exit_.value.code == 2
    printed = capsys.readouterr().err.strip()  # the CLI console writes to stderr
    assert printed == f"error: {ERRORS[kind]}" and "\n" not in printed
    assert attempts.read_text() == "x"  # raised once: the group was not restarted for the same input to fail again


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_each_kind_of_worker_error_arrives_whole_and_is_the_one_line_the_cli_prints(kind: str, monkeypatch, capsys):
    import jobs.cli

    error = ERRORS[kind]
    arrived = pickle.loads(pickle.dumps(error))  # what Ray does to a worker's exception on its way to the driver
    assert type(arrived) is type(error) and str(arrived) == str(error) and vars(arrived) == vars(error)

    def app(standalone_mode: bool) -> None:
        raise arrived

    monkeypatch.setattr(jobs.cli, "app", app)
    with pytest.raises(SystemExit) as exit_:
        jobs.cli.main()
    assert exit_.value.code == 2
    printed = capsys.readouterr().err.strip()
    assert printed == f"error: {ERRORS[kind]}" and "\n" not in printed
