# Two commands matter: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VAR    ?= var
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: demo test lint bench clean airflow workspace workspace-assets

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[bridge,hub,dev,spark]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m synthetic_data.demo --out $(VAR)/demo

test: $(STAMP) workspace-assets
	@# Debian packages the tests drive: chromium (report rendering; with chromium-driver the
	@# workspace browser tests), docker-compose (compose file
	@# validation). apt needs its lists on a fresh machine.
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	 command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	 command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	 if [ -n "$$missing" ]; then \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1) \
	   || echo "could not install$$missing: the tests that need them will be skipped"; fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# Two pytest-xdist workers, a test file each at a time, longest files first (the
	@# session's shared runs are built once for both: tests/conftest.py built_once and
	@# SLOW_FIRST). PYTEST_ARGS= runs in one process.
	@# pytest prints the 25 slowest tests (pyproject addopts) and the whole run's duration.
	@echo "$(PY) -m pytest $(PYTEST_ARGS)"; start=$$(date +%s); $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	 echo "make test: pytest took $$(( $$(date +%s) - start )) s wall time"; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The Airflow UI over the demo run folder (make demo first): examples off, 2 task slots, one
# api-server worker. The admin password is printed, and kept in var/demo/airflow.
airflow: $(STAMP)
	JOINEDUP_VENV=$(abspath $(VENV)) JOINEDUP_RUN_DIR=$(abspath $(VAR))/demo scripts/airflow_env.sh airflow standalone

# GOV.UK Frontend, swagger-ui-dist (the API's /docs) and axe-core from the npm registry, pinned
# by workspace/package-lock.json, installed at build time and copied to workspace/static
# (nothing is fetched at run time).
WS_ASSETS := workspace/static/.installed
$(WS_ASSETS): workspace/package.json workspace/package-lock.json workspace/static_src/workspace.css
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq npm >/dev/null 2>&1) \
	 || { echo "needs npm (Debian: apt-get install npm)"; exit 1; }
	npm ci --prefix workspace --no-audit --no-fund --loglevel=error
	rm -rf workspace/static && mkdir -p workspace/static
	cp -R workspace/node_modules/govuk-frontend/dist/govuk/assets/. workspace/static/
	cp workspace/node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.css workspace/static/
	cp workspace/static_src/workspace.css workspace/static/
	mkdir -p workspace/static/swagger-ui
	cd workspace/node_modules/swagger-ui-dist && cp swagger-ui-bundle.js swagger-ui.css \
	  favicon-32x32.png ../../static/swagger-ui/
	@touch $@

workspace-assets: $(WS_ASSETS)

# The practitioner workspace over the demo run (make demo first): http://localhost:8600/
workspace: $(STAMP) $(WS_ASSETS)
	$(PY) -m workspace serve --run $(VAR)/demo --demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VAR) .pytest_cache .ruff_cache
