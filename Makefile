# Two commands matter: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VAR    ?= var

.PHONY: demo test lint bench clean airflow

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[bridge,hub,dev,spark]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m synthetic_data.demo --out $(VAR)/demo

test: $(STAMP)
	@# Debian packages the tests drive: chromium (report rendering), docker-compose (compose file
	@# validation). apt needs its lists on a fresh machine.
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	 command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	 if [ -n "$$missing" ]; then \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1) \
	   || echo "could not install$$missing: the tests that need them will be skipped"; fi
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The Airflow UI over the demo run folder (make demo first): examples off, 2 task slots, one
# api-server worker. The admin password is printed, and kept in var/demo/airflow.
airflow: $(STAMP)
	JOINEDUP_VENV=$(abspath $(VENV)) JOINEDUP_RUN_DIR=$(abspath $(VAR))/demo scripts/airflow_env.sh airflow standalone

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VAR) .pytest_cache .ruff_cache
