"""Config errors give one line naming the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from features.errors import ConfigError
from jobs.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


@pytest.fixture()
def base(tmp_path: Path) -> dict:
    (tmp_path / "train.tsv").write_text("label\tC1\n1\ta\n")
    return {"dataset": {"path": "train.tsv", "format": "tsv", "kind": "ctr", "roles": {"label": "label", "categorical": ["C1"]}}}


def _error(tmp_path: Path, data) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, data))
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(tmp_path / "run.yaml") in msg
    return msg


def test_bundled_configs_are_valid():
    for name in ("sample_ctr.yaml", "sample_sessions.yaml", "sample_interactions.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.dataset.path.exists()
        assert cfg.dataset.path.is_absolute()


def test_defaults_are_filled(tmp_path, base):
    cfg = load_config(_write(tmp_path, base))
    assert cfg.features.vocab.min_count == 2
    assert cfg.engine.spark.master == "local[*]"
    assert cfg.training.ray.num_workers == 2
    assert cfg.dataset.path == (tmp_path / "train.tsv").resolve()


def test_unknown_key_suggests_the_right_one(tmp_path, base):
    base["training"] = {"epoch": 3}
    msg = _error(tmp_path, base)
    assert "unknown key 'training.epoch'" in msg
    assert "did you mean 'epochs'" in msg


def test_unknown_top_level_key(tmp_path, base):
    base["datset"] = {}
    msg = _error(tmp_path, base)
    assert "unknown key 'datset'" in msg and "dataset" in msg


def test_wrong_type(tmp_path, base):
    base["training"] = {"epochs": "ten"}
    msg = _error(tmp_path, base)
    assert "key 'training.epochs'" in msg and "integer" in msg and "'ten'" in msg


def test_bad_enum_value(tmp_path, base):
    base["dataset"]["kind"] = "ctrr"
    msg = _error(tmp_path, base)
    assert "key 'dataset.kind'" in msg and "'ctr'" in msg


def test_missing_required_key(tmp_path):
    msg = _error(tmp_path, {"seed": 1})
    assert "key 'dataset' is missing" in msg


def test_missing_role_for_kind(tmp_path, base):
    del base["dataset"]["roles"]["label"]
    msg = _error(tmp_path, base)
    assert "roles.label" in msg


def test_missing_data_file(tmp_path, base):
    base["dataset"]["path"] = "nope.tsv"
    msg = _error(tmp_path, base)
    assert "dataset.path" in msg and "nope.tsv" in msg and "does not exist" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path):
    msg = _error(tmp_path, "dataset:\n  path: [unclosed\n  kind: ctr\n")
    assert "YAML syntax error" in msg and "line" in msg


def test_empty_file(tmp_path):
    msg = _error(tmp_path, "")
    assert "empty" in msg


def test_out_of_range_value(tmp_path, base):
    base["features"] = {"ingest": {"max_quarantine_share": 2}}
    msg = _error(tmp_path, base)
    assert "features.ingest.max_quarantine_share" in msg and "less than or equal to 1" in msg


def test_both_budgets_rejected(tmp_path, base):
    base["embeddings"] = {"budget_bytes": 1000, "compression_ratio": 4}
    msg = _error(tmp_path, base)
    assert "either budget_bytes or compression_ratio" in msg


def test_config_hash_changes_with_settings(tmp_path, base):
    a = load_config(_write(tmp_path, base))
    base["seed"] = 5
    b = load_config(_write(tmp_path, base))
    assert a.section_hash("dataset") == b.section_hash("dataset")
    assert a.section_hash() != b.section_hash()
