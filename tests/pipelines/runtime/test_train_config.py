"""A model family says which training fields it uses: a config that sets a field its model's loop does not
read is rejected when it is read, in one line naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from jobs.config import ConfigError, parse_config
from pipelines.runtime.config import FAMILIES, ModelConfig, TrainConfig, fields_not_used

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("field, value, model, other", [
    ("slice_features", 5, "m2trec", "CTR models (dlrm, dcn, lr)"),
    ("shuffle_buffer_rows", 100, "gru4rec", "CTR models (dlrm, dcn, lr)"),
    ("eval_k", [5], "dlrm", "session models (m2trec, sasrec, gru4rec, popularity)"),
])
def test_a_field_the_family_does_not_use_is_rejected(field, value, model, other):
    with pytest.raises(ValidationError) as err:
        TrainConfig(model=ModelConfig(name=model), **{field: value})
    family = "session model" if model in FAMILIES["sessions"] else "CTR model"
    assert err.value.errors()[0]["msg"] == (f"Value error, training.{field}: only {other} use it and {model} is a "
                                            f"{family}; remove it from the config")


def test_nested_fields_are_checked_and_defaults_never_count():
    assert fields_not_used(TrainConfig(model=ModelConfig(name="sasrec", hidden=8)), "sessions") == []
    assert fields_not_used(TrainConfig(model=ModelConfig(name="sasrec", hidden=8)), "ctr") == ["training.model.hidden"]
    with pytest.raises(ValidationError, match=r"training.ray.materialize_below_mb: only CTR models"):
        TrainConfig.model_validate({"model": {"name": "m2trec"}, "ray": {"materialize_below_mb": 0}})
    with pytest.raises(ValidationError, match=r"training.model.dense_arch: only CTR models .* m2trec is a session model"):
        TrainConfig.model_validate({"model": {"name": "m2trec", "dense_arch": [8]}})
    both = TrainConfig.model_validate({"model": {"name": "m2trec"}, "checkpoint_every": 5, "shuffle": False,
                                       "max_steps": 3, "log_every": 1, "dense_optimizer": "adagrad"})
    assert both.checkpoint_every == 5                                  # fields both loops read are fine for either
    # no model named: the family is the one the command picks (`sessions train --model sasrec`), nothing to check
    assert TrainConfig.model_validate({"model": {"hidden": 8}}).model.hidden == 8


def test_the_run_config_check_names_the_file_and_field_in_one_line(tmp_path: Path):
    data = yaml.safe_load((ROOT / "configs" / "sample_sessions.yaml").read_text())
    data["training"]["slice_features"] = 4
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="cfg.yaml", base_dir=ROOT / "configs", check_paths=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cfg.yaml: ")
    assert "training.slice_features: only CTR models (dlrm, dcn, lr) use it and m2trec is a session model; " \
           "remove it from the config" in msg


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_the_shipped_configs_set_no_unused_field(name):
    parse_config(yaml.safe_load((ROOT / "configs" / name).read_text()), source=name, base_dir=ROOT / "configs",
                 check_paths=False)
