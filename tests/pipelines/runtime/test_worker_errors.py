"""A user error raised inside a real Ray Train `TorchTrainer` worker reaches the CLI as its own one-line
message (`fit_with_progress` re-raises it as itself; `jobs.cli.main` prints it and exits 2), not as Ray's
traceback or `UnserializableException`."""

from __future__ import annotations

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
@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_a_workers_user_error_is_the_one_line_the_cli_prints(kind: str, ray_local, tmp_path: Path, monkeypatch, capsys):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    import jobs.cli
    from pipelines.runtime.ray_driver import fit_with_progress, ray_run_config

    error = ERRORS[kind]

    def raise_in_worker(config: dict) -> None:  # nested: Ray pickles it by value (workers cannot import tests/)
        raise error

    cfg = TrainConfig(max_failures=0)
    trainer = TorchTrainer(raise_in_worker, train_loop_config={},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=ray_run_config(cfg, tmp_path))
    monkeypatch.setattr(jobs.cli, "app", lambda standalone_mode: fit_with_progress(trainer, cfg, tmp_path / "progress.json"))
    with pytest.raises(SystemExit) as exit_:
        jobs.cli.main()
    assert exit_.value.code == 2
    printed = capsys.readouterr().err.strip()  # the CLI console writes to stderr
    assert printed == f"error: {ERRORS[kind]}" and "\n" not in printed
