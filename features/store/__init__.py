"""Feast feature store over the Spark outputs, generated from the feature spec and the config.

`sources.write_sources` (Spark) writes the Parquet the feature views read and `layout.json` (what
each view holds); `definitions.build_definitions` turns the layout into Feast objects;
`repo.register` writes `feature_store.yaml` and applies; `repo.materialize` fills the online store;
`training_set.build_training_set` reads point-in-time training sets; `online.online_features`
looks feature vectors up. Everything (sources, registry, SQLite online store) lives in one folder,
with relative paths, so the folder can be moved (run folders are renamed into place).
"""
