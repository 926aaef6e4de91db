#!/usr/bin/env bash
# Start the MLflow tracking server for pal: runs in mlflow.db (SQLite) beside this script, the
# artifacts that clients upload through the server in artifacts/ beside it.
#
#   mlflow/serve.sh                         http://127.0.0.1:5000, this machine only
#   mlflow/serve.sh --host 10.0.0.5         an address of a private network the workers share
#   HOST=10.0.0.5 PORT=5001 mlflow/serve.sh
#   mlflow/serve.sh -- --workers 2          arguments after -- go to `mlflow server` as they are
#   ARTIFACTS=s3://bucket/pal/mlflow mlflow/serve.sh --host 10.0.0.5   artifacts in S3
#
# PYTHON picks the interpreter whose mlflow runs (default: the `mlflow` on PATH).
# Never bind to an address reachable from the internet: the server has no authentication.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
host="${HOST:-127.0.0.1}"
port="${PORT:-5000}"
extra=()

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) host="${2:?--host needs an address}"; shift 2 ;;
        --host=*) host="${1#*=}"; shift ;;
        --port) port="${2:?--port needs a number}"; shift 2 ;;
        --port=*) port="${1#*=}"; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "serve.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "serve.sh: PORT must be a number in 1..65535, got '$port'" >&2
    exit 2
fi

if [[ -n "${PYTHON:-}" ]]; then
    mlflow=("$PYTHON" -m mlflow)
elif command -v mlflow >/dev/null 2>&1; then
    mlflow=(mlflow)
else
    echo "serve.sh: no 'mlflow' on PATH; activate pal's virtual environment or set PYTHON" >&2
    exit 2
fi

artifacts="${ARTIFACTS:-$here/artifacts}"
[[ "$artifacts" == *://* ]] || mkdir -p "$artifacts"
# The GenAI job runner (a pool of task consumers) is not needed to track experiments.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

shown="$host"
[[ "$host" == "0.0.0.0" ]] && shown="$(hostname -I 2>/dev/null | awk '{print $1}')"
echo "MLflow server: http://${shown:-$host}:$port"
echo "  runs      sqlite:///$here/mlflow.db"
echo "  artifacts $artifacts"
echo "  clients:  export MLFLOW_TRACKING_URI=http://${shown:-$host}:$port"

exec "${mlflow[@]}" server \
    --host "$host" \
    --port "$port" \
    --backend-store-uri "sqlite:///$here/mlflow.db" \
    --artifacts-destination "$artifacts" \
    --serve-artifacts \
    ${extra[@]+"${extra[@]}"}
