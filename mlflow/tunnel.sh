#!/usr/bin/env bash
# Reach the MLflow UI of a `ray up` cluster: forward 127.0.0.1:PORT on this machine over SSH to
# the MLflow server that cluster.yaml starts on the head's private address (port 5000).
#
#   mlflow/tunnel.sh cluster.yaml            then open http://127.0.0.1:5000 (Ctrl-C to close)
#   mlflow/tunnel.sh cluster.local.yaml 5001
#
# Uses the cluster file's auth.ssh_user and auth.ssh_private_key, and `ray` (on PATH) to find the
# head's public and private addresses.
set -euo pipefail

config="${1:?usage: mlflow/tunnel.sh CLUSTER_YAML [LOCAL_PORT]}"
port="${2:-5000}"
[[ -f "$config" ]] || { echo "tunnel.sh: no cluster file '$config'" >&2; exit 2; }
command -v ray >/dev/null || { echo "tunnel.sh: no 'ray' on PATH; activate pal's venv" >&2; exit 2; }

read -r user key < <(python3 - "$config" <<'PY'
import os, sys, yaml
auth = yaml.safe_load(open(sys.argv[1])).get("auth", {})
print(auth.get("ssh_user", "ubuntu"), os.path.expanduser(auth.get("ssh_private_key", "")) or "-")
PY
)
public="$(ray get-head-ip "$config" 2>/dev/null | tail -n 1)"
private="$(ray exec "$config" "hostname -I | cut -d' ' -f1" 2>/dev/null | tail -n 1)"
[[ -n "$public" && -n "$private" ]] || { echo "tunnel.sh: is the cluster up? (ray up $config)" >&2; exit 1; }

args=(-N -L "127.0.0.1:$port:$private:5000" -o ExitOnForwardFailure=yes)
[[ "$key" != "-" ]] && args+=(-i "$key")
echo "MLflow UI: http://127.0.0.1:$port  (head $public, server $private:5000; Ctrl-C to close)"
exec ssh "${args[@]}" "$user@$public"
