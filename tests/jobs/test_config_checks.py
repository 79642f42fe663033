"""`config validate` rejects what used to fail later (or never): one line naming file, key and fix, before any engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.errors import ConfigError
from jobs.config import load_config
from jobs.preflight import preflight

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def base(tmp_path: Path) -> dict:
    (tmp_path / "train.tsv").write_text("label\tI1\tC1\n1\t3\ta\n")
    return {"output_dir": str(tmp_path / "runs"),
            "dataset": {"path": "train.tsv", "format": "tsv", "kind": "ctr",
                        "roles": {"label": "label", "dense": ["I1"], "categorical": ["C1"]}}}


def _error(tmp_path: Path, data: dict, key: str) -> str:
    """The one-line error of `data`, from load_config or the engine-free preflight."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        preflight(load_config(path), str(path))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and f"'{key}'" in msg, msg
    return msg


@pytest.mark.parametrize("arch", [[0], [-5], [16, 0]])
def test_mlp_layers_need_a_unit(tmp_path, base, arch):
    base["training"] = {"model": {"dense_arch": arch}}
    assert "greater than or equal to 1" in _error(tmp_path, base, f"training.model.dense_arch.{arch.index(min(arch))}")


def test_label_listed_as_a_feature(tmp_path, base):
    base["dataset"]["roles"]["categorical"] = ["C1", "label"]
    msg = _error(tmp_path, base, "dataset.roles.categorical")
    assert "column 'label' is listed in roles.label and in roles.categorical" in msg and "remove it" in msg


def test_column_in_two_roles(tmp_path, base):
    base["dataset"]["roles"]["dense"] = ["I1", "C1"]
    msg = _error(tmp_path, base, "dataset.roles.categorical")
    assert "column 'C1' is listed in roles.dense and in roles.categorical" in msg


def test_id_roles_may_also_be_categorical(tmp_path, base):
    base["dataset"]["roles"].update({"user_id": "C1"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    preflight(load_config(path), str(path))


@pytest.mark.parametrize("section,key,value,expect", [
    ("embeddings", "methods", ["dense", "hashin"], "method 'hashin' is unknown"),
    ("embeddings", "optimizer", "adamw", "'rowwise_adagrad', 'sgd' or 'adam'"),
    ("embeddings", "dsl", {"init": "rand"}, "'random' or 'frequency'"),
])
def test_unknown_names(tmp_path, base, section, key, value, expect):
    base[section] = {key: value}
    full = f"{section}.{key}" + (".init" if key == "dsl" else "")
    assert expect in _error(tmp_path, base, full)


@pytest.mark.parametrize("where,value", [("epochs", True), ("batch_size", False)])
def test_true_is_not_a_count(tmp_path, base, where, value):
    base["training"] = {where: value}
    assert f"expected a number, got {value}" in _error(tmp_path, base, f"training.{where}")


def test_booleans_still_go_where_booleans_belong(tmp_path, base):
    base["training"] = {"grad_clip_norm": None, "ray": {"single_process": True, "use_gpu": False}}
    base["store"] = {"enabled": True}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = load_config(path)
    assert cfg.store.enabled is True and cfg.training.ray.single_process is True and cfg.training.ray.use_gpu is False


@pytest.mark.parametrize("name", ["../../escape", "/abs", "a/b", ".hidden", ".."])
def test_run_name_cannot_leave_output_dir(tmp_path, base, name):
    base["name"] = name
    assert "not a plain folder name" in _error(tmp_path, base, "name")


def test_role_column_missing_from_header(tmp_path, base):
    base["dataset"]["roles"]["categorical"] = ["C1", "C9"]
    msg = _error(tmp_path, base, "dataset.roles.categorical")
    assert "column 'C9' is not in the header of" in msg and "(label, I1, C1)" in msg


def test_wrong_delimiter_is_named(tmp_path, base):
    base["dataset"]["format"] = "csv"
    msg = _error(tmp_path, base, "dataset.roles.dense")
    assert "(label\\tI1\\tC1) (only one column was found: is the delimiter right?" in msg


def test_gzipped_csv_header_with_quotes_and_bom(tmp_path, base):
    import gzip

    with gzip.open(tmp_path / "train.csv.gz", "wt", encoding="utf-8-sig") as fh:
        fh.write('"label","I1","C1"\n1,3,a\n')
    base["dataset"].update({"path": "train.csv.gz", "format": "csv"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    preflight(load_config(path), str(path))


@pytest.mark.parametrize("master,memory,key", [
    ("lcoal[2]", "2g", "engine.spark.master"), ("local[2", "2g", "engine.spark.master"),
    ("local[2]", "2 GB", "engine.spark.driver_memory"), ("local[2]", "1.5g", "engine.spark.driver_memory"),
])
def test_bad_spark_settings(tmp_path, base, master, memory, key):
    base["engine"] = {"spark": {"master": master, "driver_memory": memory}}
    assert "e.g." in _error(tmp_path, base, key) or "use local" in _error(tmp_path, base, key)


def test_output_dir_that_is_a_file(tmp_path, base):
    (tmp_path / "afile").write_text("x")
    base["output_dir"] = str(tmp_path / "afile" / "runs")
    assert "is a file, not a folder" in _error(tmp_path, base, "output_dir")


def test_output_dir_under_proc(tmp_path, base):
    base["output_dir"] = "/proc/sparserec-runs"
    assert "system folder" in _error(tmp_path, base, "output_dir")


def test_binary_config_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError, match=r"not a text file \(binary or not UTF-8\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_bundled_configs_pass_the_preflight():
    for name in ("sample_ctr.yaml", "sample_sessions.yaml", "sample_interactions.yaml"):
        preflight(load_config(ROOT / "configs" / name), name)


def test_validate_reads_the_header_without_spark(tmp_path, base):
    base["dataset"]["roles"]["categorical"] = ["C1", "C9"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom jobs.cli import app\n"
            f"res = CliRunner().invoke(app, ['config', 'validate', {str(path)!r}])\n"
            "print(type(res.exception).__name__, 'pyspark' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.stdout.split() == ["ConfigError", "False"], res.stderr


def test_train_checks_the_header_before_the_feature_stages(tmp_path, base):
    from typer.testing import CliRunner

    from jobs.cli import app

    base["dataset"]["roles"]["categorical"] = ["C1", "C9"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    res = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert isinstance(res.exception, ConfigError) and "column 'C9' is not in the header" in str(res.exception)
    assert not (tmp_path / "runs").exists()                   # nothing ran


@pytest.mark.parametrize("kind,model", [("ctr", "m2trec"), ("sessions", "dlrm")])
def test_model_that_does_not_train_on_the_kind(tmp_path, base, kind, model):
    if kind == "sessions":
        base["dataset"] = {"path": "train.tsv", "format": "tsv", "kind": "sessions",
                           "roles": {"item_id": "C1", "timestamp": "I1", "session_id": "label"}}
    base["training"] = {"model": {"name": model}}
    assert f"'{model}' does not train on a '{kind}' dataset" in _error(tmp_path, base, "training.model.name")


def test_model_lists_match_the_training_layer():
    from jobs.config import MODELS_BY_KIND
    from pipelines.ctr.model import CTR_MODELS
    from pipelines.sessions.train import SESSION_MODELS

    assert MODELS_BY_KIND == {"ctr": CTR_MODELS, "sessions": SESSION_MODELS, "interactions": SESSION_MODELS}
