# The README's two commands: `make run` (the whole pipeline on the bundled sample) and `make test`.
# Both create .venv when it is missing and reuse it while the pins are unchanged.
VENV ?= .venv
PY := $(VENV)/bin/python
SPARSEREC := $(VENV)/bin/sparserec
PYTEST_ARGS ?=

.PHONY: install run test sample clean

install:
	@bash scripts/install.sh $(VENV)

run: install
	$(SPARSEREC) run --config configs/sample_ctr.yaml
	$(SPARSEREC) run --config configs/sample_sessions.yaml

test: install
	$(PY) -m pytest -q --doctest-modules tests features embeddings models pipelines jobs $(PYTEST_ARGS)

# Regenerate the bundled samples (deterministic: the same seed gives the same bytes).
sample: install
	$(SPARSEREC) generate ctr --rows 50000 --seed 0 --gzip --bad-rows 12 --output data/sample/ctr
	$(SPARSEREC) generate sessions --rows 30000 --seed 0 --gzip --output data/sample/sessions
	$(SPARSEREC) generate interactions --rows 30000 --seed 0 --gzip --output data/sample/interactions

clean:
	rm -rf runs spark-warehouse metastore_db .pytest_cache
