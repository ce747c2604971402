#!/usr/bin/env bash
# Airflow for one laptop, bound to 127.0.0.1 only: `airflow standalone` would open log servers on 0.0.0.0
# (ENVIRONMENT.md), so the parts start one by one with their log servers off. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
AF_VENV=${AF_VENV:-.venv-airflow}
case "$AF_VENV" in /*) ;; *) AF_VENV="$ROOT/$AF_VENV" ;; esac
PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/work/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$PORT"
# Task runners reach the execution API through the base URL; unset, it defaults to localhost:8080 and every
# task on another port fails with "Connection refused" and an empty log.
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$PORT"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
mkdir -p "$AIRFLOW_HOME"
AF="$AF_VENV/bin/airflow"
"$AF" db migrate >/dev/null
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$AF" scheduler --skip-serve-logs & pids+=($!)
"$AF" triggerer --skip-serve-logs & pids+=($!)
"$AF" dag-processor & pids+=($!)
"$AF" api-server -H 127.0.0.1 -p "$PORT" & pids+=($!)
echo "Airflow on http://127.0.0.1:$PORT (home $AIRFLOW_HOME); Ctrl-C stops it"
wait -n
