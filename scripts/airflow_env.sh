#!/usr/bin/env bash
# Run a command (default: `airflow standalone`) in the environment `make airflow` uses: the
# project's venv on PATH, AIRFLOW_HOME under the demo run folder, this checkout's dags, no
# example DAGs, and worker counts sized for a laptop (Airflow's defaults start ~32 LocalExecutor
# workers and 4 api-server workers, ~6 GB). tests/test_make_airflow.py runs this same script.
#
#   scripts/airflow_env.sh                      # the UI on http://localhost:8080
#   scripts/airflow_env.sh airflow dags list    # any airflow command, same environment
#
# Overridable: JOINEDUP_VENV (default .venv), JOINEDUP_RUN_DIR (default var/demo),
# JOINEDUP_AIRFLOW_PORT (default 8080), JOINEDUP_AIRFLOW_PARALLELISM (default 2).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${JOINEDUP_VENV:-$repo/.venv}"
if [ ! -x "$venv/bin/airflow" ]; then
    echo "no airflow in $venv: run 'make demo' (or 'make test') first to build the venv" >&2
    exit 2
fi
run_dir="${JOINEDUP_RUN_DIR:-$repo/var/demo}"
case "$run_dir" in /*) ;; *) run_dir="$repo/$run_dir" ;; esac
port="${JOINEDUP_AIRFLOW_PORT:-8080}"
par="${JOINEDUP_AIRFLOW_PARALLELISM:-2}"

export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export JOINEDUP_RUN_DIR="$run_dir"
export AIRFLOW_HOME="$run_dir/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
# LocalExecutor starts one worker process per parallelism slot; 2 cores need no more.
export AIRFLOW__CORE__PARALLELISM="$par"
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="$par"
export AIRFLOW__API__WORKERS=1
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__HOST="${JOINEDUP_AIRFLOW_HOST:-127.0.0.1}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
export GX_ANALYTICS_ENABLED=false
mkdir -p "$AIRFLOW_HOME"

if [ "$#" -eq 0 ]; then
    set -- airflow standalone
fi
exec "$@"
